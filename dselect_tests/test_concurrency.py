"""Four shards ingested and embedded at once, in four runs of the multiprocess executor,
while another process reads the store in a loop: no lock error, no duplicate id, no lost row.

Every shard holds the same three ids ("shared-0".."shared-2") with different texts: whichever
shard commits first keeps them, every other shard quarantines them, whatever the timing.
Writers run with lock_timeout_s=20, so a writer stalled longer than that fails its run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dselect_assets.resources import DataPaths, DuckDBStore, EmbedderResource
from dselect_assets.store import attributes

pytestmark = pytest.mark.heavy

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARDS = [f"part-{i}.jsonl" for i in range(4)]
OWN_DOCS, SHARED_IDS = 8, 3
LOCK_TIMEOUT_S = 20
RUN_TIMEOUT_S = 480

WORDS = ("river", "treaty", "engine", "glacier", "harbour", "violin", "orbit", "granite", "meadow",
         "lantern", "archive", "falcon", "copper", "delta", "summit", "canvas")

READER = """
import json, sys, time
from pathlib import Path
from dselect_assets import store
db, stop, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
reads, errors, seen = 0, [], 0
while not stop.exists():
    try:
        with store.connect(db, read_only=True, lock_timeout_s=20) as con:
            seen = max(seen, con.execute("SELECT count(*) FROM documents").fetchone()[0])
        reads += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    time.sleep(0.01)
report.write_text(json.dumps({"reads": reads, "errors": errors, "max_documents_seen": seen}))
"""


def _text(shard: int, j: int) -> str:
    words = [WORDS[(shard * 7 + j * 3 + k) % len(WORDS)] for k in range(12)]
    return f"Document {j} of part {shard}: " + " ".join(words) + "."


def write_shards(corpus: Path) -> None:
    for i, name in enumerate(SHARDS):
        records = [{"id": f"part{i}-{j}", "text": _text(i, j)} for j in range(OWN_DOCS)]
        records += [{"id": f"shared-{k}", "text": f"Shared id {k} as written by part {i}."} for k in range(SHARED_IDS)]
        (corpus / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_four_shards_at_once_beside_a_reader(tmp_path):
    home, corpus, dagster_home = tmp_path / "home", tmp_path / "corpus", tmp_path / "dagster_home"
    for directory in (home, corpus, dagster_home):
        directory.mkdir()
    write_shards(corpus)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    resources = {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb"), lock_timeout_s=LOCK_TIMEOUT_S),
        "embedder": EmbedderResource(max_length=64),
    }
    run_config = tmp_path / "run_config.json"
    run_config.write_text(json.dumps(
        {"resources": {name: {"config": r.model_dump(exclude_defaults=True)} for name, r in resources.items()}}
    ), encoding="utf-8")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("shards", SHARDS)
    db = home / "dselect.duckdb"
    store = DuckDBStore(database=str(db))
    store.query("SELECT 1")  # the schema exists before the reader starts

    env = {k: v for k, v in os.environ.items() if k != "DSELECT_DB"}
    env.update({"DAGSTER_HOME": str(dagster_home), "DSELECT_HOME": str(home), "DSELECT_CORPUS_DIR": str(corpus),
                "DSELECT_DEPLOYMENT": "local", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)})
    stop, report = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop), str(report)], cwd=REPO_ROOT,
                              env=env, start_new_session=True)
    runs = {
        shard: subprocess.Popen(
            [sys.executable, "-m", "dagster", "job", "execute", "-m", "dselect_assets.definitions",
             "-j", "shard_job", "-o", "documents,embeddings",
             "--tags", json.dumps({"dagster/partition": shard}), "-c", str(run_config)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        for shard in SHARDS
    }
    try:
        outputs = {shard: p.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace") for shard, p in runs.items()}
    finally:
        stop.touch()
        for process in [*runs.values(), reader]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for shard, process in runs.items():
        assert process.returncode == 0, f"run of {shard} failed:\n{outputs[shard][-4000:]}"
        assert "StoreLockTimeout" not in outputs[shard]
    seen = json.loads(report.read_text())
    assert seen["errors"] == [], seen["errors"][:3]
    assert seen["reads"] > 0

    # No duplicate id, no lost row: every line of every shard is one document or one quarantined row.
    assert store.query("SELECT doc_id FROM documents GROUP BY doc_id HAVING count(*) > 1") == []
    per_file = OWN_DOCS + SHARED_IDS
    accounted = store.query(
        "SELECT shard, count(*) FROM (SELECT shard, row_number FROM documents"
        " UNION ALL SELECT shard, row_number FROM quarantine) GROUP BY shard ORDER BY shard")
    assert accounted == [(shard, per_file) for shard in SHARDS]
    shared_kept = store.query("SELECT doc_id, count(*) FROM documents WHERE doc_id LIKE 'shared-%' GROUP BY 1")
    assert sorted(shared_kept) == [(f"shared-{k}", 1) for k in range(SHARED_IDS)]
    duplicate_reasons = store.query("SELECT count(*) FROM quarantine WHERE reason LIKE 'duplicate id%'")[0][0]
    assert duplicate_reasons == SHARED_IDS * (len(SHARDS) - 1)
    # Every distinct text has exactly one embedding, written once.
    (producer,) = attributes.producers_on_disk(store.attributes)
    rows, distinct = duckdb.sql("SELECT count(*), count(DISTINCT hash) FROM read_parquet(?)",
                                params=[attributes.producer_glob(store.attributes, producer)]).fetchall()[0]
    n_texts = store.query("SELECT count(DISTINCT content_hash) FROM documents")[0][0]
    assert rows == distinct == n_texts

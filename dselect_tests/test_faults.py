"""kill -9 during ingest, during density and during a selection's export: what was committed
stays whole, and the re-run completes with nothing duplicated or lost. Corrupt files the store
points at fail with the file's name and how to rebuild it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from dselect_assets.assets import corpus, density, scoring, selection
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, EmbedderResource, PerplexityLMResource
from dselect_assets.store import attributes
from dselect_assets.store import selections as selection_store

pytestmark = pytest.mark.heavy

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = ("alpha", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "heath", "iris", "jade", "kelp",
         "loam", "moss", "nectar", "onyx", "pumice", "quartz", "reef", "slate", "tundra")

CHILD = """
import json, sys
import dagster as dg
from dselect_assets.assets import corpus, density, selection
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, EmbedderResource, PerplexityLMResource
home, corpus_dir, asset, partition = sys.argv[1:5]
resources = {"paths": DataPaths(home=home, corpus_dir=corpus_dir),
             "store": DuckDBStore(database=home + "/dselect.duckdb"),
             "embedder": EmbedderResource(max_length=64),
             "judge": AskLLMJudgeResource(), "perplexity_lm": PerplexityLMResource()}
assets = {"documents": corpus.documents, "density": density.density, "selections": selection.selections}
with dg.DagsterInstance.ephemeral() as instance:
    if asset == "documents":
        instance.add_dynamic_partitions("shards", [partition])
    key = selection.selection_partition(partition) if asset == "selections" else partition or None
    dg.materialize([assets[asset]], partition_key=key, instance=instance, resources=resources)
"""


def write_shard(path: Path, n: int, words_per_doc: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(WORDS), size=(n, words_per_doc))
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"{path.stem}-{i}", "text": f"{i} " + " ".join(WORDS[j] for j in picks[i])}))
            out.write("\n")


def make_resources(home: Path, corpus_dir: Path) -> dict:
    return {"paths": DataPaths(home=str(home), corpus_dir=str(corpus_dir)),
            "store": DuckDBStore(database=str(home / "dselect.duckdb")),
            "embedder": EmbedderResource(max_length=64),
            "judge": AskLLMJudgeResource(), "perplexity_lm": PerplexityLMResource()}


def start_child(home: Path, corpus_dir: Path, asset: str, partition: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(corpus_dir), asset, partition],
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(child: subprocess.Popen, condition, timeout_s: float = 300) -> bool:
    """SIGKILL the child's process group as soon as condition() holds; False if it ended first."""
    deadline = time.monotonic() + timeout_s
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if condition():
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
                return True
            time.sleep(0.002)
        return False
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def being_written(directory: Path, committed: Path | None = None):
    """True once a new file (or a temporary one) appears in directory, or `committed` changes."""
    before = {p.name for p in directory.iterdir()} if directory.exists() else set()
    stamp = committed.stat().st_mtime_ns if committed is not None else None

    def condition() -> bool:
        if committed is not None and committed.stat().st_mtime_ns != stamp:
            return True
        return directory.exists() and any(p.name not in before for p in directory.iterdir())

    return condition


def test_kill_while_reingesting_keeps_the_committed_documents(tmp_path, instance):
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    write_shard(corpus_dir / "big.jsonl", n=60_000, words_per_doc=40)
    resources = make_resources(home, corpus_dir)
    instance.add_dynamic_partitions("shards", ["big.jsonl"])
    dg.materialize([corpus.documents], partition_key="big.jsonl", instance=instance, resources=resources)
    store = resources["store"]
    (committed,) = store.query("SELECT documents_file FROM shards")[0]
    committed = Path(committed)

    # The same bytes again (a re-run from the UI): the new file has the committed one's name.
    child = start_child(home, corpus_dir, "documents", "big.jsonl")
    assert kill_when(child, being_written(committed.parent, committed)), "ingest ended before the kill"

    assert pl.read_parquet(committed).height == 60_000, "the kill damaged the committed documents file"
    assert store.query("SELECT count(*) FROM documents") == [(60_000,)]
    dg.materialize([corpus.documents], partition_key="big.jsonl", instance=instance, resources=resources)
    assert store.query("SELECT count(*), count(DISTINCT row_number) FROM documents") == [(60_000, 60_000)]
    assert store.query("SELECT count(*) FROM quarantine") == [(0,)]


def _density_rows(store: DuckDBStore, producer: str) -> list[tuple]:
    return store.query("SELECT content_hash, value FROM scores WHERE producer_id = ? ORDER BY 1", [producer])


def test_density_is_replaced_whole_and_survives_a_kill(tmp_path, instance):
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    shards = [f"s{i}.jsonl" for i in range(4)]
    for i, shard in enumerate(shards):
        write_shard(corpus_dir / shard, n=25, words_per_doc=12, seed=i)
    resources = make_resources(home, corpus_dir)
    instance.add_dynamic_partitions("shards", shards)
    for shard in shards:
        dg.materialize([corpus.documents, scoring.embeddings, density.density_sketch], partition_key=shard,
                       instance=instance, resources=resources)
    dg.materialize([density.density], instance=instance, resources=resources)
    store = resources["store"]
    (producer,) = store.query("SELECT producer_id FROM producers WHERE kind = 'density'")[0]
    baseline = _density_rows(store, producer)
    assert len(baseline) == 100

    # A reader polling through a whole re-run never sees a half-replaced table...
    def count() -> int:
        return store.query("SELECT count(*) FROM scores WHERE producer_id = ?", [producer])[0][0]

    seen_counts = set()
    child = start_child(home, corpus_dir, "density")
    assert not kill_when(child, lambda: seen_counts.add(count()) and False)
    assert child.returncode == 0
    assert seen_counts == {100}
    # ...and a kill as the merged sketch is rewritten (just before the scores are replaced)
    # leaves the previous densities whole.
    merged = next((home / "sketches").rglob("merged.race"))
    child = start_child(home, corpus_dir, "density")
    assert kill_when(child, being_written(merged.parent, merged)), "density ended before the kill"
    assert _density_rows(store, producer) == baseline
    dg.materialize([density.density], instance=instance, resources=resources)
    assert _density_rows(store, producer) == baseline


def test_kill_during_a_selections_export_then_rerun(tmp_path, instance):
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    write_shard(corpus_dir / "big.jsonl", n=40_000, words_per_doc=60)
    resources = make_resources(home, corpus_dir)
    instance.add_dynamic_partitions("shards", ["big.jsonl"])
    dg.materialize([corpus.documents], partition_key="big.jsonl", instance=instance, resources=resources)
    dg.materialize([selection.eval_sets], instance=instance, resources=resources)
    key = "random@0.60"
    export_dir = home / "selections" / key
    export_dir.mkdir(parents=True)

    child = start_child(home, corpus_dir, "selections", key)
    assert kill_when(child, being_written(export_dir)), "the selection ended before the kill"
    store = resources["store"]
    for path in export_dir.glob("*.parquet"):  # a file under its final name is always whole
        pl.read_parquet(path)
    assert store.query("SELECT count(*) FROM selections") == [(0,)]

    result = dg.materialize([selection.selections], partition_key=selection.selection_partition(key),
                            instance=instance, resources=resources)
    assert result.success
    ((path, n_kept, n_considered),) = store.query("SELECT export_path, n_kept, n_considered FROM selections")
    assert pl.read_parquet(path).height == n_kept == round(0.6 * n_considered)
    ((selection_id,),) = store.query("SELECT selection_id FROM selections")
    with store.connect(read_only=True) as con:
        members = pl.read_parquet(selection_store.members_file(con, selection_id))["content_hash"]
    assert members.len() == members.n_unique() == n_kept


def test_corrupt_files_name_themselves_and_how_to_rebuild(tmp_path, instance):
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    write_shard(corpus_dir / "a.jsonl", n=20, words_per_doc=10)
    resources = make_resources(home, corpus_dir)
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    dg.materialize([corpus.documents, scoring.embeddings, density.density_sketch], partition_key="a.jsonl",
                   instance=instance, resources=resources)
    store = resources["store"]

    (sketch,) = store.query("SELECT path FROM artifacts WHERE kind = 'density_sketch'")[0]
    Path(sketch).write_bytes(Path(sketch).read_bytes()[:100])
    with pytest.raises(dg.Failure, match=r"a\.jsonl.*re-materialize density_sketch\[a\.jsonl\]"):
        dg.materialize([density.density], instance=instance, resources=resources)

    (vectors,) = (store.attributes / next(p for p in attributes.producers_on_disk(store.attributes)
                                           if p.startswith("embedding:"))).rglob("*.npy")
    Path(vectors).write_bytes(b"not a numpy file")
    with pytest.raises(Exception, match=rf"{Path(vectors).name}: unreadable embedding file.*re-materialize embeddings"):
        dg.materialize([density.density_sketch], partition_key="a.jsonl", instance=instance, resources=resources)

    (documents_file,) = store.query("SELECT documents_file FROM shards")[0]
    Path(documents_file).write_bytes(b"PAR1 garbage")
    with pytest.raises(Exception, match=r"unreadable documents file.*re-materialize documents\[a\.jsonl\]"):
        dg.materialize([scoring.embeddings], partition_key="a.jsonl", instance=instance, resources=resources)

"""`dselect run` runs a stage's partitions in parallel worker processes, recorded in the instance."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dselect_assets.resources import DuckDBStore

pytestmark = pytest.mark.heavy
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_score_two_shards_at_once(tmp_path):
    home, corpus = tmp_path / "home", tmp_path / "corpus"
    corpus.mkdir()
    for shard in ("a", "b"):
        lines = [json.dumps({"id": f"{shard}{i}", "text": f"Shard {shard}, note {i}: the tide came in at dawn."})
                 for i in range(6)]
        (corpus / f"{shard}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if k not in ("DSELECT_DB", "DAGSTER_HOME")},
           "DSELECT_HOME": str(home), "DSELECT_CORPUS_DIR": str(corpus), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-m", "dselect_assets.cli", "run", "--stage", "shard_job", "--workers", "2"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "dselect: stage shard_job: 2 partition(s)" in out.stdout
    assert "shard_job[a.jsonl]: ok" in out.stdout and "shard_job[b.jsonl]: ok" in out.stdout
    assert re.search(r"dselect: every stage: CPU \d+s over \d+s = \d+\.\d\d cores busy of 2 worker\(s\)", out.stdout)

    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["a.jsonl", "b.jsonl"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        pids = {e.dagster_event.pid for r in runs for e in instance.all_logs(r.run_id)
                if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START}
    assert len(pids) == 2, "each shard ran in its own worker process"
    store = DuckDBStore(database=str(home / "dselect.duckdb"))
    kinds = dict(store.query("SELECT p.kind, count(*) FROM scores s JOIN producers p USING (producer_id) GROUP BY 1"))
    assert kinds == {"ask_llm": 12, "perplexity": 12}


def test_sigterm_stops_the_workers_with_the_cli(tmp_path):
    script = (
        "import os, time\n"
        "from dselect_assets.cli import worker_pool\n"
        "with worker_pool(1) as pool:\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600).result()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    worker = int(proc.stdout.readline())
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + 15
    for _ in range(600):  # the worker is reaped by the time the CLI exits; allow a slow box
        if not Path(f"/proc/{worker}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists(), "a worker outlived the CLI"

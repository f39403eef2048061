"""A scoring run killed with SIGKILL mid-shard resumes without losing or redoing committed chunks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dselect_assets.assets import corpus, scoring
from dselect_tests.pipeline_fixtures import build_source_corpus, materialization_metadata, small_resources, write_slice

pytestmark = pytest.mark.heavy
CHUNK = 2

CHILD = """
import sys
from pathlib import Path
import dagster as dg
from dselect_assets.assets import scoring
from dselect_tests.pipeline_fixtures import small_resources
home, corpus_dir, chunk = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
resources = small_resources(home, corpus_dir)
resources["judge"] = resources["judge"].model_copy(update={"max_doc_tokens": 128})
with dg.DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    dg.materialize([scoring.ask_llm_scores], partition_key="a.jsonl", instance=instance, resources=resources,
                   run_config={"ops": {"ask_llm_scores": {"config": {"chunk_size": chunk}}}})
"""


def committed(resources, kind: str = "ask_llm") -> int:
    return resources["store"].query("SELECT count(*) FROM scores WHERE producer_id LIKE ?", [f"{kind}:%"])[0][0]


def test_sigkill_mid_shard_then_resume(tmp_path, instance):
    src_corpus, _ = build_source_corpus(tmp_path / "source")
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    write_slice(src_corpus / "shard-000.jsonl", corpus_dir / "a.jsonl", 0, 30)
    resources = small_resources(home, corpus_dir)
    resources["judge"] = resources["judge"].model_copy(update={"max_doc_tokens": 128})
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    dg.materialize([corpus.documents], partition_key="a.jsonl", instance=instance, resources=resources)
    n_docs = resources["store"].query("SELECT count(*) FROM contents")[0][0]

    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(corpus_dir), str(CHUNK)],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while committed(resources) < 2 * CHUNK:
            assert child.poll() is None, "the scoring process ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk was committed within 300 s"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    before = committed(resources)
    assert 2 * CHUNK <= before < n_docs, "the kill should land mid-shard"
    assert before % CHUNK == 0, "only whole chunks are ever committed"
    # The judge's pass writes the perplexity filter's numbers chunk by chunk beside its own.
    assert committed(resources, "perplexity") in (before, before + CHUNK)

    resumed = dg.materialize([scoring.ask_llm_scores], partition_key="a.jsonl", instance=instance,
                             resources=resources,
                             run_config={"ops": {"ask_llm_scores": {"config": {"chunk_size": CHUNK}}}})
    meta = materialization_metadata(resumed, "ask_llm_scores")
    assert meta["reused_from_cache"] == before
    assert meta["scored_now"] == n_docs - before
    store = resources["store"]
    for kind in ("ask_llm", "perplexity"):
        assert store.query("SELECT count(*), count(DISTINCT content_hash) FROM scores WHERE producer_id LIKE ?",
                           [f"{kind}:%"]) == [(n_docs, n_docs)]
    assert store.query("SELECT count(*) FROM scores WHERE producer_id LIKE 'ask_llm:%'"
                       " AND (value IS NULL OR value < 0 OR value > 1)") == [(0,)]

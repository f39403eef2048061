"""Every data-quality check passes on good data and fails on the bad data it guards against."""

import numpy as np
import polars as pl

from dselect_assets.assets import checks
from dselect_assets.resources import DuckDBStore
from dselect_assets.store import selections as selection_store


def test_score_range():
    good = np.array([0.1, 0.5, 0.99])
    assert checks.score_range("ask_llm_scores", good, 0, 1).passed
    assert not checks.score_range("ask_llm_scores", np.array([0.1, 1.5]), 0, 1).passed
    assert not checks.score_range("ask_llm_scores", np.array([0.1, np.inf]), 0, 1).passed
    mostly_missing = np.array([0.2, np.nan, np.nan, np.nan])
    result = checks.score_range("ask_llm_scores", mostly_missing, 0, 1)
    assert not result.passed and result.metadata["null_rate"].value == 0.75
    assert checks.score_range("ask_llm_scores", np.array([]), 0, 1).passed  # an all-quarantined shard


def test_embedding_norms_and_dimension():
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(10, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert checks.embedding_shape(unit, 8).passed
    assert not checks.embedding_shape(unit, 16).passed
    scaled = unit.copy()
    scaled[3] *= 2
    result = checks.embedding_shape(scaled, 8)
    assert not result.passed and result.metadata["bad_norms"].value == 1
    broken = unit.copy()
    broken[0, 0] = np.nan
    assert not checks.embedding_shape(broken, 8).passed
    assert checks.embedding_shape(np.empty((0, 0), dtype=np.float32), 8).passed


def test_sketch_count_and_selection_size():
    assert checks.sketch_counts_corpus(100, 100).passed
    assert not checks.sketch_counts_corpus(99, 100).passed
    assert checks.selection_size("random", 0.2, 101, 20).passed
    assert not checks.selection_size("random", 0.2, 101, 21).passed
    assert checks.selection_size("full", 1.0, 101, 101).passed
    assert not checks.selection_size("random", 0.2, 3, 0).passed
    # 10% of 2,925 is 292.5: the samplers round halves up and keep 293, and so must the check.
    assert checks.selection_size("random", 0.1, 2925, 293).passed
    assert not checks.selection_size("random", 0.1, 2925, 292).passed


def test_export_readable(tmp_path):
    path = tmp_path / "export.parquet"
    pl.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}).write_parquet(path)
    assert checks.export_readable(path, 2).passed
    assert not checks.export_readable(path, 3).passed
    path.write_bytes(path.read_bytes()[:20])
    result = checks.export_readable(path, 2)
    assert not result.passed and result.metadata["problem"].value != "none"


def test_no_eval_leak(tmp_path):
    store = DuckDBStore(database=str(tmp_path / "x.duckdb"))
    with store.transaction() as con:
        con.execute("INSERT INTO eval_documents VALUES ('in_distribution', 'h1', 'd1')")
        for selection_id, members in (("clean", ["h2"]), ("leaky", ["h1", "h2"])):
            export = tmp_path / f"{selection_id}.parquet"
            pl.DataFrame({"id": members, "content_hash": members, "text": members}).write_parquet(export)
            selection_store.record_selection(con, {
                "selection_id": selection_id, "selection_key": "random@0.20", "sampler": "random", "rate": 0.2,
                "seed": 0, "config": {}, "producers": {}, "input_version": "input:x", "n_considered": 3,
                "n_kept": len(members), "export_path": str(export), "export_sha256": "x", "run_id": "r"})
    assert checks.no_eval_leak(store, "clean").passed
    result = checks.no_eval_leak(store, "leaky")
    assert not result.passed and result.metadata["leaked_documents"].value == 1


def test_loss_and_perplexity_checks():
    assert checks.loss_decreased([8.0, 7.0, 6.0, 5.0, 4.0]).passed
    assert not checks.loss_decreased([4.0, 5.0, 6.0, 7.0, 8.0]).passed
    assert not checks.loss_decreased([8.0, np.nan]).passed
    assert checks.perplexity_sane([("high_quality", 120.0, 800.0)]).passed
    assert not checks.perplexity_sane([("high_quality", 900.0, 800.0)]).passed
    assert not checks.perplexity_sane([("high_quality", float("nan"), 800.0)]).passed
    assert not checks.perplexity_sane([]).passed


def test_probe_separation_reports_auc_and_flags_a_weak_scorer(tmp_path):
    import json

    from dselect_assets.assets.scoring import probe_separation
    from dselect_assets.core.hashing import content_hash
    from dselect_assets.store import attributes

    probe = tmp_path / "judge_probe.jsonl"
    texts = {f"informative {i}": 1 for i in range(4)} | {f"junk {i}": 0 for i in range(4)}
    probe.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in texts.items()))
    store = DuckDBStore(database=str(tmp_path / "p.duckdb"))
    hashes = [content_hash(text) for text in texts]
    good = np.array([0.9 - 0.01 * i if label else 0.1 + 0.01 * i for i, label in enumerate(texts.values())])
    coin = np.arange(len(texts)) % 2.0
    for producer, values in (("good", good), ("coin", coin)):  # "good" separates perfectly
        attributes.write_chunk(store.attributes, producer, "p.jsonl",
                               attributes.score_table(producer, hashes, values, values))
    strong = probe_separation(store, probe, "good", "value", 1.0)
    assert strong["probe_roc_auc"] == 1.0 and not strong["probe_verdict"].startswith("WEAK")
    assert probe_separation(store, probe, "good", "value", -1.0)["probe_roc_auc"] == 0.0
    weak = probe_separation(store, probe, "coin", "value", 1.0)
    assert weak["probe_roc_auc"] == 0.5 and weak["probe_verdict"].startswith("WEAK")
    assert probe_separation(store, tmp_path / "missing.jsonl", "good", "value", 1.0) == {}

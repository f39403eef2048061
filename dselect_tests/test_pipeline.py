"""End to end on an ephemeral instance: score, re-run from cache, select reproducibly, train,
evaluate, report; then grow the corpus and check only the new shard is scored."""

import json

import dagster as dg
import polars as pl
import pytest

from dselect_assets.assets import corpus, density, selection, training
from dselect_assets.definitions import defs, shard_assets
from dselect_tests.pipeline_fixtures import (
    build_source_corpus,
    copy_eval_set,
    materialization_metadata,
    small_resources,
    write_slice,
)

pytestmark = pytest.mark.heavy
SAMPLERS_TESTED = ["random", "density", "semdedup", "ask_llm_topk", "perplexity_filter", "ask_llm_density"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_source_corpus(tmp_path_factory.mktemp("source"))


def run_shard(instance, resources, shard):
    return dg.materialize(shard_assets, partition_key=shard, instance=instance, resources=resources)


def run_corpus_stage(instance, resources):
    # A larger validation share than the default 5%, so the tiny corpus still has a
    # few thousand held-out tokens to measure perplexity on.
    return dg.materialize(
        [selection.eval_sets, density.density, density.clusters, training.lm_tokenizer_file],
        instance=instance, resources=resources,
        run_config={"ops": {"eval_sets": {"config": {"validation_fraction": 0.15}}}},
    )


def select(instance, resources, key):
    return dg.materialize([selection.selections], partition_key=selection.selection_partition(key), instance=instance,
                          resources=resources)


def count(resources, sql, params=None):
    return resources["store"].query(sql, params)[0][0]


def test_pipeline_end_to_end_and_growth(source, tmp_path, instance):
    src_corpus, src_eval = source
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    resources = small_resources(home, corpus_dir)
    copy_eval_set(src_eval, home)
    write_slice(src_corpus / "shard-000.jsonl", corpus_dir / "a.jsonl", 0, 30)
    write_slice(src_corpus / "shard-001.jsonl", corpus_dir / "b.jsonl", 0, 30)
    instance.add_dynamic_partitions("shards", ["a.jsonl", "b.jsonl"])

    # Scores, embeddings and sketches per shard; a second run computes nothing.
    for shard in ("a.jsonl", "b.jsonl"):
        first = run_shard(instance, resources, shard)
        assert materialization_metadata(first, "ask_llm_scores")["scored_now"] > 0
        # The judge's pass wrote the perplexity filter's numbers: its own asset had nothing left to do.
        perplexity = materialization_metadata(first, "perplexity_scores")
        assert perplexity["scored_now"] == 0 and perplexity["reused_from_cache"] == perplexity["documents"] > 0
    distinct = count(resources, "SELECT count(*) FROM contents")
    assert count(resources, "SELECT count(*) FROM scores s JOIN producers p USING (producer_id) WHERE p.kind='ask_llm'") == distinct
    again = run_shard(instance, resources, "a.jsonl")
    for asset, field in (("ask_llm_scores", "scored_now"), ("perplexity_scores", "scored_now"), ("embeddings", "embedded_now")):
        meta = materialization_metadata(again, asset)
        assert meta[field] == 0 and meta["reused_from_cache"] == meta["documents"] > 0
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in again.get_asset_check_evaluations()}
    assert checks[("ask_llm_scores", "score_range")] and checks[("embeddings", "unit_norm_and_dimension")]

    corpus_run = run_corpus_stage(instance, resources)
    assert materialization_metadata(corpus_run, "density")["documents"] == distinct

    # Every tested sampler honours its rate, holds out eval documents, and reproduces byte for byte.
    exports = {}
    for sampler in SAMPLERS_TESTED:
        key = selection.selection_key(sampler, 0.2)
        meta = materialization_metadata(select(instance, resources, key), "selections")
        held_out = count(resources, "SELECT count(*) FROM eval_documents WHERE eval_set='in_distribution'")
        assert meta["considered"] == distinct - held_out
        assert meta["kept"] == round(0.2 * meta["considered"])
        exports[sampler] = (meta["selection_id"], meta["export_sha256"])
    repeat = materialization_metadata(select(instance, resources, "density@0.20"), "selections")
    assert (repeat["selection_id"], repeat["export_sha256"]) == exports["density"]
    assert len({sha for _, sha in exports.values()}) == len(SAMPLERS_TESTED)
    export = pl.read_parquet(resources["store"].query(
        "SELECT export_path FROM selections WHERE selection_id = ?", [exports["density"][0]])[0][0])
    assert export.columns == ["id", "content_hash", "text", "ask_llm", "perplexity", "density"]
    assert export["text"].null_count() == 0 and export["density"].null_count() == 0
    lineage = json.loads(resources["store"].query(
        "SELECT producer_ids_json FROM selections WHERE selection_id = ?", [exports["ask_llm_density"][0]])[0][0])
    assert set(lineage) == {"ask_llm", "density", "embedding"}  # density names the embeddings it was built on

    # Train on a selection and on full data for the same budget, two seeds each, evaluate, report.
    select(instance, resources, selection.FULL_DATA_KEY)
    budget = 100 * 8 * 128
    train_config = {"checkpoints": {"config": {"token_budget": budget, "batch_size": 8}},
                    "comparison_report": {"config": {"token_budget": budget, "batch_size": 8}}}
    for key in ("random@0.20", selection.FULL_DATA_KEY):
        for seed in ("0", "1"):
            trained = dg.materialize(
                [training.checkpoints, training.eval_metrics],
                partition_key=training.training_partition(key, seed), instance=instance,
                resources=resources, run_config={"ops": {"checkpoints": train_config["checkpoints"]}},
                raise_on_error=False,
            )
            ckpt = materialization_metadata(trained, "checkpoints")
            assert ckpt["tokens_seen"] == budget and ckpt["final_loss"] < ckpt["first_loss"]
            assert ckpt["seed"] == int(seed)
            results = {c.check_name: c.passed for c in trained.get_asset_check_evaluations()}
            assert results["loss_decreased"] is True
            # Many epochs over a 20% sample of a tiny corpus overfit (the check may flag it);
            # one model trained on all of it must beat the unigram baseline.
            if key == selection.FULL_DATA_KEY:
                assert results["perplexity_below_unigram"] is True and trained.success
    epochs = dict(resources["store"].query("SELECT selection_key, max(epochs) FROM checkpoints GROUP BY 1"))
    assert epochs["random@0.20"] > 3 * epochs[selection.FULL_DATA_KEY]
    seeds_differ = resources["store"].query(
        "SELECT count(DISTINCT sha256) FROM checkpoints WHERE selection_key = 'random@0.20'")[0][0]
    assert seeds_differ == 2
    report = materialization_metadata(
        dg.materialize([training.comparison_report], instance=instance, resources=resources,
                       run_config={"ops": {"comparison_report": train_config["comparison_report"]}}),
        "comparison_report")
    assert "random" in report["report"] and "plot_high_quality" in report
    assert report["seeds"] == 2 and report["checkpoints_compared"] == 4 and report["stale_checkpoints_left_out"] == 0
    # A report asked for another training config finds no checkpoint of it: nothing is mixed in.
    other = dg.materialize([training.comparison_report], instance=instance, resources=resources,
                           raise_on_error=False,
                           run_config={"ops": {"comparison_report": {"config": {"token_budget": 2 * budget}}}})
    assert not other.success

    # Growth: a new shard is found by the sensor, and only its documents are scored.
    write_slice(src_corpus / "shard-002.jsonl", corpus_dir / "c.jsonl", 0, 12)
    sensor = defs.resolve_sensor_def("corpus_sensor")
    tick = sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                          cursor=json.dumps({p.name: corpus.shard_run_key(p.name, p)
                                                             for p in corpus_dir.glob("[ab].jsonl")})))
    assert [r.partition_key for r in tick.run_requests] == ["c.jsonl"]
    instance.add_dynamic_partitions("shards", list(tick.dynamic_partitions_requests[0].partition_keys))
    scores_before = count(resources, "SELECT count(*) FROM scores s JOIN producers p USING (producer_id) WHERE p.kind='ask_llm'")
    grown = run_shard(instance, resources, "c.jsonl")
    new_docs = count(resources, "SELECT count(*) FROM contents WHERE shard='c.jsonl'")
    assert materialization_metadata(grown, "ask_llm_scores")["scored_now"] == new_docs > 0
    assert count(resources, "SELECT count(*) FROM scores s JOIN producers p USING (producer_id) WHERE p.kind='ask_llm'") == scores_before + new_docs
    run_corpus_stage(instance, resources)
    regrown = materialization_metadata(select(instance, resources, "density@0.20"), "selections")
    assert regrown["selection_id"] != exports["density"][0]
    assert regrown["considered"] > repeat["considered"]
    assert materialization_metadata(select(instance, resources, "density@0.20"), "selections")["export_sha256"] == regrown["export_sha256"]

"""Scoring assets on bad input: a missing model, a shard whose rows were all quarantined."""

import json

import dagster as dg
import pytest

from dselect_assets.assets import corpus, density, scoring
from dselect_assets.definitions import shard_assets
from dselect_assets.core.hashing import content_hash
from dselect_assets.resources import AskLLMJudgeResource, PerplexityLMResource
from dselect_assets.store import attributes
from dselect_tests.pipeline_fixtures import materialization_metadata, small_resources


def ingest(instance, resources, corpus_dir, name, records):
    (corpus_dir / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    instance.add_dynamic_partitions("shards", [name])
    dg.materialize([corpus.documents], partition_key=name, instance=instance, resources=resources)


@pytest.mark.parametrize("resource_key,resource", [
    ("judge", AskLLMJudgeResource(model_path="/nonexistent/judge-model")),
    ("perplexity_lm", PerplexityLMResource(source="model", model_path="/nonexistent/lm.gguf")),
])
def test_missing_model_fails_with_its_path_and_keeps_earlier_scores(workspace, instance, resource_key, resource):
    home, corpus_dir = workspace
    resources = {**small_resources(home, corpus_dir), resource_key: resource}
    text = "A compiler translates source code."
    ingest(instance, resources, corpus_dir, "a.jsonl", [{"text": text}])
    store = resources["store"]
    attributes.write_chunk(store.attributes, "earlier:producer", "a.jsonl",
                           attributes.score_table("earlier:producer", [content_hash(text)], [0.5], [0.5]))
    asset = scoring.ask_llm_scores if resource_key == "judge" else scoring.perplexity_scores
    result = dg.materialize([asset], partition_key="a.jsonl", instance=instance, resources=resources,
                            raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node(asset.op.name).error.message
    assert "model could not be loaded" in message and "/nonexistent" in message
    assert store.query("SELECT producer_id, value FROM scores") == [("earlier:producer", 0.5)]
    assert attributes.producers_on_disk(store.attributes) == ["earlier:producer"]


@pytest.mark.heavy
def test_shard_with_zero_documents_scores_nothing_and_passes(workspace, instance):
    home, corpus_dir = workspace
    resources = small_resources(home, corpus_dir)
    ingest(instance, resources, corpus_dir, "empty.jsonl", [{"text": "  "}, {"id": 3}])
    result = dg.materialize(shard_assets[1:], partition_key="empty.jsonl", instance=instance, resources=resources)
    assert result.success
    for asset in ("embeddings", "ask_llm_scores", "perplexity_scores"):
        assert materialization_metadata(result, asset)["documents"] == 0
    assert materialization_metadata(result, "density_sketch")["documents_sketched"] == 0
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert density.first_occurrences(resources["store"], "empty.jsonl").to_pylist() == []

"""Dagster's "unsynced" view is true: a score asset goes stale exactly when its shard's content changes.

One shard, `documents` + `embeddings` (the cheapest real scorer) + `perplexity_scores` (the shared
body of the LM scorers, with a small window) on an ephemeral instance; the stale status is read with
the resolver the Dagster UI uses, over the project's own asset graph.
"""

import json

import dagster as dg
import pytest
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleCauseCategory, StaleStatus
from dagster._time import get_current_datetime

from dselect_assets.assets import corpus, scoring, training
from dselect_assets.definitions import defs
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, EmbedderResource, PerplexityLMResource

SHARD = "a.jsonl"
DOCUMENTS = dg.AssetKey("documents")
EMBEDDINGS = dg.AssetKey("embeddings")
PERPLEXITY = dg.AssetKey("perplexity_scores")
SCORES = {EMBEDDINGS: "embedded_now", PERPLEXITY: "scored_now"}  # asset -> metadata: computed this run
TEXTS = [
    "The Danube rises in the Black Forest and flows east through ten countries to the Black Sea.",
    "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
    "A compiler translates source code into machine code that a processor can run.",
    "The heart pumps blood through arteries, capillaries and veins around the body.",
    "Glaciers carve U-shaped valleys as they slowly grind their way downhill.",
]


def write_shard(path, texts):
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")


class Shard:
    def __init__(self, instance, resources):
        self.instance, self.resources = instance, resources

    def materialize(self, *keys: dg.AssetKey) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [corpus.documents, scoring.embeddings, scoring.perplexity_scores], selection=list(keys),
            partition_key=SHARD,
            instance=self.instance, resources=self.resources,
        )

    def resolver(self) -> CachingStaleStatusResolver:
        """A fresh resolver (it caches), as the webserver builds one per request."""
        graph = defs.resolve_asset_graph()
        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
            instance=self.instance, asset_graph=graph,
        )
        return CachingStaleStatusResolver(self.instance, graph, loading_context=view)

    def status(self, key: dg.AssetKey) -> StaleStatus:
        return self.resolver().get_status(key, SHARD)

    def data_version(self, key: dg.AssetKey) -> str:
        return self.resolver().get_current_data_version(key, SHARD).value


@pytest.fixture
def shard(workspace, instance):
    home, corpus_dir = workspace
    write_shard(corpus_dir / SHARD, TEXTS)
    instance.add_dynamic_partitions("shards", [SHARD])
    return Shard(instance, {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus_dir)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
        "embedder": EmbedderResource(max_length=64),
        "judge": AskLLMJudgeResource(max_doc_tokens=48),
        "perplexity_lm": PerplexityLMResource(max_tokens=32, batch_size=8),
    })


def test_score_assets_are_unsynced_exactly_when_their_shard_text_changes(shard, workspace):
    _, corpus_dir = workspace
    shard.materialize(DOCUMENTS, *SCORES)
    assert all(shard.status(key) == StaleStatus.FRESH for key in SCORES)
    first_documents = shard.data_version(DOCUMENTS)
    first_scores = {key: shard.data_version(key) for key in SCORES}

    # Same bytes ingested again: a new materialization of documents, but the same data.
    shard.materialize(DOCUMENTS)
    assert shard.data_version(DOCUMENTS) == first_documents
    assert all(shard.status(key) == StaleStatus.FRESH for key in SCORES)

    # One document's text changes; the shard keeps its document count.
    changed = list(TEXTS)
    changed[2] = "A compiler turns a program's source code into instructions a processor executes."
    write_shard(corpus_dir / SHARD, changed)
    ingested = shard.materialize(DOCUMENTS)
    (event,) = ingested.asset_materializations_for_node("documents")
    assert event.metadata["documents"].value == len(TEXTS)
    assert shard.data_version(DOCUMENTS) != first_documents
    resolver = shard.resolver()
    for key in SCORES:
        assert resolver.get_status(key, SHARD) == StaleStatus.STALE, key
        causes = resolver.get_stale_causes(key, SHARD)
        assert [(c.category, c.dependency.asset_key) for c in causes] == [(StaleCauseCategory.DATA, DOCUMENTS)]

    # Re-scored: only the changed text is computed, the assets are in sync again, and their own
    # data versions (what the assets downstream compare) have changed at equal count.
    rescored = shard.materialize(*SCORES)
    for key, computed_now in SCORES.items():
        (event,) = rescored.asset_materializations_for_node(key.to_user_string())
        assert event.metadata[computed_now].value == 1, key
        assert event.metadata["documents"].value == len(TEXTS)
        assert shard.status(key) == StaleStatus.FRESH, key
        assert shard.data_version(key) != first_scores[key], key

    # Back to the original text: documents and scores name the data they held first.
    write_shard(corpus_dir / SHARD, TEXTS)
    shard.materialize(DOCUMENTS)
    assert shard.data_version(DOCUMENTS) == first_documents
    assert all(shard.status(key) == StaleStatus.STALE for key in SCORES)
    shard.materialize(*SCORES)
    assert {key: shard.data_version(key) for key in SCORES} == first_scores
    assert all(shard.status(key) == StaleStatus.FRESH for key in SCORES)


def test_assets_whose_code_changes_results_declare_a_code_version():
    graph = defs.resolve_asset_graph()
    for asset in (scoring.embeddings, scoring.ask_llm_scores, scoring.perplexity_scores, training.lm_tokenizer_file,
                  training.checkpoints, training.eval_metrics, training.comparison_report):
        assert graph.get(asset.key).code_version, asset.key.to_user_string()

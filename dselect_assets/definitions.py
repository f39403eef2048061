"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from dselect_assets.assets import corpus, scoring
from dselect_assets.resources import (
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)

shard_assets = [corpus.documents, scoring.embeddings, scoring.ask_llm_scores, scoring.perplexity_scores]

shard_job = dg.define_asset_job(
    "shard_job",
    selection=dg.AssetSelection.assets(*shard_assets),
    description="Everything computed per corpus shard: ingest, embed, score, sketch.",
)


@dataclass(frozen=True)
class PipelineStage:
    """One job of the end-to-end run and the partitions it runs over (None: unpartitioned)."""

    job_name: str
    partition_keys: Callable[[list[str]], list[str | None]]


PIPELINE_STAGES = [
    PipelineStage("shard_job", lambda shard_keys: list(shard_keys)),
]

defs = dg.Definitions(
    assets=[*shard_assets],
    jobs=[shard_job],
    sensors=[corpus.build_corpus_sensor(shard_job)],
    resources={
        "paths": DataPaths(),
        "store": DuckDBStore(),
        "embedder": EmbedderResource(),
        "judge": AskLLMJudgeResource(),
        "perplexity_lm": PerplexityLMResource(),
    },
)

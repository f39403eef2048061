"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from dselect_assets.assets import corpus, density, distill, exports, scoring, selection, training
from dselect_assets.deployments import current_deployment, executor_for
from dselect_assets.resources import (
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)

shard_assets = [
    corpus.documents,
    scoring.embeddings,
    scoring.ask_llm_scores,
    scoring.perplexity_scores,
    density.density_sketch,
]
corpus_assets = [selection.eval_sets, density.density, density.clusters, training.lm_tokenizer_file]

shard_job = dg.define_asset_job(
    "shard_job",
    selection=dg.AssetSelection.assets(*shard_assets),
    description="Everything computed per corpus shard: ingest, embed, score, sketch.",
)
corpus_job = dg.define_asset_job(
    "corpus_job",
    selection=dg.AssetSelection.assets(*corpus_assets),
    description="Corpus-wide signals: held-out eval sets, merged density, clusters, LM tokenizer.",
)
selection_job = dg.define_asset_job(
    "selection_job",
    selection=dg.AssetSelection.assets(selection.selections),
    description="One selection per (sampler, rate) partition.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(training.checkpoints, training.eval_metrics),
    description="Train a tiny LM on a selection and evaluate it on the held-out sets.",
)
report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.assets(training.comparison_report),
    description="Compare every trained selection against random and the full data.",
)



@dg.schedule(
    job=selection_job,
    cron_schedule=os.environ.get("DSELECT_RESELECT_CRON", "0 3 * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-select every (sampler, rate) over the current corpus; cron from DSELECT_RESELECT_CRON.",
)
def reselect_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    return [
        dg.RunRequest(run_key=f"{key}:{tick}", partition_key=key)
        for key in selection.selection_partitions.get_partition_keys()
    ]


@dataclass(frozen=True)
class PipelineStage:
    """One job of the end-to-end run and the partitions it runs over ([None]: unpartitioned)."""

    job_name: str
    partition_keys: Callable[[list[str]], list[str | None]]


# Distilled Ask-LLM (assets/distill.py): the probe is fit once every shard is embedded, then
# scores each shard from its embeddings alone; a shard added later needs only distilled_job.
probe_job = dg.define_asset_job(
    "probe_job",
    selection=dg.AssetSelection.assets(distill.ask_llm_probe),
    description="Judge a stratified sample, fit the distilled Ask-LLM probe on its embeddings, measure it.",
)
distilled_job = dg.define_asset_job(
    "distilled_job",
    selection=dg.AssetSelection.assets(distill.ask_llm_distilled_scores),
    description="Distilled Ask-LLM scores of one shard from its embeddings (no judge run).",
)

PIPELINE_STAGES = [
    PipelineStage("shard_job", lambda shard_keys: list(shard_keys)),
    PipelineStage("corpus_job", lambda _: [None]),
    PipelineStage("probe_job", lambda _: [None]),
    PipelineStage("distilled_job", lambda shard_keys: list(shard_keys)),
    PipelineStage("selection_job", lambda _: selection.selection_partitions.get_partition_keys()),
    PipelineStage("training_job", lambda _: training.DEFAULT_TRAINING_KEYS),
    PipelineStage("report_job", lambda _: [None]),
]

defs = dg.Definitions(
    assets=[*shard_assets, *corpus_assets, selection.selections, training.checkpoints,
            training.eval_metrics, training.comparison_report, exports.selection_exports,
            distill.ask_llm_probe, distill.ask_llm_distilled_scores],
    jobs=[shard_job, corpus_job, selection_job, training_job, report_job, probe_job, distilled_job],
    sensors=[corpus.build_corpus_sensor(shard_job)],
    schedules=[reselect_schedule],
    executor=executor_for(current_deployment()),
    resources={
        "paths": DataPaths(),
        "store": DuckDBStore(),
        "embedder": EmbedderResource(),
        "judge": AskLLMJudgeResource(),
        "perplexity_lm": PerplexityLMResource(),
    },
)

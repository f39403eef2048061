"""The one Definitions object: assets, checks, jobs, sensors, schedules and resources."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from dselect_assets.assets import (
    corpus,
    density,
    distill,
    exports,
    paper_scores,
    scoring,
    selection,
    tiny_lm_scores,
    training,
)
from dselect_assets.core.selection import paper
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


# What the re-selection schedule keeps current: every default sampler at every rate, and the full data.
DEFAULT_SELECTION_KEYS = [selection.selection_key(s, r) for s in selection.DEFAULT_SAMPLERS
                          for r in selection.DEFAULT_RATES] + [selection.FULL_DATA_KEY]
# What `dselect run` selects: every default sampler at the rates it trains, and the full data.
# The other rates are one click (or the schedule) away; selecting all 56 cells cost the
# newcomer's run about 80 s of its 15-minute budget for selections nothing trains on.
RUN_SELECTION_KEYS = [selection.selection_key(s, r) for s in selection.DEFAULT_SAMPLERS
                      for r in training.TRAINING_RATES] + [selection.FULL_DATA_KEY]


@dg.schedule(
    job=selection_job,
    cron_schedule=os.environ.get("DSELECT_RESELECT_CRON", "0 3 * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-select every default (sampler, rate) over the current corpus; cron from DSELECT_RESELECT_CRON.",
)
def reselect_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    return [
        dg.RunRequest(run_key=f"{key}:{tick}", partition_key=selection.selection_partition(key))
        for key in DEFAULT_SELECTION_KEYS
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
# The paper profile's extra scores: one job per stand-in model, so a model that is not
# installed is skipped alone; the tiny-LM checkpoints are trained once, then score each shard.
paper_score_jobs = {
    name: dg.define_asset_job(f"scores_{name}_job", selection=dg.AssetSelection.assets(asset),
                              description=f"{asset.key.to_user_string()} for every shard.")
    for name, asset in paper_scores.SCORE_ASSETS.items()
}
tiny_lm_steps_job = dg.define_asset_job(
    "tiny_lm_steps_job",
    selection=dg.AssetSelection.assets(tiny_lm_scores.tiny_lm_step_checkpoints),
    description="Train the tiny LM on the full data, keeping its weights at the paper's checkpoint shares.",
)
tiny_lm_scores_job = dg.define_asset_job(
    "tiny_lm_scores_job",
    selection=dg.AssetSelection.assets(*tiny_lm_scores.SCORE_ASSETS.values()),
    description="Perplexity of one shard under each tiny-LM checkpoint.",
)


def _fixed(keys: list) -> Callable[[list[str]], list]:
    return lambda _: list(keys)


def _every_shard(shard_keys: list[str]) -> list[str]:
    return list(shard_keys)


@dataclass(frozen=True)
class Plan:
    """The stages of one `dselect run` profile, and the configurations it leaves out, with why."""

    stages: list[PipelineStage]
    skipped: list[str]


def default_plan() -> Plan:
    """Every default sampler at the trained rate (20%); trained: TRAINED_SAMPLERS and the full data,
    3 seeds each."""
    return Plan([
        PipelineStage("shard_job", _every_shard),
        PipelineStage("corpus_job", _fixed([None])),
        PipelineStage("probe_job", _fixed([None])),
        PipelineStage("distilled_job", _every_shard),
        PipelineStage("selection_job", _fixed([selection.selection_partition(k) for k in RUN_SELECTION_KEYS])),
        PipelineStage("training_job", _fixed(training.DEFAULT_TRAINING_KEYS)),
        PipelineStage("report_job", _fixed([None])),
    ], [])


def paper_plan() -> Plan:
    """The paper's 19 configurations, as the stand-ins that can run here, at the paper's five rates,
    each trained with every seed, beside the full data."""
    skipped, runnable = [], []
    for stand_in in paper.STAND_INS:
        reason = paper.unavailable_reason(stand_in.name)
        (skipped if reason else runnable).append(reason or stand_in)
    names = {s.name for s in runnable}
    keys = [selection.selection_key(s.name, r) for s in runnable for r in selection.DEFAULT_RATES]
    keys.append(selection.FULL_DATA_KEY)
    stages = [
        PipelineStage("shard_job", _every_shard),
        PipelineStage("corpus_job", _fixed([None])),
        *(PipelineStage(job.name, _every_shard) for name, job in paper_score_jobs.items() if name in names),
    ]
    if names & set(tiny_lm_scores.SCORE_ASSETS):
        stages += [PipelineStage(tiny_lm_steps_job.name, _fixed([None])),
                   PipelineStage(tiny_lm_scores_job.name, _every_shard)]
    stages += [
        PipelineStage("selection_job", _fixed([selection.selection_partition(k) for k in keys])),
        PipelineStage("training_job", _fixed(training.training_keys(keys))),
        PipelineStage("report_job", _fixed([None])),
    ]
    return Plan(stages, skipped)


PROFILES: dict[str, Callable[[], Plan]] = {"default": default_plan, "paper": paper_plan}

defs = dg.Definitions(
    assets=[*shard_assets, *corpus_assets, selection.selections, training.checkpoints,
            training.eval_metrics, training.comparison_report, exports.selection_exports,
            distill.ask_llm_probe, distill.ask_llm_distilled_scores, *paper_scores.SCORE_ASSETS.values(),
            tiny_lm_scores.tiny_lm_step_checkpoints, *tiny_lm_scores.SCORE_ASSETS.values()],
    jobs=[shard_job, corpus_job, selection_job, training_job, report_job, probe_job, distilled_job,
          *paper_score_jobs.values(), tiny_lm_steps_job, tiny_lm_scores_job],
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

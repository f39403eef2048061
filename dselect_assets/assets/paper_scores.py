"""Score producers for the paper's stand-ins that read a model other than the configured ones.

One shard-partitioned asset per (signal, model) of core/selection/paper.py: the larger Ask-LLM judges
and the other perplexity LMs score through the same shared body as `ask_llm_scores` and
`perplexity_scores`, with a resource built for their model, and register under that
resource's name, so a selection of the stand-in finds its scores by name (never "the newest").
The tiny-LM checkpoints have their own module (assets/tiny_lm_scores.py).
"""

import dataclasses

import dagster as dg

from dselect_assets.assets import checks, scoring
from dselect_assets.assets.common import shards
from dselect_assets.core.scoring import models
from dselect_assets.core.selection import paper
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, PerplexityLMResource

_RANGES = {"ask_llm": (0.0, 1.0), "perplexity": (0.0, 30.0)}
_RANGE_TEXT = {"ask_llm": "P(yes) in [0, 1]", "perplexity": "mean NLL in [0, 30] nats"}


def stand_in_resource(stand_in: paper.StandIn) -> AskLLMJudgeResource | PerplexityLMResource:
    """The resource that scores like `stand_in`'s model; dg.Failure saying how to install it when absent."""
    try:
        spec = paper.installed_model_spec(stand_in)
    except models.ModelLoadError as exc:
        raise dg.Failure(f"{stand_in.name} (stand-in for {'; '.join(stand_in.paper)}): {exc}") from exc
    if stand_in.signal == "ask_llm":
        return AskLLMJudgeResource(model_path=str(spec.weights_path))
    return PerplexityLMResource(source="model", model_path=str(spec.weights_path))


def stand_in_sources(sampler: str, sources):
    """`sources` (selection.ScoreSources) with the scorer a paper stand-in reads in place of the
    configured one; unchanged for every other sampler."""
    stand_in = paper.STAND_IN_BY_NAME.get(sampler)
    if stand_in is None or not stand_in.model:
        return sources
    if stand_in.model == paper.TINY_LM:
        return dataclasses.replace(sources, perplexity=paper.tiny_lm_resource(stand_in.fraction))
    key = scoring.resource_key(stand_in.signal, stand_in_resource(stand_in))
    return dataclasses.replace(sources, **{stand_in.signal: key})


def asset_name(stand_in: paper.StandIn) -> str:
    return f"{stand_in.signal}_scores_{stand_in.name.removeprefix(stand_in.signal + '_')}"


def _scores_asset(stand_in: paper.StandIn) -> dg.AssetsDefinition:
    name = asset_name(stand_in)

    @dg.asset(
        name=name,
        partitions_def=shards,
        deps=["documents"],
        group_name="paper_scores",
        code_version=scoring.SCORING_VERSION,
        kinds={"pytorch", "duckdb"},
        check_specs=[checks.spec("score_range", name, f"{_RANGE_TEXT[stand_in.signal]}, at most 5% unscorable")],
        metadata={"stand_in": stand_in.stand_in, "paper_configurations": ", ".join(stand_in.paper)},
        description=f"{stand_in.signal} scores from {stand_in.stand_in}, for {stand_in.name} "
        f"(stand-in for {'; '.join(stand_in.paper)}).",
    )
    def scores(
        context: dg.AssetExecutionContext, config: scoring.ChunkConfig, store: DuckDBStore, paths: DataPaths
    ) -> dg.MaterializeResult:
        resource = stand_in_resource(stand_in)
        scorer = scoring.load_model(resource)
        probe = ("value_norm", 1.0) if stand_in.signal == "ask_llm" else ("value", -1.0)
        return scoring._score_shard(
            context, store, paths, stand_in.signal, scorer, scorer.score, config.chunk_size,
            {**config.model_dump(), **resource.model_dump()}, _RANGES[stand_in.signal], *probe,
            resource_as=scoring.resource_key(stand_in.signal, resource),
        )

    return scores


# Keyed by stand-in name; the tiny-LM checkpoints are scored in assets/tiny_lm_scores.py.
SCORE_ASSETS: dict[str, dg.AssetsDefinition] = {
    s.name: _scores_asset(s) for s in paper.extra_scorers() if s.model != paper.TINY_LM
}

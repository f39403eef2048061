"""The perplexity filter over intermediate checkpoints of dselect's own tiny LM.

`tiny_lm_step_checkpoints` trains the LM the full-data selection trains (same training
config, tokenizer, documents in content-hash order, seed 0) and keeps its weights after each
share of core/selection/paper.CHECKPOINT_FRACTIONS of the run; one shard-partitioned score asset per
share then scores documents with those weights, through the shared score body, registered
under paper.tiny_lm_resource(share) for the selections of that stand-in.
"""

import dagster as dg

from dselect_assets.assets import checks, scoring
from dselect_assets.assets.common import CATALOGUE_POOL, record_run, register_artifact, shards
from dselect_assets.assets.shard_reader import texts_for
from dselect_assets.assets.training import TrainingConfig, current_tokenizer, selectable_hashes
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.lm import checkpoint_lm, lm_tokenizer
from dselect_assets.core.selection import paper
from dselect_assets.resources import DataPaths, DuckDBStore

SEED = 0
STAND_INS = [s for s in paper.STAND_INS if s.model == paper.TINY_LM]


def step_run(store: DuckDBStore, paths: DataPaths, config: TrainingConfig):
    """(run id, output directory, tokenizer path, tokenizer sha256, selectable hashes) of the
    checkpoint run that this config, the current tokenizer and the current corpus determine."""
    tok_path, tok_sha = current_tokenizer(store)
    hashes = selectable_hashes(store)
    # The id names the documents by a digest of their JSON list, as recorded since these runs
    # began: another digest would retrain every stored run. Training reads every text anyway.
    run_id = make_producer_id("tiny_lm_steps", input_version=make_producer_id("input", hashes=hashes.to_pylist()),
                              config=config.model_dump(), seed=SEED, tokenizer=tok_sha,
                              fractions=list(paper.CHECKPOINT_FRACTIONS), code=checkpoint_lm.CODE_VERSION)
    return run_id, paths.dir("checkpoints", run_id.replace(":", "-")), tok_path, tok_sha, hashes


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["lm_tokenizer_file", "eval_sets"],
    group_name="paper_scores",
    code_version=checkpoint_lm.CODE_VERSION,
    kinds={"pytorch", "safetensors"},
    description="dselect's tiny LM trained on the full data, its weights kept after "
    + ", ".join(f"{f:.0%}" for f in paper.CHECKPOINT_FRACTIONS)
    + " of its run (the paper's intermediate T5-Large checkpoints, scaled down).",
)
def tiny_lm_step_checkpoints(
    context: dg.AssetExecutionContext, config: TrainingConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    run_id, out_dir, tok_path, tok_sha, hashes = step_run(store, paths, config)
    tokenizer = lm_tokenizer.load_tokenizer(tok_path)
    texts = texts_for(store, hashes).sort("content_hash")["text"].to_list()
    train_config = config.train_config(tokenizer.get_vocab_size())
    dirs = checkpoint_lm.train_with_checkpoints(
        lm_tokenizer.encode_documents(tokenizer, texts), train_config, out_dir, SEED, paper.CHECKPOINT_FRACTIONS)
    steps = checkpoint_lm.checkpoint_steps(train_config, paper.CHECKPOINT_FRACTIONS)
    with store.transaction() as con:
        for fraction, model_dir in zip(paper.CHECKPOINT_FRACTIONS, dirs):
            register_artifact(con, model_dir / "model.safetensors", "tiny_lm_step_checkpoint", context.run.run_id,
                              run_id, f"{fraction:.2f}")
        record_run(con, context, config.model_dump(), run_id, outputs={"steps": steps})
    return dg.MaterializeResult(
        metadata={
            "run_id": run_id,
            "documents": len(texts),
            "steps": dg.MetadataValue.json({f"{f:.0%}": s for f, s in zip(paper.CHECKPOINT_FRACTIONS, steps)}),
            "of_total_steps": train_config.total_steps,
            "tokenizer": dg.MetadataValue.path(str(tok_path)),
            "directory": dg.MetadataValue.path(str(out_dir)),
        },
        data_version=dg.DataVersion(run_id),
    )


def _scores_asset(stand_in: paper.StandIn) -> dg.AssetsDefinition:
    name = f"perplexity_scores_tiny_lm_{round(stand_in.fraction * 100):02d}pct"

    @dg.asset(
        name=name,
        partitions_def=shards,
        deps=["documents", dg.AssetDep("tiny_lm_step_checkpoints")],
        group_name="paper_scores",
        code_version=scoring.SCORING_VERSION,
        kinds={"pytorch", "duckdb"},
        check_specs=[checks.spec("score_range", name, "mean NLL in [0, 30] nats, at most 5% unscorable")],
        metadata={"stand_in": stand_in.stand_in, "paper_configurations": ", ".join(stand_in.paper)},
        description=f"Mean token NLL under {stand_in.stand_in}, for {stand_in.name} "
        f"(stand-in for {'; '.join(stand_in.paper)}).",
    )
    def scores(
        context: dg.AssetExecutionContext, config: TrainingConfig, store: DuckDBStore, paths: DataPaths
    ) -> dg.MaterializeResult:
        run_id, out_dir, tok_path, tok_sha, _ = step_run(store, paths, config)
        tokenizer = lm_tokenizer.load_tokenizer(tok_path)
        steps = checkpoint_lm.checkpoint_steps(config.train_config(tokenizer.get_vocab_size()),
                                               paper.CHECKPOINT_FRACTIONS)
        step = steps[paper.CHECKPOINT_FRACTIONS.index(stand_in.fraction)]
        model_dir = checkpoint_lm.step_dir(out_dir, step)
        if not (model_dir / "model.safetensors").is_file():
            raise dg.Failure(f"no tiny-LM checkpoint at step {step} for {run_id} ({model_dir}); "
                             "materialize tiny_lm_step_checkpoints with the same training config first")
        scorer = checkpoint_lm.CheckpointPerplexityScorer(
            model_dir, tokenizer, tok_sha, f"{paper.TINY_LM}@{stand_in.fraction:.2f}")
        return scoring._score_shard(
            context, store, paths, "perplexity", scorer, scorer.score, 64,
            {**config.model_dump(), "checkpoint_run": run_id, "step": step}, (0.0, 30.0), "value", -1.0,
            resource_as=paper.tiny_lm_resource(stand_in.fraction),
        )

    return scores


SCORE_ASSETS: dict[str, dg.AssetsDefinition] = {s.name: _scores_asset(s) for s in STAND_INS}

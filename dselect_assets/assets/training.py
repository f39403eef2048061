"""Train a tiny LM on each selection for a fixed token budget, evaluate it, compare samplers.

The budget is the same for every selection, so a 20% sample is seen for about
five times as many epochs as the full data: the paper's setting, scaled down.
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa

from dselect_assets.assets import checks
from dselect_assets.assets.common import CATALOGUE_POOL, progress_log, record_run, register_artifact
from dselect_assets.assets.plots import png_markdown
from dselect_assets.assets.scoring import perplexity_key, resource_key
from dselect_assets.assets.selection import (
    DEFAULT_SAMPLERS,
    FULL_DATA_KEY,
    RATE_VALUES,
    parse_selection_key,
    sampler_dimension,
    selection_key,
)
from dselect_assets.assets.shard_reader import texts_for
from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.lm import lm_tokenizer, report, train
from dselect_assets.core.lm.evaluate import perplexity, unigram_perplexity
from dselect_assets.core.lm.tiny_lm import GPTConfig
from dselect_assets.core.scoring.models import cpu_bf16_supported
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, PerplexityLMResource
from dselect_assets.store import selections as selection_store
from dselect_assets.store import training as training_store

# What the default run trains: the paper's headline comparison at 20%, every configuration
# with several seeds so that a difference can be told from seed noise.
TRAINED_SAMPLERS = [s for s in ("random", "density", "ask_llm_topk", "ask_llm_distilled", "perplexity_filter",
                                "ask_llm_density") if s in DEFAULT_SAMPLERS]
TRAINING_RATES = [0.2]
TRAINING_SEEDS = ["0", "1", "2"]
# Bump when a change to this module or to the training/eval code changes the results.
TRAINING_VERSION = "4"


def run_key(rate: float, seed: int | str) -> str:
    return f"{rate:.2f}@seed{seed}"


# Dagster allows two dimensions, so a checkpoint is (sampler, rate x seed): the sampler
# dimension is the selections' own and "run" names the rate and the seed. Each checkpoint then
# maps onto exactly its selection (same sampler, its run's rate), a mapping Dagster tracks.
# Any selection can be trained from the UI; `dselect run` trains those of its profile.
training_partitions = dg.MultiPartitionsDefinition({
    "sampler": sampler_dimension,
    "run": dg.StaticPartitionsDefinition([run_key(r, s) for r in RATE_VALUES for s in TRAINING_SEEDS]),
})
with warnings.catch_warnings():  # MultiPartitionMapping is marked beta in Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    its_selection = dg.MultiPartitionMapping({
        "sampler": dg.DimensionPartitionMapping("sampler", dg.IdentityPartitionMapping()),
        "rate": dg.DimensionPartitionMapping("run", dg.StaticPartitionMapping(
            {f"{r:.2f}": [run_key(r, s) for s in TRAINING_SEEDS] for r in RATE_VALUES})),
    })


def training_partition(key: str, seed: int | str) -> dg.MultiPartitionKey:
    """The checkpoint partition of (selection key, seed)."""
    sampler, rate = parse_selection_key(key)
    return dg.MultiPartitionKey({"sampler": sampler, "run": run_key(rate, seed)})


def training_keys(selection_keys: list[str]) -> list[dg.MultiPartitionKey]:
    return [training_partition(key, seed) for key in selection_keys for seed in TRAINING_SEEDS]


DEFAULT_TRAINING_KEYS = training_keys(
    [selection_key(s, r) for s in TRAINED_SAMPLERS for r in TRAINING_RATES] + [FULL_DATA_KEY])


def training_key(context: dg.AssetExecutionContext) -> tuple[str, int]:
    """(selection key, seed) of a checkpoint partition."""
    keys = context.partition_key.keys_by_dimension
    rate, seed = keys["run"].split("@seed")
    return selection_key(keys["sampler"], float(rate)), int(seed)


def selectable_hashes(store: DuckDBStore) -> pa.Array:
    """Every document a selection may keep (the eval sets held out), sorted by content hash."""
    with store.connect(read_only=True) as con:
        return selection_store.eligible_hashes(con)


class TokenizerConfig(dg.Config):
    vocab_size: int = lm_tokenizer.DEFAULT_VOCAB_SIZE


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["eval_sets"],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"huggingface"},
    description="Byte-level BPE tokenizer trained once on every selectable document (eval sets excluded).",
)
def lm_tokenizer_file(
    context: dg.AssetExecutionContext, config: TokenizerConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    hashes = selectable_hashes(store)
    texts = texts_for(store, hashes)["text"].to_list()
    tokenizer = lm_tokenizer.train_tokenizer(texts, vocab_size=config.vocab_size)
    # Content-addressed, never overwritten: a checkpoint keeps pointing at the tokenizer it used.
    staged = lm_tokenizer.save_tokenizer(tokenizer, paths.dir("models") / f".tokenizer.{context.run.run_id}.json")
    digest = file_sha256(staged)
    out_file = staged.replace(staged.with_name(f"tokenizer-{digest[:16]}.json"))
    with store.transaction() as con:
        register_artifact(con, out_file, "tokenizer", context.run.run_id, None, None, len(texts), digest)
        record_run(con, context, config.model_dump(), outputs={"documents": len(texts), "sha256": digest})
    return dg.MaterializeResult(
        metadata={"documents": len(texts), "vocab_size": tokenizer.get_vocab_size(),
                  "path": dg.MetadataValue.path(str(out_file))},
        data_version=dg.DataVersion(digest),
    )


class TrainingConfig(dg.Config):
    """The seed is not here: it is the checkpoint's partition (see training_partitions)."""

    token_budget: int = train.DEFAULT_TOKEN_BUDGET
    batch_size: int = train.TrainConfig().batch_size
    learning_rate: float = train.TrainConfig().learning_rate
    checkpoint_every: int = train.TrainConfig().checkpoint_every
    # "auto": bf16 autocast on a CPU with native bf16 (core/lm/train.py), else fp32; "bf16" | "fp32".
    precision: str = "auto"

    def train_config(self, vocab_size: int) -> train.TrainConfig:
        return train.TrainConfig(
            token_budget=self.token_budget,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            checkpoint_every=self.checkpoint_every,
            cpu_bf16=cpu_bf16(self.precision),
            model=GPTConfig(vocab_size=vocab_size),
        )


def cpu_bf16(precision: str) -> bool:
    """Whether "auto" | "bf16" | "fp32" means bf16 autocast on the CPU, here."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return precision == "bf16" or (precision == "auto" and cpu_bf16_supported())


def train_config_json(train_config: train.TrainConfig) -> str:
    """What a checkpoint records as its config, and what the report matches checkpoints by."""
    return json.dumps(train_config.to_dict(), sort_keys=True)


def current_selection(store: DuckDBStore, key: str) -> tuple[str, str]:
    """The selection now recorded for a (sampler, rate): what a new checkpoint trains on."""
    with store.connect(read_only=True) as con:
        selection = training_store.current_selection(con, key)
    if selection is None:
        raise dg.Failure(f"no selection for {key}; materialize selections[{key}] first")
    return selection


def current_tokenizer(store: DuckDBStore) -> tuple[Path, str]:
    with store.connect(read_only=True) as con:
        tokenizer = training_store.current_tokenizer(con)
    if tokenizer is None or not Path(tokenizer[0]).exists():
        raise dg.Failure("no tokenizer; materialize lm_tokenizer_file first")
    return Path(tokenizer[0]), tokenizer[1]


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=training_partitions,
    ins={"selections": dg.AssetIn(partition_mapping=its_selection, dagster_type=dg.Nothing)},
    deps=["lm_tokenizer_file"],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"pytorch", "safetensors"},
    check_specs=[checks.spec("loss_decreased", "checkpoints", "late training loss below early loss")],
    description="A tiny decoder-only LM trained with plain PyTorch on one selection for a fixed token "
    "budget; safetensors + config, resumable after a kill.",
)
def checkpoints(
    context: dg.AssetExecutionContext, config: TrainingConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    key, seed = training_key(context)
    selection_id, export_path = current_selection(store, key)
    tok_path, tok_sha = current_tokenizer(store)
    tokenizer = lm_tokenizer.load_tokenizer(tok_path)
    texts = pl.read_parquet(export_path, columns=["text"])["text"].to_list()
    token_docs = lm_tokenizer.encode_documents(tokenizer, texts)
    train_config = config.train_config(tokenizer.get_vocab_size())
    # The whole training config, model shape included: a changed default context length or
    # width is another checkpoint, not the same one resumed.
    config_json = train_config_json(train_config)
    checkpoint_id = make_producer_id(
        "checkpoint", selection=selection_id, config=train_config.to_dict(), seed=seed,
        # The module's name before core/ was regrouped (train.__name__ then): checkpoint ids stay as they were.
        tokenizer=tok_sha, code="dselect_assets.core.train/1",
    )
    out_dir = paths.dir("checkpoints", checkpoint_id.replace(":", "-"))
    result = train.train_lm(token_docs, train_config, out_dir, seed=seed, resume=True,
                            progress=progress_log(context, unit="steps"))
    losses = result.loss_history
    with store.transaction() as con:
        sha = register_artifact(con, Path(result.weights_path), "checkpoint", context.run.run_id, checkpoint_id, key)
        training_store.insert_checkpoint(con, {
            "checkpoint_id": checkpoint_id, "selection_id": selection_id, "selection_key": key,
            "config_json": config_json, "path": str(out_dir), "sha256": sha, "steps": result.steps,
            "tokens_seen": result.tokens_seen, "first_loss": losses[0], "final_loss": losses[-1],
            "seconds": result.wall_seconds, "run_id": context.run.run_id, "seed": seed,
            "tokenizer_path": str(tok_path), "tokenizer_sha256": tok_sha, "epochs": result.epochs,
            "documents": len(texts),
        })
        record_run(con, context, config.model_dump(), checkpoint_id,
                   outputs={"steps": result.steps, "final_loss": losses[-1], "epochs": result.epochs})
    return dg.MaterializeResult(
        metadata={
            "checkpoint_id": checkpoint_id,
            "selection_id": selection_id,
            "seed": seed,
            "tokenizer": dg.MetadataValue.path(str(tok_path)),
            "documents": len(texts),
            "steps": result.steps,
            "tokens_seen": result.tokens_seen,
            "epochs_over_selection": round(result.epochs, 2),
            "first_loss": round(losses[0], 4),
            "final_loss": round(losses[-1], 4),
            "tokens_per_second": round(result.tokens_per_second, 1),
            "resumed_from_step": result.resumed_from_step,
            "parameters": result.num_parameters,
            "path": dg.MetadataValue.path(str(out_dir)),
        },
        data_version=dg.DataVersion(sha),  # the weights file
        check_results=[checks.loss_decreased(losses)],
    )


def checkpoint_lineage(store: DuckDBStore, key: str, seed: int) -> tuple[str, str, Path, str]:
    """The newest checkpoint of (selection key, seed) with the export and tokenizer it was trained on."""
    with store.connect(read_only=True) as con:
        lineage = training_store.checkpoint_lineage(con, key, seed)
    if lineage is None:
        raise dg.Failure(f"no checkpoint for {key} seed {seed}; materialize checkpoints[{training_partition(key, seed)}] first")
    checkpoint_id, model_dir, tok_path, export_path = lineage
    return checkpoint_id, model_dir, Path(tok_path), export_path


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=training_partitions,
    deps=[dg.AssetDep("checkpoints", partition_mapping=dg.IdentityPartitionMapping())],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"duckdb"},
    check_specs=[checks.spec("perplexity_below_unigram", "eval_metrics", "finite and below a unigram baseline")],
    description="Perplexity of a checkpoint on the held-out in-distribution split and the high-quality set, "
    "beside a unigram baseline fit on the same selection.",
)
def eval_metrics(context: dg.AssetExecutionContext, store: DuckDBStore, paths: DataPaths) -> dg.MaterializeResult:
    key, seed = training_key(context)
    # The checkpoint's own selection and tokenizer, whatever has been selected or trained since.
    checkpoint_id, model_dir, tok_path, export_path = checkpoint_lineage(store, key, seed)
    tokenizer = lm_tokenizer.load_tokenizer(tok_path)
    train_docs = lm_tokenizer.encode_documents(
        tokenizer, pl.read_parquet(export_path, columns=["text"])["text"].to_list()
    )
    # Evaluated in the precision it was trained in (fp32 for checkpoints that predate the choice).
    bf16 = json.loads((Path(model_dir) / train.TRAIN_CONFIG_FILE).read_text()).get("cpu_bf16", False)
    rows = []
    for eval_set in ("in_distribution", "high_quality"):
        eval_file = paths.root / "eval" / f"{eval_set}.parquet"
        texts = pl.read_parquet(eval_file, columns=["text"])["text"].to_list() if eval_file.exists() else []
        if not texts:
            context.log.warning(f"eval set {eval_set} is empty; skipped")
            continue
        metrics = perplexity(model_dir, tokenizer, texts, bf16=bf16)
        unigram = unigram_perplexity(
            train_docs, lm_tokenizer.encode_documents(tokenizer, texts), tokenizer.get_vocab_size()
        )
        rows.append((checkpoint_id, eval_set, metrics["ppl"], metrics["mean_nll"], metrics["n_tokens"],
                     unigram["ppl"], context.run.run_id))
    with store.transaction() as con:
        training_store.insert_eval_metrics(con, rows)
        record_run(con, context, {}, checkpoint_id, outputs={r[1]: r[2] for r in rows})
    return dg.MaterializeResult(
        metadata={
            "checkpoint_id": checkpoint_id,
            **{f"ppl_{r[1]}": round(r[2], 3) for r in rows},
            **{f"unigram_ppl_{r[1]}": round(r[5], 3) for r in rows},
        },
        data_version=dg.DataVersion(make_producer_id("eval", rows=[r[:6] for r in rows])),  # the metrics, not the run
        check_results=[checks.perplexity_sane([(r[1], r[2], r[5]) for r in rows])],
    )


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["eval_metrics"],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"duckdb"},
    description="Held-out perplexity vs sampling rate per sampler, full data as a line, and the change "
    "relative to random at the same rate.",
)
def comparison_report(
    context: dg.AssetExecutionContext, config: TrainingConfig, store: DuckDBStore, paths: DataPaths,
    judge: AskLLMJudgeResource, perplexity_lm: PerplexityLMResource,
) -> dg.MaterializeResult:
    """Only checkpoints of the current selections, training config and tokenizer are compared;
    older ones are listed as stale, never mixed in."""
    tok_path, tok_sha = current_tokenizer(store)
    config_json = train_config_json(config.train_config(lm_tokenizer.load_tokenizer(tok_path).get_vocab_size()))
    with store.connect(read_only=True) as con:
        rows = training_store.newest_evaluated_checkpoints(con, config_json, tok_sha)
    current = [r for r in rows if r[7]]
    if not current:
        raise dg.Failure("no evaluated checkpoint of the current selections and training config yet; "
                         "materialize checkpoints and eval_metrics first")
    stale = sorted({f"{r[0]} seed {r[1]}" for r in rows if not r[7]})
    results = pl.DataFrame(
        [(*parse_selection_key(k), seed, e, p, u) for k, seed, _, e, p, _, _, _, u in current],
        schema={"sampler": pl.String, "rate": pl.Float64, "seed": pl.Int64, "eval_set": pl.String, "ppl": pl.Float64,
                "unigram_ppl": pl.Float64},
        orient="row",
    )
    epochs = {}
    for key, _, _, _, _, n_epochs, n_docs, _, _ in current:
        epochs.setdefault(key, (n_docs, n_epochs))
    notes = [
        "Training data per selection (same token budget for all): "
        + "; ".join(f"{k}: {d} documents, {e:.1f} epochs" for k, (d, e) in sorted(epochs.items()) if e is not None),
        *score_agreement(store, resource_key("ask_llm", judge), perplexity_key(perplexity_lm, judge)),
    ]
    if stale:
        notes.append(f"Left out as stale (trained on an older selection, config or tokenizer): {', '.join(stale)}.")
    built = report.build_report(results, paths.dir("reports", "comparison"), notes=notes)
    with store.transaction() as con:
        report_sha = register_artifact(con, built.markdown_path, "report", context.run.run_id)
        record_run(con, context, config.model_dump(), outputs={"rows": results.height, "stale": len(stale)})
    metadata = {
        "report": dg.MetadataValue.md(built.markdown),
        "report_file": dg.MetadataValue.path(str(built.markdown_path)),
        "checkpoints_compared": len({(k, seed) for k, seed, *_ in current}),
        "seeds": results["seed"].n_unique(),
        "stale_checkpoints_left_out": len(stale),
    }
    for eval_set, png in built.plot_paths.items():
        metadata[f"plot_{eval_set}"] = png_markdown(png, f"perplexity on {eval_set}")
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(report_sha))


def score_agreement(store: DuckDBStore, ask_llm_resource: str, perplexity_resource: str) -> list[str]:
    """Kendall tau between the configured judge's and LM's scores over the corpus (the paper finds
    about 0); the producers are those the configured resources registered, never "the newest"."""
    from scipy.stats import kendalltau

    with store.connect(read_only=True) as con:
        ask_llm, nll = training_store.paired_scores(con, ask_llm_resource, perplexity_resource)
    if len(ask_llm) < 3:
        return []
    tau = kendalltau(ask_llm, -nll).statistic
    return [f"Kendall tau between Ask-LLM P(yes) and LM likelihood (-perplexity) over {len(ask_llm)} documents: "
            f"{tau:+.3f} (the paper finds about 0)."]

"""Train a tiny LM on each selection for a fixed token budget, evaluate it, compare samplers.

The budget is the same for every selection, so a 20% sample is seen for about
five times as many epochs as the full data: the paper's setting, scaled down.
"""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from dselect_assets.assets import checks
from dselect_assets.assets.common import record_run, register_artifact
from dselect_assets.assets.plots import png_markdown
from dselect_assets.assets.selection import (
    DEFAULT_SAMPLERS,
    FULL_DATA_KEY,
    eval_hashes,
    parse_selection_key,
    selection_key,
)
from dselect_assets.assets.shard_reader import texts_for
from dselect_assets.core import lm_tokenizer, report, train
from dselect_assets.core.evaluate import perplexity, unigram_perplexity
from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.tiny_lm import GPTConfig
from dselect_assets.resources import DataPaths, DuckDBStore

TRAINING_RATES = [0.2, 0.6]
# Bump when a change to this module or to the training/eval code changes the results.
TRAINING_VERSION = "1"
training_partitions = dg.StaticPartitionsDefinition(
    [selection_key(s, r) for s in DEFAULT_SAMPLERS for r in TRAINING_RATES] + [FULL_DATA_KEY]
)
same_selection = dg.StaticPartitionMapping({k: k for k in training_partitions.get_partition_keys()})


class TokenizerConfig(dg.Config):
    vocab_size: int = lm_tokenizer.DEFAULT_VOCAB_SIZE


@dg.asset(
    deps=["eval_sets"],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"huggingface"},
    description="Byte-level BPE tokenizer trained once on every selectable document (eval sets excluded).",
)
def lm_tokenizer_file(
    context: dg.AssetExecutionContext, config: TokenizerConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    held_out = eval_hashes(store)
    hashes = sorted(r[0] for r in store.query("SELECT content_hash FROM contents") if r[0] not in held_out)
    texts = texts_for(store, hashes)["text"].to_list()
    tokenizer = lm_tokenizer.train_tokenizer(texts, vocab_size=config.vocab_size)
    out_file = lm_tokenizer.save_tokenizer(tokenizer, paths.dir("models") / "tokenizer.json")
    with store.transaction() as con:
        digest = register_artifact(con, out_file, "tokenizer", context.run.run_id, None, None, len(texts))
        record_run(con, context, config.model_dump(), outputs={"documents": len(texts), "sha256": digest})
    return dg.MaterializeResult(
        metadata={"documents": len(texts), "vocab_size": tokenizer.get_vocab_size(),
                  "path": dg.MetadataValue.path(str(out_file))},
        data_version=dg.DataVersion(digest),
    )


class TrainingConfig(dg.Config):
    token_budget: int = train.DEFAULT_TOKEN_BUDGET
    batch_size: int = train.TrainConfig().batch_size
    learning_rate: float = train.TrainConfig().learning_rate
    seed: int = 0
    checkpoint_every: int = train.TrainConfig().checkpoint_every


def latest_selection(store: DuckDBStore, key: str) -> tuple[str, str]:
    rows = store.query(
        "SELECT selection_id, export_path FROM selections WHERE selection_key = ? ORDER BY created_at DESC LIMIT 1",
        [key],
    )
    if not rows:
        raise dg.Failure(f"no selection for {key}; materialize selections[{key}] first")
    return rows[0]


def tokenizer_path(paths: DataPaths) -> Path:
    path = paths.root / "models" / "tokenizer.json"
    if not path.exists():
        raise dg.Failure(f"no tokenizer at {path}; materialize lm_tokenizer_file first")
    return path


@dg.asset(
    partitions_def=training_partitions,
    ins={"selections": dg.AssetIn(partition_mapping=same_selection, dagster_type=dg.Nothing)},
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
    key = context.partition_key
    selection_id, export_path = latest_selection(store, key)
    tok_path = tokenizer_path(paths)
    tokenizer = lm_tokenizer.load_tokenizer(tok_path)
    texts = pl.read_parquet(export_path, columns=["text"])["text"].to_list()
    token_docs = lm_tokenizer.encode_documents(tokenizer, texts)
    train_config = train.TrainConfig(
        token_budget=config.token_budget,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        checkpoint_every=config.checkpoint_every,
        model=GPTConfig(vocab_size=tokenizer.get_vocab_size()),
    )
    checkpoint_id = make_producer_id(
        "checkpoint", selection=selection_id, config=config.model_dump(),
        tokenizer=file_sha256(tok_path), code=train.__name__ + "/1",
    )
    out_dir = paths.dir("checkpoints", checkpoint_id.replace(":", "-"))
    result = train.train_lm(token_docs, train_config, out_dir, seed=config.seed, resume=True)
    losses = result.loss_history
    with store.transaction() as con:
        sha = register_artifact(con, Path(result.weights_path), "checkpoint", context.run.run_id, checkpoint_id, key)
        con.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [checkpoint_id, selection_id, key, json.dumps(config.model_dump(), sort_keys=True), str(out_dir), sha,
             result.steps, result.tokens_seen, losses[0], losses[-1], result.wall_seconds, context.run.run_id],
        )
        record_run(con, context, config.model_dump(), checkpoint_id,
                   outputs={"steps": result.steps, "final_loss": losses[-1], "epochs": result.epochs})
    return dg.MaterializeResult(
        metadata={
            "checkpoint_id": checkpoint_id,
            "selection_id": selection_id,
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


def latest_checkpoint(store: DuckDBStore, key: str) -> tuple[str, str, str]:
    rows = store.query(
        "SELECT checkpoint_id, path, selection_id FROM checkpoints WHERE selection_key = ?"
        " ORDER BY created_at DESC LIMIT 1",
        [key],
    )
    if not rows:
        raise dg.Failure(f"no checkpoint for {key}; materialize checkpoints[{key}] first")
    return rows[0]


@dg.asset(
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
    key = context.partition_key
    checkpoint_id, model_dir, _ = latest_checkpoint(store, key)
    tokenizer = lm_tokenizer.load_tokenizer(tokenizer_path(paths))
    _, export_path = latest_selection(store, key)
    train_docs = lm_tokenizer.encode_documents(
        tokenizer, pl.read_parquet(export_path, columns=["text"])["text"].to_list()
    )
    rows = []
    for eval_set in ("in_distribution", "high_quality"):
        eval_file = paths.root / "eval" / f"{eval_set}.parquet"
        texts = pl.read_parquet(eval_file, columns=["text"])["text"].to_list() if eval_file.exists() else []
        if not texts:
            context.log.warning(f"eval set {eval_set} is empty; skipped")
            continue
        metrics = perplexity(model_dir, tokenizer, texts)
        unigram = unigram_perplexity(
            train_docs, lm_tokenizer.encode_documents(tokenizer, texts), tokenizer.get_vocab_size()
        )
        rows.append((checkpoint_id, eval_set, metrics["ppl"], metrics["mean_nll"], metrics["n_tokens"],
                     unigram["ppl"], context.run.run_id))
    with store.transaction() as con:
        con.executemany("INSERT OR REPLACE INTO eval_metrics VALUES (?, ?, ?, ?, ?, ?, ?, now())", rows)
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
    deps=["eval_metrics"],
    group_name="training",
    code_version=TRAINING_VERSION,
    kinds={"duckdb"},
    description="Held-out perplexity vs sampling rate per sampler, full data as a line, and the change "
    "relative to random at the same rate.",
)
def comparison_report(context: dg.AssetExecutionContext, store: DuckDBStore, paths: DataPaths) -> dg.MaterializeResult:
    latest = store.query(
        "WITH latest AS (SELECT selection_key, arg_max(checkpoint_id, created_at) AS checkpoint_id"
        "  FROM checkpoints GROUP BY selection_key)"
        " SELECT l.selection_key, m.eval_set, m.perplexity FROM latest l JOIN eval_metrics m USING (checkpoint_id)"
        " ORDER BY 1, 2"
    )
    if not latest:
        raise dg.Failure("no evaluated checkpoints yet; materialize eval_metrics first")
    results = pl.DataFrame(
        [(*parse_selection_key(k), e, p) for k, e, p in latest],
        schema={"sampler": pl.String, "rate": pl.Float64, "eval_set": pl.String, "ppl": pl.Float64},
        orient="row",
    )
    built = report.build_report(results, paths.dir("reports", "comparison"))
    with store.transaction() as con:
        report_sha = register_artifact(con, built.markdown_path, "report", context.run.run_id)
        record_run(con, context, {}, outputs={"rows": results.height})
    metadata = {
        "report": dg.MetadataValue.md(built.markdown),
        "report_file": dg.MetadataValue.path(str(built.markdown_path)),
        "checkpoints_compared": len({k for k, _, _ in latest}),
    }
    for eval_set, png in built.plot_paths.items():
        metadata[f"plot_{eval_set}"] = png_markdown(png, f"perplexity on {eval_set}")
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(report_sha))

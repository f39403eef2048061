"""Per-shard quality signals: embeddings, Ask-LLM scores, perplexity scores.

Every result is keyed by (content hash, producer id) and stored in the producer's attribute
files (dselect_assets/store/attributes.py). A materialization reads its shard's documents file
and the producer's files, computes only the documents with no result yet and writes each chunk
as its own file: a killed run loses at most the chunk in flight, and a re-run starts where it
stopped. These assets never open the DuckDB catalogue (a cluster's workers must not share it):
the producer and the lineage row are left as records the catalogue takes in when it is next
opened (store/catalogue.py).
"""

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl

from dselect_assets.assets import checks
from dselect_assets.assets.common import progress_log, run_row, shards
from dselect_assets.assets.plots import histogram_markdown, histogram_png, png_markdown, summary
from dselect_assets.assets.shard_reader import load_embeddings, shard_texts
from dselect_assets.core.hashing import content_hash
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.ingest.shard_keys import validate_shard_key
from dselect_assets.core.progress import Progress
from dselect_assets.core.scoring.judge_eval import roc_auc
from dselect_assets.core.scoring.models import ModelLoadError
from dselect_assets.resources import (
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)
from dselect_assets.store import attributes, catalogue


# Bump when a change to this module or to a scorer's code changes the results.
SCORING_VERSION = "1"


class ChunkConfig(dg.Config):
    chunk_size: int = 64


def scored_data_version(producer: str, content_hashes) -> dg.DataVersion:
    """Names exactly what a score asset holds for a shard: this producer's result for each of
    these texts. Changes when any text of the shard changes, even at equal document count."""
    digest = hashlib.sha256(producer.encode("utf-8"))
    for h in sorted(set(content_hashes)):
        digest.update(b"\n" + h.encode("ascii"))
    return dg.DataVersion(f"{producer}:{digest.hexdigest()}")


def load_model(resource, judge: AskLLMJudgeResource | None = None):
    """resource.load() (resource.load_with(judge) for the perplexity LM), a model-load problem
    as a dg.Failure that says what it was."""
    try:
        return resource.load() if judge is None else resource.load_with(judge)
    except ModelLoadError as exc:
        raise dg.Failure(description=f"model could not be loaded: {exc}") from exc


def embedding_identity(model_identity: dict) -> dict:
    """What determines stored embeddings: the embedder's identity and the precision the store
    rounds them to (attributes.VECTOR_DTYPE)."""
    return {**model_identity, "stored_as": attributes.VECTOR_DTYPE.name}


def embedder_producer(embedder: EmbedderResource) -> str:
    """The producer id of the configured embedder's stored embeddings."""
    return make_producer_id("embedding", **embedding_identity(load_model(embedder).identity))


# Resource settings that change how fast a result is computed, not what it is.
_SPEED_ONLY_SETTINGS = ("batch_size",)


def resource_key(kind: str, resource) -> str:
    """Names a configured resource by the settings that change its results (not batch size)."""
    settings = {k: v for k, v in resource.model_dump().items() if k not in _SPEED_ONLY_SETTINGS}
    return make_producer_id(kind, resource=type(resource).__name__, **settings)


def perplexity_key(perplexity_lm: PerplexityLMResource, judge: AskLLMJudgeResource) -> str:
    """resource_key of the perplexity filter's scorer: with source "judge" it is the judge's
    model and prompt, so the judge's settings are part of what names it."""
    key = resource_key("perplexity", perplexity_lm)
    if perplexity_lm.source == "judge":
        key = make_producer_id("perplexity", resource=key, judge=resource_key("ask_llm", judge))
    return key


def register_producer(store: DuckDBStore, producer: str, kind: str, identity: dict, resource_as: str = "") -> None:
    """Record a producer and, with `resource_as` (see resource_key), that the resource so
    configured produces it now."""
    with store.transaction() as con:
        catalogue.insert_producer(con, producer, kind, identity, resource_as)


def leave_producer(store: DuckDBStore, producer: str, kind: str, identity: dict, resource_as: str) -> None:
    """register_producer for a worker: a record the catalogue takes in, no DuckDB connection."""
    catalogue.leave_record(store.attributes, {
        "kind": "producer", "producer_id": producer, "producer_kind": kind,
        "identity": json.loads(json.dumps(identity, default=str)), "resource_as": resource_as,
    })


def leave_run(store: DuckDBStore, context: dg.AssetExecutionContext, config: dict, producer: str,
              outputs: dict) -> None:
    catalogue.leave_record(store.attributes, {"kind": "run", "row": run_row(context, config, producer, outputs)})


def missing_documents(store: DuckDBStore, docs: pl.DataFrame, producer: str) -> pl.DataFrame:
    """The rows of `docs` with no result from `producer` in its attribute files, shortest first."""
    with duckdb.connect() as con:
        done = attributes.present(con, store.attributes, producer, docs["content_hash"].to_arrow())
    todo = docs.filter(pl.Series(~done))
    # Similar lengths in a chunk pad less; the hash breaks ties so chunks are reproducible.
    return todo.with_columns(pl.col("text").str.len_chars().alias("_len")).sort(["_len", "content_hash"]).drop("_len")


def shard_values(store: DuckDBStore, producer: str, hashes: pl.Series, column: str = "value") -> np.ndarray:
    """`producer`'s stored value of each given document (NaN where unscorable or absent)."""
    with duckdb.connect() as con:
        values, _ = attributes.read_values(con, store.attributes, producer, hashes.to_arrow(), column)
    return values


WEAK_SEPARATION_AUC = 0.7


def probe_separation(store: DuckDBStore, probe_file: Path, producer: str, column: str, sign: float) -> dict:
    """ROC-AUC of this producer's scores on the labelled probe documents scored so far.

    The probe (1 informative / 0 junk) is drawn from the corpus itself, so this is
    how well the scorer separates the corpus being selected, not some other text.
    `sign` is -1 for scores where lower means more informative (perplexity).
    """
    if not probe_file.exists():
        return {}
    probe = pl.read_ndjson(probe_file).select("text", "label")
    probe = probe.with_columns(pl.col("text").map_elements(content_hash, return_dtype=pl.String).alias("content_hash"))
    values = shard_values(store, producer, probe["content_hash"], column)
    scored = ~np.isnan(values)
    rows = list(zip(probe["label"].to_numpy()[scored].tolist(), values[scored].tolist()))
    labels = [label for label, _ in rows]
    if len(set(labels)) < 2:
        return {"probe_documents_scored": len(rows)}
    auc = roc_auc([sign * value for _, value in rows], labels)
    verdict = (
        "separates informative text from junk" if auc >= WEAK_SEPARATION_AUC
        else "WEAK: barely separates informative text from junk on this corpus; treat its ranking with care"
    )
    return {"probe_documents_scored": len(rows), "probe_roc_auc": round(auc, 3), "probe_verdict": verdict}


# A document's cost, in characters: its length up to the scorer's cut (at about 4 characters a
# token) plus a fixed share for what every document costs whatever its length (the prompt's end,
# attention to the cached prefix, padding). Fit to the judge's progress over a default-corpus
# shard (846 documents, 260 s): replayed on that run's progress lines, the time left it gives
# was at most 20 s off, where the rate in documents was up to 153 s off.
CHARS_PER_TOKEN = 4
FIXED_CHARS_PER_DOCUMENT = 200


def document_work(texts: pl.Series, cut_tokens: int | None) -> np.ndarray:
    """Cumulative cost of the first i documents (len n + 1), as described above."""
    chars = texts.str.len_chars().to_numpy().astype(np.float64)
    if cut_tokens:
        chars = np.minimum(chars, CHARS_PER_TOKEN * cut_tokens)
    return np.concatenate([[0.0], np.cumsum(chars + FIXED_CHARS_PER_DOCUMENT)])


def run_in_chunks(
    context: dg.AssetExecutionContext,
    todo: pl.DataFrame,
    chunk_size: int,
    compute_and_commit: Callable[[pl.DataFrame, Progress], None],
    cut_tokens: int | None = None,
) -> None:
    """compute_and_commit(chunk, progress) for each chunk of `todo`; the run's log gets the
    documents done, rate and time left over all of `todo`, from the progress the scorer reports
    per batch (in chunk counts) and from each committed chunk. The time left weighs each
    document by its length up to `cut_tokens` (missing_documents hands them shortest first)."""
    total = todo.height
    if not total:
        return
    log = progress_log(context, work=document_work(todo["text"], cut_tokens))
    started = time.perf_counter()
    log(0, total, 0.0)
    for start in range(0, total, chunk_size):
        chunk = todo.slice(start, chunk_size)

        def within_chunk(done: int, _chunk_total: int, _elapsed: float) -> None:
            # A chunk's end is reported once it is committed, below.
            if done < chunk.height:
                log(start + done, total, time.perf_counter() - started)

        compute_and_commit(chunk, within_chunk)
        log(start + chunk.height, total, time.perf_counter() - started)


def _score_shard(
    context: dg.AssetExecutionContext,
    store: DuckDBStore,
    paths: DataPaths,
    kind: str,
    scorer,
    score_fn: Callable[[list[str], Progress], np.ndarray],
    chunk_size: int,
    config: dict,
    valid_range: tuple[float, float],
    probe_column: str = "value",
    probe_sign: float = 1.0,
    resource_as: str = "",
    side_output: str = "",
    cut_tokens: int | None = None,
) -> dg.MaterializeResult:
    """Shared body of the score assets: value (and value_norm) per missing document.

    With `side_output` (a producer id), score_fn returns a third column that is that producer's
    value for the same documents (the judge's document NLL for the perplexity filter): it is
    written beside the main result, for the documents that producer lacks."""
    shard = validate_shard_key(context.partition_key)
    producer = make_producer_id(kind, **scorer.identity)
    docs = shard_texts(paths, shard)
    todo = missing_documents(store, docs, producer)
    side_lacks = set(missing_documents(store, todo, side_output)["content_hash"]) if side_output else set()

    def commit(chunk: pl.DataFrame, progress: Progress) -> None:
        values = np.asarray(score_fn(chunk["text"].to_list(), progress), dtype=np.float64)
        value = values[:, 0] if values.ndim == 2 else values
        norm = values[:, 1] if values.ndim == 2 else None
        hashes = chunk["content_hash"].to_list()
        # The side output first: a kill between the two writes leaves it ahead, and the re-run,
        # which redoes what the main producer lacks, then completes both without duplicates.
        lacking = [i for i, h in enumerate(hashes) if h in side_lacks]
        if lacking:
            attributes.write_chunk(store.attributes, side_output, shard, attributes.score_table(
                side_output, [hashes[i] for i in lacking], values[lacking, 2]))
        attributes.write_chunk(store.attributes, producer, shard,
                               attributes.score_table(producer, hashes, value, norm))

    run_in_chunks(context, todo, chunk_size, commit, cut_tokens)
    attributes.compact(store.attributes, producer, shard)
    if side_lacks:
        attributes.compact(store.attributes, side_output, shard)
    value = shard_values(store, producer, docs["content_hash"])
    stats = {
        "documents": docs.height,
        "scored_now": todo.height,
        "reused_from_cache": docs.height - todo.height,
        "unscorable": int(np.isnan(value).sum()),
    }
    leave_producer(store, producer, kind, scorer.identity, resource_as)
    leave_run(store, context, config, producer, stats)
    png = histogram_png(value, f"{kind} · {shard}", paths.dir("reports", kind) / f"{shard}.png")
    return dg.MaterializeResult(
        metadata={
            **stats,
            "producer_id": producer,
            "model": scorer.spec.name,
            "summary": dg.MetadataValue.json(summary(value)),
            "histogram": dg.MetadataValue.md(histogram_markdown(value)),
            "histogram_plot": png_markdown(png, f"{kind} histogram"),
            **probe_separation(store, paths.root / "eval" / "judge_probe.jsonl", producer, probe_column, probe_sign),
        },
        data_version=scored_data_version(producer, docs["content_hash"]),
        check_results=[checks.score_range(context.asset_key.to_user_string(), value, *valid_range)],
    )


@dg.asset(
    partitions_def=shards,
    deps=["documents"],
    group_name="scores",
    code_version=SCORING_VERSION,
    kinds={"pytorch", "parquet"},
    check_specs=[checks.spec("score_range", "ask_llm_scores", "P(yes) in [0, 1], at most 5% unscorable")],
    description="Ask-LLM: P('yes') from an instruction-tuned judge asked if the document is informative "
    "pretraining data (paper prompt, one forward pass), plus P(yes)/(P(yes)+P(no)).",
)
def ask_llm_scores(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    judge: AskLLMJudgeResource,
    perplexity_lm: PerplexityLMResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    scorer = load_model(judge)
    score_fn, side_output = scorer.score, ""
    if perplexity_lm.source == "judge" and scorer.scores_doc_nll:
        # The perplexity filter's numbers come out of this pass (perplexity_scores follows it).
        doc_nll = load_model(perplexity_lm, judge)
        side_output = make_producer_id("perplexity", **doc_nll.identity)

        def score_fn(texts: list[str], progress: Progress) -> np.ndarray:
            return scorer.score_with_doc_nll(texts, doc_nll.max_tokens, progress)

    return _score_shard(context, store, paths, "ask_llm", scorer, score_fn, config.chunk_size,
                        {**config.model_dump(), **judge.model_dump()}, (0.0, 1.0), "value_norm",
                        resource_as=resource_key("ask_llm", judge), side_output=side_output,
                        cut_tokens=judge.max_doc_tokens)


@dg.asset(
    partitions_def=shards,
    # After the judge: with the default source "judge", ask_llm_scores' pass already wrote these
    # numbers and this asset computes only what it left out.
    deps=["documents", "ask_llm_scores"],
    group_name="scores",
    code_version=SCORING_VERSION,
    kinds={"pytorch", "parquet"},
    check_specs=[checks.spec("score_range", "perplexity_scores", "mean NLL in [0, 30] nats, at most 5% unscorable")],
    description="Mean token negative log-likelihood of each document's first tokens under a small LM "
    "(perplexity filter): by default the judge's model, from the judge's own forward pass.",
)
def perplexity_scores(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    perplexity_lm: PerplexityLMResource,
    judge: AskLLMJudgeResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    scorer = load_model(perplexity_lm, judge)
    return _score_shard(context, store, paths, "perplexity", scorer, scorer.score, config.chunk_size,
                        {**config.model_dump(), **perplexity_lm.model_dump()}, (0.0, 30.0), "value", -1.0,
                        resource_as=perplexity_key(perplexity_lm, judge),
                        cut_tokens=judge.max_doc_tokens if perplexity_lm.source == "judge" else perplexity_lm.max_tokens)


@dg.asset(
    partitions_def=shards,
    deps=["documents"],
    group_name="scores",
    code_version=SCORING_VERSION,
    kinds={"pytorch", "parquet"},
    check_specs=[checks.spec("unit_norm_and_dimension", "embeddings", "every vector has the model's dimension and unit norm")],
    description="L2-normalized sentence embeddings (float16 .npy beside a Parquet file of content hashes, "
    "per shard chunk).",
)
def embeddings(
    context: dg.AssetExecutionContext,
    config: ChunkConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    shard = validate_shard_key(context.partition_key)
    model = load_model(embedder)
    identity = embedding_identity(model.identity)
    producer = make_producer_id("embedding", **identity)
    docs = shard_texts(paths, shard)
    todo = missing_documents(store, docs, producer)
    out_dir = attributes.producer_dir(store.attributes, producer) / shard

    def commit(chunk: pl.DataFrame, progress: Progress) -> None:
        vectors = model.embed(chunk["text"].to_list(), progress)
        attributes.write_vectors(store.attributes, producer, shard, chunk["content_hash"].to_list(), vectors)

    run_in_chunks(context, todo, config.chunk_size * 4, commit, embedder.max_length)
    attributes.compact(store.attributes, producer, shard)
    stats = {
        "documents": docs.height,
        "embedded_now": todo.height,
        "reused_from_cache": docs.height - todo.height,
        "dimension": model.dim,
    }
    leave_producer(store, producer, "embedding", identity, resource_key("embedding", embedder))
    leave_run(store, context, {**config.model_dump(), **embedder.model_dump()}, producer, stats)
    vectors = load_embeddings(store, producer, docs["content_hash"].to_arrow(), shard)
    return dg.MaterializeResult(
        metadata={**stats, "producer_id": producer, "directory": dg.MetadataValue.path(str(out_dir))},
        data_version=scored_data_version(producer, docs["content_hash"]),
        check_results=[checks.embedding_shape(vectors, model.dim)],
    )

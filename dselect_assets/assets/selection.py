"""Held-out evaluation sets and the selections: one partition per (sampler, rate).

A selection's identity is the hash of its sampler, rate, seed, the producer
ids of every score it read, and the set of eligible documents, so the same
inputs, config and seed give the same id, the same members and a
byte-identical Parquet export.
"""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa

from dselect_assets.assets import checks, distill, paper_scores
from dselect_assets.assets.common import (
    CATALOGUE_POOL,
    eager_after_checks,
    markdown_table,
    record_run,
    register_artifact,
    write_atomically,
)
from dselect_assets.assets.density import cluster_ordered_embeddings
from dselect_assets.assets.scoring import perplexity_key, resource_key
from dselect_assets.assets.shard_reader import MissingUpstream, embedding_rows, texts_for
from dselect_assets.core.hashing import file_sha256, input_version as hashes_version
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.ingest.ingest import Document, read_shard
from dselect_assets.core.lm import report
from dselect_assets.core.selection import paper, samplers
from dselect_assets.resources import (
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)
from dselect_assets.store import attributes, catalogue
from dselect_assets.store import selections as selection_store

DEFAULT_SAMPLERS = [
    "random",
    "density",
    "density_topk",
    "density_bottomk",
    "semdedup",
    "prototypes",
    "perplexity_filter",
    "ask_llm_topk",
    "ask_llm_density",
    "ask_llm_distilled",
    "ask_llm_distilled_density",
]
DEFAULT_RATES = [0.1, 0.2, 0.4, 0.6, 0.8]
FULL_SAMPLER = "full"
FULL_RATE = 1.0
FULL_DATA_KEY = "full@1.00"
SELECTION_VERSION = "1"
# Every sampler value of the partitions: the default samplers, the paper's stand-ins not among
# them (core/selection/paper.py), and the full data.
SAMPLER_VALUES = [*DEFAULT_SAMPLERS, *(s.name for s in paper.STAND_INS if s.name not in DEFAULT_SAMPLERS),
                  FULL_SAMPLER]


def selection_key(sampler: str, rate: float) -> str:
    """The name a selection is recorded, exported and trained under, e.g. density@0.20."""
    return f"{sampler}@{rate:.2f}"


def parse_selection_key(key: str) -> tuple[str, float]:
    sampler, rate = key.rsplit("@", 1)
    return sampler, float(rate)


# Dagster crosses the two dimensions: the full data exists only at rate 1.00 and every other
# sampler only below it; `selection_target` refuses the other cells.
sampler_dimension = dg.StaticPartitionsDefinition(SAMPLER_VALUES)
RATE_VALUES = [*DEFAULT_RATES, FULL_RATE]
selection_partitions = dg.MultiPartitionsDefinition({
    "sampler": sampler_dimension,
    "rate": dg.StaticPartitionsDefinition([f"{r:.2f}" for r in RATE_VALUES]),
})


def selection_partition(key: str) -> dg.MultiPartitionKey:
    """The partition of a selection key: density@0.20 -> sampler=density, rate=0.20; ValueError
    naming the key when it is no partition."""
    try:
        sampler, rate = parse_selection_key(key)
    except ValueError:
        sampler, rate = "", -1.0
    if sampler not in SAMPLER_VALUES or rate not in RATE_VALUES:
        raise ValueError(f"unknown selection {key!r}: SAMPLER@RATE with a sampler of {SAMPLER_VALUES} and a rate "
                         f"of {[f'{r:.2f}' for r in RATE_VALUES]}")
    return dg.MultiPartitionKey({"sampler": sampler, "rate": f"{rate:.2f}"})


def partition_selection_key(partition_key: str) -> str:
    """The selection key of a partition (a MultiPartitionKey or its "rate|sampler" string)."""
    keys = selection_partitions.get_partition_key_from_str(str(partition_key)).keys_by_dimension
    return selection_key(keys["sampler"], float(keys["rate"]))


FULL_DATA_PARTITION = selection_partition(FULL_DATA_KEY)


def runnable_reason(key: str) -> str | None:
    """Why the selection `key` cannot be made on this machine (a cell of the cross product that is
    no selection, or a stand-in whose model is not installed), None when it can."""
    sampler, rate = parse_selection_key(key)
    if (sampler == FULL_SAMPLER) != (rate == FULL_RATE):
        return (f"{key} is no selection: the full data is {FULL_DATA_KEY} and every sampler runs below rate "
                f"{FULL_RATE:.2f}")
    return paper.unavailable_reason(sampler)


def sampler_table() -> str:
    """Every sampler value, the paper configurations it stands in for and what runs here."""
    return markdown_table(["sampler", "paper configuration(s)", "local stand-in"],
                          report.stand_in_rows([s for s in SAMPLER_VALUES if s != FULL_SAMPLER]))


def selection_target(key: str, sources: "ScoreSources") -> tuple[str, float, "ScoreSources"]:
    """The sampler and rate of a selection key and the scorers it reads: the configured ones,
    or for a paper stand-in the model that stands in (assets/paper_scores.py)."""
    reason = runnable_reason(key)
    if reason:
        raise dg.Failure(f"selection {key}: {reason}")
    sampler, rate = parse_selection_key(key)
    return sampler, rate, paper_scores.stand_in_sources(sampler, sources)


# ------------------------------------------------------------------ eval sets


class EvalSetsConfig(dg.Config):
    validation_fraction: float = 0.05
    high_quality_path: str = ""  # default: $DSELECT_HOME/eval/high_quality.jsonl


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["documents"],
    group_name="evaluation",
    code_version=SELECTION_VERSION,
    automation_condition=eager_after_checks(),
    kinds={"duckdb", "parquet"},
    description="Held-out sets that no selection may contain: a fixed in-distribution validation split "
    "of the corpus (by content hash) and an external high-quality prose set.",
)
def eval_sets(
    context: dg.AssetExecutionContext, config: EvalSetsConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    with store.connect(read_only=True) as con:
        validation = pl.from_arrow(selection_store.validation_split(con, config.validation_fraction))
    validation = validation.join(texts_for(store, validation["content_hash"].to_list()), on="content_hash")

    hq_path = Path(config.high_quality_path) if config.high_quality_path else paths.root / "eval" / "high_quality.jsonl"
    if hq_path.exists():
        docs = [d for d in read_shard(hq_path) if isinstance(d, Document)]
        high_quality = pl.DataFrame(
            {"content_hash": [d.content_hash for d in docs], "doc_id": [d.doc_id for d in docs], "text": [d.text for d in docs]}
        ).unique("content_hash", keep="first", maintain_order=True)
    else:
        context.log.warning(f"no high-quality eval set at {hq_path}; only the in-distribution split is used")
        high_quality = pl.DataFrame(schema={"content_hash": pl.String, "doc_id": pl.String, "text": pl.String})

    out_dir = paths.dir("eval")
    stats, digests = {}, {}
    with store.transaction() as con:
        selection_store.clear_eval_sets(con)
        for name, frame in (("in_distribution", validation), ("high_quality", high_quality)):
            out_file = out_dir / f"{name}.parquet"
            frame.select("content_hash", "doc_id", "text").write_parquet(out_file, compression="zstd")
            selection_store.replace_eval_set(con, name, frame.select("content_hash", "doc_id").to_arrow())
            digests[name] = register_artifact(con, out_file, "eval_set", context.run.run_id, name, None, frame.height)
            stats[name] = frame.height
        in_corpus = selection_store.eval_texts_in_corpus(con, "high_quality")
        record_run(con, context, config.model_dump(), outputs=stats)
    return dg.MaterializeResult(
        metadata={
            "in_distribution_documents": stats["in_distribution"],
            "high_quality_documents": stats["high_quality"],
            "high_quality_source": dg.MetadataValue.path(str(hq_path)),
            "high_quality_texts_also_in_corpus": in_corpus,
        },
        data_version=dg.DataVersion(make_producer_id("eval_sets", files=digests)),
    )


# ------------------------------------------------------------------ selections


class SelectionConfig(dg.Config):
    seed: int = 0
    # value: P(yes) as in the paper; value_norm: P(yes)/(P(yes)+P(no)).
    ask_llm_value: str = "value"  # best with the default judge on the corpus probe (docs/judge_report.md)
    # Which scores to read. Empty: those of the judge / LM / embedder configured now (this run's
    # resources), whatever else has been scored since; never "the newest".
    ask_llm_producer: str = ""
    perplexity_producer: str = ""
    embedding_producer: str = ""
    density_producer: str = ""  # empty: the density last built over the chosen embeddings


@dataclass(frozen=True)
class ScoreSources:
    """The configured scorers, named by the resource settings that change their results."""

    ask_llm: str
    perplexity: str
    embedding: str


def resolve_producer(store: DuckDBStore, kind: str, explicit: str, resource: str) -> str:
    with store.connect(read_only=True) as con:
        if explicit:
            if not catalogue.producer_exists(con, explicit, kind):
                raise MissingUpstream(f"{kind} producer {explicit!r} (from the selection config) is not in the store")
            return explicit
        producer = catalogue.resource_producer(con, resource)
    if producer is None:
        raise MissingUpstream(f"no {kind} results from the {kind} scorer configured now; "
                              f"materialize its asset for every shard first")
    return producer


def read_producers(store: DuckDBStore, needs: set[str], config: SelectionConfig, sources: ScoreSources) -> dict:
    """The producer of every signal in `needs`, from the config or the configured resources."""
    producers: dict[str, str] = {}
    if "quality" in needs:
        producers["ask_llm"] = resolve_producer(store, "ask_llm", config.ask_llm_producer, sources.ask_llm)
    if "perplexity" in needs:
        producers["perplexity"] = resolve_producer(store, "perplexity", config.perplexity_producer, sources.perplexity)
    if needs & {"density", "embeddings", "clusters"}:
        producers["embedding"] = resolve_producer(store, "embedding", config.embedding_producer, sources.embedding)
    if "density" in needs:
        producers["density"] = resolve_producer(store, "density", config.density_producer,
                                                f"density:{producers['embedding']}")
    return producers


def score_column(signals: attributes.DocumentSignals, producer: str, kind: str, column: str = "value") -> np.ndarray:
    """One score per eligible document from `producer`; NaN where unscorable."""
    values, found = signals.values(producer, column)
    if not found.all():
        first = attributes.as_strings(signals.hex_hashes)[int(np.flatnonzero(~found)[0])].as_py()
        raise MissingUpstream(
            f"{int((~found).sum())} eligible documents have no {kind} score from {producer} "
            f"(e.g. {first}); materialize the {kind} scores for every shard"
        )
    return values


def _embedding_reader(store: DuckDBStore, sampler: str, producers: dict, hashes: pa.Array):
    """The embeddings `sampler` reads. One that reads a few whole clusters at a time reads them
    from the clustering's copy ordered by cluster (the same vectors: cluster_ordered_embeddings),
    when the copy holds every document."""
    if sampler in samplers.READS_BY_CLUSTER:
        try:
            return embedding_rows(store, cluster_ordered_embeddings(producers["clusters"]), hashes)
        except MissingUpstream:  # clusters materialized before the copy was made, or a copy cut short
            pass
    return embedding_rows(store, producers["embedding"], hashes)


def sampler_inputs(store: DuckDBStore, sampler: str, signals: attributes.DocumentSignals, config: SelectionConfig,
                   sources: ScoreSources):
    """Load exactly the signals `sampler` needs, for the documents that have every score it needs.

    Returns the inputs, the producer ids read, and the rows of the signals' documents the inputs describe.
    """
    hashes = signals.hex_hashes
    needs = samplers.REQUIRED_INPUTS[sampler]
    fields: dict = {"n": len(hashes)}
    producers = read_producers(store, needs, config, sources)
    if sampler in distill.DISTILLED_SAMPLERS:
        # Quality from the probe distilled from the configured judge on the configured embeddings.
        embedding = resolve_producer(store, "embedding", config.embedding_producer, sources.embedding)
        producers["ask_llm"] = distill.resolve_distilled(store, producers["ask_llm"], embedding)
    if "density" in needs:
        fields["density"] = score_column(signals, producers["density"], "density")
    if "quality" in needs:
        fields["quality"] = score_column(signals, producers["ask_llm"], "ask_llm", config.ask_llm_value)
    if "perplexity" in needs:
        fields["perplexity"] = score_column(signals, producers["perplexity"], "perplexity")
    if needs & {"embeddings", "clusters"}:
        with store.connect(read_only=True) as con:
            clustering = selection_store.current_clustering(con)
            if clustering is None:
                raise MissingUpstream("no clusters yet; materialize the clusters asset first")
            producers["clusters"], built_on = clustering
            if built_on != producers["embedding"]:
                raise MissingUpstream(f"the clusters were built on other embeddings than {producers['embedding']}; "
                                      "re-materialize clusters with the embedder configured now")
        fields["clusters"], parts, assigned = selection_store.clusters_of(
            signals, producers["clusters"], with_parts=sampler in samplers.READS_BY_CLUSTER)
        if not assigned.all():
            raise MissingUpstream("some eligible documents have no cluster; re-materialize clusters")
        if parts is not None:
            fields["parts"] = parts
        fields["embeddings"] = _embedding_reader(store, sampler, producers, hashes)
    rows = samplers.scorable_rows(len(hashes), **{k: fields.get(k) for k in ("density", "quality", "perplexity")})
    if rows.size == 0:
        raise MissingUpstream(f"none of the {len(hashes)} eligible documents has every score {sampler} needs")
    scorable = {k: (v if k == "n" else v.take(rows) if k == "embeddings" else v[rows]) for k, v in fields.items()}
    scorable["n"] = rows.size
    return samplers.SamplerInputs(**scorable), producers, rows


EXPORT_SCORES = {"ask_llm": "ask_llm", "perplexity": "perplexity", "density": "density"}


def write_export(store: DuckDBStore, signals: attributes.DocumentSignals, kept: pa.Array, kept_idx: np.ndarray,
                 producers: dict[str, str], ask_llm_value: str, out_file: Path, spill_dir: Path) -> None:
    """id, content_hash, text and the scores the selection read (the Ask-LLM column it ranked by),
    by content hash; a score the sampler did not read is null. `kept` is the signals' documents
    at `kept_idx`."""
    def kept_part(column: np.ndarray) -> np.ndarray:
        return column if len(kept_idx) == signals.n else column[kept_idx]  # all kept: no copy

    scores = {}
    for kind in EXPORT_SCORES:
        scores[kind] = None
        if producers.get(kind):
            value, found = signals.values(producers[kind], ask_llm_value if kind == "ask_llm" else "value")
            scores[kind] = kept_part(value), kept_part(found & ~np.isnan(value))
    with store.connect(read_only=True) as con:
        write_atomically(out_file, lambda tmp: selection_store.write_export(con, kept, scores, tmp, spill_dir))


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=selection_partitions,
    deps=[
        "density",
        "clusters",
        "eval_sets",
        dg.AssetDep("ask_llm_scores", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("perplexity_scores", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="selection",
    code_version=SELECTION_VERSION,
    automation_condition=eager_after_checks(),
    kinds={"duckdb", "parquet"},
    check_specs=[
        checks.spec("size_matches_rate", "selections", "kept == round(rate x considered)"),
        checks.spec("export_readable", "selections", "the Parquet export opens with polars and pyarrow"),
        checks.spec("no_eval_leak", "selections", "no held-out eval document is selected"),
    ],
    description="The documents a sampler keeps at a rate, with full lineage and a Parquet export "
    "(id, content_hash, text, scores) that polars and Hugging Face datasets read as is.",
    metadata={"samplers": dg.MetadataValue.md(sampler_table())},
)
def selections(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    store: DuckDBStore,
    paths: DataPaths,
    judge: AskLLMJudgeResource,
    perplexity_lm: PerplexityLMResource,
    embedder: EmbedderResource,
) -> dg.MaterializeResult:
    key = partition_selection_key(context.partition_key)
    # Named by their settings only: no model is loaded to select.
    sources = ScoreSources(resource_key("ask_llm", judge), perplexity_key(perplexity_lm, judge),
                           resource_key("embedding", embedder))
    sampler, rate, sources = selection_target(key, sources)
    with store.connect(read_only=True) as con:
        n_held_out = selection_store.held_out_count(con)
        hashes = selection_store.eligible_hashes(con)
    if not n_held_out:
        raise dg.Failure("no evaluation sets recorded; materialize eval_sets first so they can be held out")
    # the sampler, the export and the kept/rejected table read the same scores: each read once
    with attributes.DocumentSignals(store.attributes, hashes) as signals:
        try:
            if sampler == FULL_SAMPLER:
                kept_idx, producers, n_scorable = np.arange(len(hashes)), {}, len(hashes)
            else:
                inputs, producers, rows = sampler_inputs(store, sampler, signals, config, sources)
                # ascending, as the eligible hashes are: the kept hashes come sorted for the export
                kept_idx = np.sort(rows[samplers.SAMPLERS[sampler](inputs, rate, config.seed)])
                n_scorable = rows.size
                del inputs
        except MissingUpstream as exc:
            raise dg.Failure(f"selection {key}: {exc}") from exc
        # the full data is every eligible hash: no second corpus-sized copy
        kept = hashes if sampler == FULL_SAMPLER else hashes.take(pa.array(kept_idx, pa.int64()))
        input_version = hashes_version(hashes)
        selection_id = make_producer_id(
            "selection", sampler=sampler, rate=rate, seed=config.seed, producers=producers,
            input_version=input_version, config=config.model_dump(),
        )
        shown = export_producers(store, config, sources, producers)
        kept_vs_rejected = accounting_table(store, signals, kept_idx, shown, config.ask_llm_value)
        signals.close()  # everything the export needs is read: the keys' table goes before its DuckDB work
        out_file = paths.dir("selections", key) / f"{selection_id.replace(':', '-')}.parquet"
        write_export(store, signals, kept, kept_idx, shown, config.ask_llm_value, out_file,
                     paths.dir("tmp", "duckdb-spill"))
        export_sha = file_sha256(out_file)

        with store.transaction() as con:
            selection_store.record_selection(con, {
                "selection_id": selection_id, "selection_key": key, "sampler": sampler, "rate": rate,
                "seed": config.seed, "config": config.model_dump(), "producers": producers,
                "input_version": input_version, "n_considered": len(hashes), "n_kept": len(kept),
                "export_path": str(out_file), "export_sha256": export_sha, "run_id": context.run.run_id,
            })
            register_artifact(con, out_file, "selection_export", context.run.run_id, selection_id, key, len(kept),
                              export_sha)
            record_run(con, context, config.model_dump(), selection_id,
                       outputs={"kept": len(kept), "considered": len(hashes)})

        return dg.MaterializeResult(
            metadata={
                "selection_id": selection_id,
                "considered": len(hashes),
                "unscorable_left_out": len(hashes) - n_scorable,
                "kept": len(kept),
                "rejected": len(hashes) - len(kept),
                "held_out_for_eval": n_held_out,
                "export": dg.MetadataValue.path(str(out_file)),
                "export_sha256": export_sha,
                "producers": dg.MetadataValue.json(producers),
                "kept_vs_rejected": dg.MetadataValue.md(kept_vs_rejected),
            },
            data_version=dg.DataVersion(export_sha),
            check_results=[
                checks.selection_size(sampler, rate, n_scorable, len(kept)),
                checks.export_readable(out_file, len(kept)),
                checks.no_eval_leak(store, selection_id),
            ],
        )


def export_producers(store: DuckDBStore, config: SelectionConfig, sources: ScoreSources, read: dict) -> dict:
    """The producers the selection read, plus any other configured score that exists, for the
    export and the kept/rejected table."""
    shown = {k: v for k, v in read.items() if k in EXPORT_SCORES}
    for need, kind in (("quality", "ask_llm"), ("perplexity", "perplexity"), ("density", "density")):
        if kind not in shown:
            try:
                shown[kind] = read_producers(store, {need}, config, sources)[kind]
            except MissingUpstream:
                pass
    return shown


def accounting_table(store: DuckDBStore, signals: attributes.DocumentSignals, kept_idx: np.ndarray, producers: dict,
                     ask_llm_value: str) -> str:
    """Mean of each signal over kept vs rejected documents (Ask-LLM in the column ranked by),
    and cluster coverage."""
    is_kept = np.zeros(signals.n, dtype=bool)
    is_kept[kept_idx] = True
    rows = []
    for kind, producer in producers.items():
        if kind == "clusters":
            continue
        try:
            values = score_column(signals, producer, kind, ask_llm_value if kind == "ask_llm" else "value")
        except MissingUpstream:
            continue
        kept_mean = np.nanmean(values[is_kept]) if is_kept.any() else float("nan")
        rejected_mean = np.nanmean(values[~is_kept]) if (~is_kept).any() else float("nan")
        rows.append((kind, f"{kept_mean:.4g}", f"{rejected_mean:.4g}"))
    with store.connect(read_only=True) as con:
        clustering = selection_store.current_clustering(con)
    if clustering is None:
        return markdown_table(["signal", "kept (mean)", "rejected (mean)"], rows)
    cluster, _, assigned = selection_store.clusters_of(signals, clustering[0])
    if assigned.any():
        covered = len(np.unique(cluster[assigned & is_kept]))
        rows.append(("clusters covered", f"{covered}/{len(np.unique(cluster[assigned]))}", ""))
    return markdown_table(["signal", "kept (mean)", "rejected (mean)"], rows)

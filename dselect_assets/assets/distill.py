"""Distilled Ask-LLM: the judge scores a sample, a probe over the embeddings scores every shard.

`ask_llm_probe` (corpus-wide) draws the seeded stratified sample, makes sure the
judge has scored it (cached judge scores are reused, missing ones are scored
and stored under the judge's own producer, so `ask_llm_scores` reuses them in
turn), fits the probe and measures it against the judge on documents it never
saw. `ask_llm_distilled_scores[shard]` predicts from the stored embeddings
only: a shard that arrives after the fit costs one matrix product, no judge.
Re-materializing the probe after the corpus has grown draws the sample again
(new documents may enter it, so the judge scores those): that is a new producer
and every shard is re-predicted, cheaply. The algorithms live in
`dselect_assets.core.scoring.distill`.
"""

import math
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from dselect_assets.assets import checks
from dselect_assets.assets.common import CATALOGUE_POOL, markdown_table, record_run, register_artifact, shards
from dselect_assets.assets.plots import histogram_markdown, summary
from dselect_assets.assets.scoring import (
    embedder_producer,
    load_model,
    missing_documents,
    register_producer,
    resource_key,
    run_in_chunks,
    scored_data_version,
    shard_values,
)
from dselect_assets.assets.shard_reader import MissingUpstream, load_embeddings, shard_texts, texts_for
from dselect_assets.core.hashing import content_hash
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.progress import Progress
from dselect_assets.core.scoring import distill
from dselect_assets.core.scoring.judge_eval import ProbeFileError, load_probe, roc_auc
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, DuckDBStore, EmbedderResource
from dselect_assets.store import attributes, catalogue, coverage

KIND = "ask_llm_distilled"
PROBE_ARTIFACT = "ask_llm_probe"
# Samplers that rank by the distilled scores, and the rule each applies (core/selection/samplers.py).
DISTILLED_SAMPLERS = {"ask_llm_distilled": "ask_llm_topk", "ask_llm_distilled_density": "ask_llm_density"}


def distilled_resource(judge_producer: str, embedding_producer: str) -> str:
    """The resource_producers key of "the probe last fit for this judge on these embeddings"."""
    return f"{KIND}:{judge_producer}:{embedding_producer}"


def resolve_distilled(store: DuckDBStore, judge_producer: str, embedding_producer: str) -> str:
    """The distilled producer a selection reads for the judge and embedder configured now."""
    with store.connect(read_only=True) as con:
        producer = catalogue.resource_producer(con, distilled_resource(judge_producer, embedding_producer))
    if producer is None:
        raise MissingUpstream(f"no Ask-LLM probe distilled from {judge_producer} on {embedding_producer}; "
                              "materialize ask_llm_probe, then ask_llm_distilled_scores for every shard")
    return producer


class ProbeConfig(dg.Config):
    sample_size: int = 3000  # documents the judge scores; a corpus this small is judged whole
    seed: int = 0
    heldout_fraction: float = 0.25  # of the sample, never fit on: the agreement is measured there
    model: str = "auto"  # auto: the best of ridge (each alpha), the MLP and kernel ridge by cross-validation
    ridge_alphas: list[float] = [0.01, 0.1, 1.0, 10.0, 100.0]
    mlp_hidden: int = 256
    mlp_epochs: int = 300
    cv_folds: int = 5
    length_feature: bool = True  # log(characters) beside the embedding (see core.scoring.distill.FitConfig)
    text_statistics: bool = True  # character/word statistics of the text beside it (core.scoring.distill.TEXT_STATISTICS)
    # Kernel ridge candidates: RBF width over the design rows, ridge penalty, weight of the
    # hashed word/word-pair tf-idf kernel (0: no words). Empty gammas: no kernel candidates.
    kernel_gammas: list[float] = [0.5, 1.0, 2.0]
    kernel_alphas: list[float] = [0.3, 1.0]
    bow_weights: list[float] = [0.0, 1.0]
    kernel_max_train: int = 5000  # more training rows than this: no kernel candidates (n^2 memory, n^3 time)
    min_train_documents: int = 20
    # The judge column the headline agreement and ROC-AUC are measured on: the one selections
    # rank by (SelectionConfig.ask_llm_value); the other column is reported beside it.
    rank_column: str = "value"
    # Verdict: the probe is "behind" when its labelled-probe ROC-AUC is more than auc_margin
    # below the judge's, or its held-out Spearman with the judge is below min_spearman.
    auc_margin: float = 0.03
    min_spearman: float = 0.8
    labelled_probe_path: str = ""  # default: $DSELECT_HOME/eval/judge_probe.jsonl, as the score assets
    chunk_size: int = 64  # judge documents per committed chunk
    timing_documents: int = 32  # judge re-timed on this many held-out documents when all were cached

    def fit_config(self) -> distill.FitConfig:
        return distill.FitConfig(
            model=self.model, ridge_alphas=tuple(self.ridge_alphas), mlp_hidden=self.mlp_hidden,
            mlp_epochs=self.mlp_epochs, cv_folds=self.cv_folds, seed=self.seed, min_train=self.min_train_documents,
            length_feature=self.length_feature, text_statistics=self.text_statistics,
            kernel_gammas=tuple(self.kernel_gammas), kernel_alphas=tuple(self.kernel_alphas),
            bow_weights=tuple(self.bow_weights), kernel_max_train=self.kernel_max_train,
        )


def labelled_probe_file(paths: DataPaths, configured: str) -> Path:
    return Path(configured) if configured else paths.root / "eval" / "judge_probe.jsonl"


def _judge_rows(store: DuckDBStore, producer: str, hashes: list[str]) -> np.ndarray:
    """[len(hashes), 2] (value, value_norm) of `producer`, NaN where absent or unscorable."""
    hashes = pl.Series(hashes, dtype=pl.String)
    return np.column_stack([shard_values(store, producer, hashes, column) for column in distill.TARGETS]) \
        if len(hashes) else np.empty((0, 2))


# The judge's scores of the sample are the judge's own results, for texts of any shard: they live
# in one directory of the judge's attribute files that no shard key can name.
SAMPLE_DIR = ".sample"


def _score_with_judge(context, store: DuckDBStore, scorer, producer: str, hashes: list[str],
                      chunk_size: int) -> tuple[int, float]:
    """Judge the documents among `hashes` it has not scored yet; (documents scored, seconds)."""
    todo = missing_documents(store, texts_for(store, hashes), producer)
    seconds = 0.0

    def commit(chunk: pl.DataFrame, progress: Progress) -> None:
        nonlocal seconds
        started = time.perf_counter()
        values = np.asarray(scorer.score(chunk["text"].to_list(), progress), dtype=np.float64)
        seconds += time.perf_counter() - started
        attributes.write_chunk(store.attributes, producer, SAMPLE_DIR, attributes.score_table(
            producer, chunk["content_hash"].to_list(), values[:, 0], values[:, 1]))

    run_in_chunks(context, todo, chunk_size, commit)
    attributes.compact(store.attributes, producer, SAMPLE_DIR)
    return todo.height, seconds


def _labelled_documents(path: Path, corpus: set[str], exclude: set[str], log) -> tuple[list[str], list[int]]:
    """Hashes and labels of labelled-probe documents in the corpus that the probe was not fit on."""
    try:
        probe = load_probe(path)
    except ProbeFileError as exc:
        log.warning(f"no labelled probe to measure ROC-AUC on: {exc}")
        return [], []
    seen: set[str] = set()
    hashes, labels = [], []
    for text, label in zip(probe.texts, probe.labels):
        h = content_hash(text)
        if h in corpus and h not in exclude and h not in seen:
            seen.add(h)
            hashes.append(h)
            labels.append(label)
    return hashes, labels


def _texts(store: DuckDBStore, hashes: list[str]) -> list[str]:
    return texts_for(store, hashes)["text"].fill_null("").to_list()


def _best_seconds(fn, repeats: int = 5) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _round(value: float, digits: int = 4):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def find_probe(store: DuckDBStore, embedding_producer: str, wanted: str = "") -> "tuple[str, Path]":
    """(producer id, file) of the newest probe fitted on `embedding_producer` vectors, or of `wanted`."""
    with store.connect(read_only=True) as con:
        probes = catalogue.artifacts_of_kind(con, PROBE_ARTIFACT)
    for producer, path, identity in probes:
        if wanted and producer != wanted:
            continue
        if identity.get("embedder") == embedding_producer and Path(path).is_file():
            return producer, Path(path)
    which = f"probe {wanted}" if wanted else "no Ask-LLM probe"
    raise MissingUpstream(f"{which} fitted on embeddings from {embedding_producer} was found; "
                          "materialize ask_llm_probe first")


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=[dg.AssetDep("embeddings", partition_mapping=dg.AllPartitionMapping()), "documents"],
    group_name="scores",
    code_version=distill.DISTILL_VERSION,
    kinds={"pytorch", "numpy", "duckdb"},
    check_specs=[dg.AssetCheckSpec("probe_keeps_up", asset="ask_llm_probe", blocking=False,
                                   description="held-out Spearman with the judge and labelled-probe ROC-AUC "
                                   "within the configured margins")],
    description="Ask-LLM at embedding cost: the judge scores a seeded sample stratified by shard and length, "
    "a probe (ridge, one-hidden-layer MLP or kernel ridge, chosen by cross-validation) learns the judge's logit "
    "P(yes) from the embeddings and the length, character/word statistics and words of the text; agreement "
    "with the judge on held-out documents, ROC-AUC on the labelled probe and the cost of each are reported.",
)
def ask_llm_probe(
    context: dg.AssetExecutionContext,
    config: ProbeConfig,
    judge: AskLLMJudgeResource,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    scorer = load_model(judge)
    judge_producer = make_producer_id("ask_llm", **scorer.identity)
    # The judge's scores stored here are the judge's own, so this run may also say which
    # producer the configured judge is (as ask_llm_scores does).
    register_producer(store, judge_producer, "ask_llm", scorer.identity, resource_key("ask_llm", judge))
    if config.rank_column not in distill.TARGETS:
        raise dg.Failure(f"rank_column must be one of {', '.join(distill.TARGETS)}, got {config.rank_column!r}")
    col = distill.TARGETS.index(config.rank_column)
    other = distill.TARGETS[1 - col]
    embedding_producer = embedder_producer(embedder)

    with store.connect(read_only=True) as con:
        corpus = pl.from_arrow(coverage.contents_columns(con))
    hashes = corpus["content_hash"].to_list()
    if not hashes:
        raise dg.Failure("no documents in the corpus; materialize documents for at least one shard")
    strata = distill.length_strata(corpus["shard"].to_list(), corpus["n_chars"].to_list())
    sample = [hashes[i] for i in distill.stratified_sample(hashes, strata, config.sample_size, config.seed)]
    held = distill.heldout_mask(sample, config.heldout_fraction, config.seed)
    train = [h for h, out in zip(sample, held) if not out]
    heldout = [h for h, out in zip(sample, held) if out]

    probe_path = labelled_probe_file(paths, config.labelled_probe_path)
    labelled, labels = _labelled_documents(probe_path, set(hashes), set(train), context.log)
    needed = list(dict.fromkeys(sample + labelled))
    judged_now, judge_seconds = _score_with_judge(context, store, scorer, judge_producer, needed, config.chunk_size)

    try:
        (x_train, t_train), (x_held, t_held), (x_lab, t_lab) = (
            (load_embeddings(store, embedding_producer, group), _texts(store, group))
            for group in (train, heldout, labelled)
        )
    except MissingUpstream as exc:
        raise dg.Failure(f"ask_llm_probe: {exc}") from exc
    y_train, y_held = _judge_rows(store, judge_producer, train), _judge_rows(store, judge_producer, heldout)
    try:
        probe = distill.fit_probe(x_train, y_train, config.fit_config(), t_train)
    except distill.DistillError as exc:
        raise dg.Failure(f"ask_llm_probe: {exc}") from exc

    held_agree = distill.agreement(probe.predict(x_held, t_held), y_held, col) if heldout else {"documents": 0}
    y_lab = _judge_rows(store, judge_producer, labelled)
    p_lab = probe.predict(x_lab, t_lab) if labelled else np.empty((0, 2))
    judge_auc, probe_auc, judge_auc_other, probe_auc_other = (
        roc_auc(values[:, j], labels) if labelled else float("nan")
        for j in (col, 1 - col) for values in (y_lab, p_lab)
    )

    # Cost per 1,000 documents. The judge's time is its forward passes in this run; when
    # every document was cached it is re-timed on a few held-out documents.
    if judged_now < config.timing_documents and config.timing_documents > 0 and heldout:
        texts = texts_for(store, heldout[: config.timing_documents])["text"].to_list()
        judge_seconds, judged_timed = _best_seconds(lambda: scorer.score(texts), repeats=1), len(texts)
    else:
        judged_timed = judged_now
    # The probe's time includes what it reads from the text (length, statistics, words).
    x_all, t_all = (np.vstack([x_train, x_held]), t_train + t_held) if heldout else (x_train, t_train)
    probe_seconds = _best_seconds(lambda: probe.predict(x_all, t_all))
    judge_s_per_k = 1000 * judge_seconds / judged_timed if judged_timed else float("nan")
    probe_s_per_k = 1000 * probe_seconds / max(x_all.shape[0], 1)

    nan = float("nan")
    spearman_ranked = held_agree.get(f"spearman_{config.rank_column}", nan)
    verdict = distill.verdict(judge_auc, probe_auc, spearman_ranked, config.auc_margin, config.min_spearman)
    fit = config.fit_config().identity()
    producer = distill.probe_producer_id(judge_producer, embedding_producer, train, heldout, fit)
    metrics = {
        "rank_column": config.rank_column,
        "heldout_documents": held_agree["documents"],
        "heldout_spearman": _round(spearman_ranked),
        "heldout_kendall": _round(held_agree.get(f"kendall_{config.rank_column}", nan)),
        f"heldout_spearman_{other}": _round(held_agree.get(f"spearman_{other}", nan)),
        f"heldout_kendall_{other}": _round(held_agree.get(f"kendall_{other}", nan)),
        "heldout_top20_overlap": _round(held_agree.get("top20_overlap", nan), 3),
        "labelled_probe_documents": len(labelled),
        "judge_roc_auc": _round(judge_auc, 3),
        "probe_roc_auc": _round(probe_auc, 3),
        f"judge_roc_auc_{other}": _round(judge_auc_other, 3),
        f"probe_roc_auc_{other}": _round(probe_auc_other, 3),
        "judge_seconds_per_1000_docs": _round(judge_s_per_k, 2),
        "probe_seconds_per_1000_docs": _round(probe_s_per_k, 6),
        "probe_speedup_vs_judge": _round(judge_s_per_k / probe_s_per_k if probe_s_per_k > 0 else nan, 0),
        "verdict": verdict,
    }
    probe.meta.update({"producer_id": producer, "judge": judge_producer, "embedder": embedding_producer,
                       "metrics": metrics})
    out_file = paths.dir("probes") / f"{producer.replace(':', '-')}.npz"
    probe.save(out_file)
    identity = {"code": distill.DISTILL_VERSION, "judge": judge_producer, "embedder": embedding_producer,
                "sample_documents": len(sample), "seed": config.seed, "fit": fit, "probe_file": str(out_file)}
    register_producer(store, producer, KIND, identity, distilled_resource(judge_producer, embedding_producer))
    stats = {
        "corpus_documents": len(hashes),
        "sample_documents": len(sample),
        "train_documents": probe.meta["train_documents"],
        "judge_scored_now": judged_now,
        "judge_reused_from_cache": len(needed) - judged_now,
    }
    with store.transaction() as con:
        register_artifact(con, out_file, PROBE_ARTIFACT, context.run.run_id, producer, None, len(train))
        record_run(con, context, config.model_dump(), producer, outputs={**stats, **metrics})

    n = len(hashes)
    def cell(value):
        return "n/a" if value is None else value

    table = markdown_table(["", "judge", "probe"], [(name, cell(a), cell(b)) for name, a, b in [
        (f"ROC-AUC on the labelled probe ({config.rank_column})", metrics["judge_roc_auc"], metrics["probe_roc_auc"]),
        (f"ROC-AUC on the labelled probe ({other})", metrics[f"judge_roc_auc_{other}"],
         metrics[f"probe_roc_auc_{other}"]),
        ("seconds per 1,000 documents", metrics["judge_seconds_per_1000_docs"], metrics["probe_seconds_per_1000_docs"]),
        (f"projected seconds for all {n} documents", _round(judge_s_per_k * n / 1000, 1),
         _round(probe_s_per_k * n / 1000, 4)),
    ]])
    keeps_up = verdict.startswith("keeps up")
    return dg.MaterializeResult(
        metadata={
            **stats,
            **{k: v for k, v in metrics.items() if v is not None},
            "producer_id": producer,
            "judge_producer": judge_producer,
            "embedding_producer": embedding_producer,
            "chosen_model": probe.meta["chosen"],
            "cv_spearman": dg.MetadataValue.json(probe.meta["cv_spearman"]),
            "judge_vs_probe": dg.MetadataValue.md(table),
            "probe_file": dg.MetadataValue.path(str(out_file)),
            "labelled_probe_file": dg.MetadataValue.path(str(probe_path)),
        },
        data_version=dg.DataVersion(producer),
        check_results=[dg.AssetCheckResult(
            check_name="probe_keeps_up", passed=keeps_up,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"verdict": verdict, "auc_margin": config.auc_margin, "min_spearman": config.min_spearman},
        )],
    )


class DistilledScoresConfig(dg.Config):
    probe_producer: str = ""  # empty: the newest probe fitted on the configured embedder's vectors
    chunk_size: int = 4096


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=shards,
    deps=["embeddings", "ask_llm_probe"],
    group_name="scores",
    code_version=distill.DISTILL_VERSION,
    kinds={"numpy", "duckdb"},
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[checks.spec("score_range", "ask_llm_distilled_scores", "predicted P(yes) in [0, 1]")],
    description="Distilled Ask-LLM scores of a shard: the probe's predicted P(yes) and normalized P(yes) "
    "from the stored embeddings, with no judge run.",
)
def ask_llm_distilled_scores(
    context: dg.AssetExecutionContext,
    config: DistilledScoresConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    shard = context.partition_key
    embedding_producer = embedder_producer(embedder)
    try:
        producer, probe_file = find_probe(store, embedding_producer, config.probe_producer)
    except MissingUpstream as exc:
        raise dg.Failure(f"ask_llm_distilled_scores[{shard}]: {exc}") from exc
    probe = distill.Probe.load(probe_file)
    docs = shard_texts(paths, shard)
    todo = missing_documents(store, docs, producer)

    def commit(chunk: pl.DataFrame, _progress: Progress) -> None:
        hashes = chunk["content_hash"].to_list()
        values = probe.predict(load_embeddings(store, embedding_producer, hashes, shard), chunk["text"].to_list())
        attributes.write_chunk(store.attributes, producer, shard,
                               attributes.score_table(producer, hashes, values[:, 0], values[:, 1]))

    try:
        run_in_chunks(context, todo, config.chunk_size, commit)
    except MissingUpstream as exc:
        raise dg.Failure(f"ask_llm_distilled_scores[{shard}]: {exc}") from exc
    attributes.compact(store.attributes, producer, shard)
    value = shard_values(store, producer, docs["content_hash"])
    stats = {"documents": docs.height, "scored_now": todo.height, "reused_from_cache": docs.height - todo.height}
    with store.transaction() as con:
        record_run(con, context, config.model_dump(), producer, outputs=stats)
    # The probe's measured agreement is repeated on every shard, so a reader of any shard's
    # scores sees how far they can be trusted.
    fit_metrics = {f"fit_{k}": v for k, v in probe.meta.get("metrics", {}).items() if v is not None}
    return dg.MaterializeResult(
        metadata={
            **stats,
            "producer_id": producer,
            "judge_producer": probe.meta.get("judge", ""),
            "probe_model": probe.meta.get("chosen", probe.kind),
            **fit_metrics,
            "summary": dg.MetadataValue.json(summary(value)),
            "histogram": dg.MetadataValue.md(histogram_markdown(value)),
            "probe_file": dg.MetadataValue.path(str(probe_file)),
        },
        data_version=scored_data_version(producer, docs["content_hash"]),
        check_results=[checks.score_range(context.asset_key.to_user_string(), value, 0.0, 1.0)],
    )

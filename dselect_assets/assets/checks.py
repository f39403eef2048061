"""Data-quality checks, as plain functions returning AssetCheckResult.

Each asset declares its checks (`check_specs`) and returns their results with
its materialization, so a check runs on exactly the partition just written;
blocking checks stop downstream assets from running on bad data. The functions
take plain values so tests can feed them bad data directly.
"""

from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from dselect_assets.core.selection.samplers import target_size
from dselect_assets.resources import DuckDBStore
from dselect_assets.store import selections as selection_store


def spec(name: str, asset: str, description: str, blocking: bool = True) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking)


def score_range(
    asset: str, values: np.ndarray, low: float, high: float, max_null_rate: float = 0.05
) -> dg.AssetCheckResult:
    """Scores are finite and inside [low, high]; few are missing. A shard with no documents passes."""
    values = np.asarray(values, dtype=np.float64)
    nulls = np.isnan(values)
    finite = values[~nulls]
    out_of_range = int(((finite < low) | (finite > high) | ~np.isfinite(finite)).sum())
    null_rate = float(nulls.mean()) if values.size else 0.0
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name="score_range",
        passed=bool(out_of_range == 0 and null_rate <= max_null_rate),
        metadata={"documents": int(values.size), "out_of_range": out_of_range, "null_rate": round(null_rate, 4),
                  "allowed_range": f"[{low}, {high}]", "max_null_rate": max_null_rate},
    )


def embedding_shape(vectors: np.ndarray, dim: int, tolerance: float = 1e-3) -> dg.AssetCheckResult:
    """Every vector has the embedder's dimension and unit L2 norm. No vectors (an empty shard) passes."""
    if vectors.size == 0:
        return dg.AssetCheckResult(asset_key="embeddings", check_name="unit_norm_and_dimension", passed=True,
                                   metadata={"vectors": 0, "expected_dimension": dim})
    norms = np.linalg.norm(vectors, axis=1) if vectors.size else np.zeros(0)
    bad_norms = int((np.abs(norms - 1.0) > tolerance).sum()) + int((~np.isfinite(norms)).sum())
    return dg.AssetCheckResult(
        asset_key="embeddings",
        check_name="unit_norm_and_dimension",
        passed=bool(vectors.ndim == 2 and vectors.shape[1] == dim and bad_norms == 0),
        metadata={"vectors": int(vectors.shape[0]) if vectors.ndim == 2 else 0,
                  "dimension": int(vectors.shape[1]) if vectors.ndim == 2 else -1,
                  "expected_dimension": dim, "bad_norms": bad_norms},
    )


def sketch_counts_corpus(sketch_docs: int, corpus_docs: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key="density",
        check_name="sketch_counts_every_document",
        passed=sketch_docs == corpus_docs,
        metadata={"sketch_documents": sketch_docs, "corpus_documents": corpus_docs},
    )


def selection_size(sampler: str, rate: float, considered: int, kept: int) -> dg.AssetCheckResult:
    """The selection keeps the samplers' own target size of what it considered (rate honoured exactly)."""
    expected = considered if sampler == "full" else target_size(considered, rate)
    return dg.AssetCheckResult(
        asset_key="selections",
        check_name="size_matches_rate",
        passed=kept == expected and kept > 0,
        metadata={"kept": kept, "expected": expected, "considered": considered, "rate": rate},
    )


def export_readable(path: Path, expected_rows: int) -> dg.AssetCheckResult:
    """The Parquet export opens with polars and pyarrow and holds the kept documents. Both read it
    a batch at a time: the export of the full data is the corpus's text."""
    import pyarrow.parquet as pq

    try:
        rows = sum(frame.height for frame in pl.scan_parquet(path).collect_batches())
        # without pre_buffer: it keeps every row group read so far
        arrow_rows = sum(batch.num_rows for batch in
                         pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=8192))
        problem = None if rows == arrow_rows == expected_rows else f"{rows} rows, expected {expected_rows}"
    except Exception as exc:  # any reader failure is what this check reports
        rows, problem = -1, f"{type(exc).__name__}: {exc}"
    return dg.AssetCheckResult(
        asset_key="selections",
        check_name="export_readable",
        passed=problem is None,
        metadata={"rows": rows, "expected_rows": expected_rows, "problem": problem or "none"},
    )


def no_eval_leak(store: DuckDBStore, selection_id: str) -> dg.AssetCheckResult:
    """No held-out evaluation document (by content hash) is in the selection."""
    with store.connect(read_only=True) as con:
        leaked = selection_store.eval_leaks(con, selection_id)
    return dg.AssetCheckResult(
        asset_key="selections", check_name="no_eval_leak", passed=leaked == 0, metadata={"leaked_documents": leaked}
    )


def loss_decreased(losses: list[float]) -> dg.AssetCheckResult:
    """The mean loss of the last tenth of training is below that of the first tenth."""
    window = max(1, len(losses) // 10)
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    return dg.AssetCheckResult(
        asset_key="checkpoints",
        check_name="loss_decreased",
        passed=bool(np.isfinite(last) and last < first),
        metadata={"first_loss": round(first, 4), "last_loss": round(last, 4), "steps": len(losses)},
    )


def perplexity_sane(rows: list[tuple[str, float, float]]) -> dg.AssetCheckResult:
    """Each (eval_set, ppl, unigram_ppl): ppl is finite and below the unigram baseline."""
    failing = [name for name, ppl, unigram in rows if not (np.isfinite(ppl) and ppl < unigram)]
    return dg.AssetCheckResult(
        asset_key="eval_metrics",
        check_name="perplexity_below_unigram",
        passed=bool(rows) and not failing,
        metadata={"failing_eval_sets": ", ".join(failing) or "none",
                  **{f"{name}": f"{ppl:.2f} vs unigram {unigram:.2f}" for name, ppl, unigram in rows}},
    )

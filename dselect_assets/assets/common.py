"""Small pieces every asset uses: lineage rows, artifact registration, metadata tables.

The SQL behind them is in dselect_assets/store/catalogue.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import duckdb

from dselect_assets.core.markdown import markdown_table as core_markdown_table
from dselect_assets.core.progress import Progress, format_progress, throttled
from dselect_assets.store import catalogue

shards = dg.DynamicPartitionsDefinition(name="shards")

# Every asset that writes the DuckDB catalogue runs in this pool. A deployment whose steps run in
# several processes or pods sets its limit to 1 (deploy/README.md), so the catalogue has one
# writer at a time; the per-shard scoring assets are outside it: they write only their own files.
CATALOGUE_POOL = "dselect_catalogue"


def eager_after_checks() -> dg.AutomationCondition:
    """eager(), held back while any upstream blocking check has failed.

    eager() alone fires as soon as a dependency updates, even when that update
    failed a blocking check; the run machinery stops a child only inside the
    same run. eager() already waits while a dependency is missing or in
    progress, so a burst of shards registered together is selected once.
    """
    return (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
        "eager_after_checks"
    )


# A long step's log gets a progress line this often (and always its first and last).
PROGRESS_EVERY_SECONDS = 15.0


def progress_log(context: dg.AssetExecutionContext, unit: str = "docs", work=None) -> Progress:
    """A progress(done, total, elapsed) callback that writes "done/total, rate, time left" to
    the run's log, throttled so a fast loop does not write a line per batch; `work` as
    format_progress takes it."""
    return throttled(
        lambda done, total, elapsed: context.log.info(format_progress(done, total, elapsed, unit, work)),
        PROGRESS_EVERY_SECONDS)


def partition_key_or_empty(context: dg.AssetExecutionContext) -> str:
    return context.partition_key if context.has_partition_key else ""


def run_row(
    context: dg.AssetExecutionContext,
    config: dict | None = None,
    producer_id: str | None = None,
    outputs: dict | None = None,
) -> dict:
    """This materialization's lineage row (table runs)."""
    return catalogue.run_row(
        context.run.run_id, context.asset_key.to_user_string(), partition_key_or_empty(context), config,
        producer_id, context.assets_def.code_versions_by_key.get(context.asset_key), outputs,
    )


def record_run(
    con: duckdb.DuckDBPyConnection,
    context: dg.AssetExecutionContext,
    config: dict | None = None,
    producer_id: str | None = None,
    outputs: dict | None = None,
) -> None:
    """Upsert this materialization's lineage row (same run re-executed replaces it)."""
    catalogue.insert_run(con, run_row(context, config, producer_id, outputs))


def register_artifact(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    kind: str,
    run_id: str,
    producer_id: str | None = None,
    partition_key: str | None = None,
    n_rows: int | None = None,
    sha256: str | None = None,
) -> str:
    return catalogue.insert_artifact(con, path, kind, run_id, producer_id, partition_key, n_rows, sha256)


def write_atomically(path: Path, write):
    """write(tmp), then rename it to path: a kill mid-write never leaves a partial file under a
    name the store may already point at (re-ingesting the same bytes reuses the name)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        result = write(tmp)
        os.replace(tmp, path)
        return result
    finally:
        tmp.unlink(missing_ok=True)


# Asset metadata tables stay readable in the UI: longer ones are cut.
METADATA_TABLE_ROWS = 50


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], limit: int = METADATA_TABLE_ROWS) -> str:
    """A markdown table for asset metadata; long tables are cut with a count of what was left out."""
    return core_markdown_table(header, rows, limit)

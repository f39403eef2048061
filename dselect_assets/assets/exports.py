"""Selections as the files trainers read: one `selection_exports` partition per selection.

Reads the Parquet export the `selections` asset wrote and, for each document, the shard it
first came from and the metadata fields ingest carried (the documents files), and writes
Parquet or dolma-style `jsonl.zst` / `jsonl.gz` files cut by size, with a manifest
(`dselect_assets/core/selection/export.py`).
"""

import json
import os
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pydantic

from dselect_assets.assets.common import CATALOGUE_POOL, markdown_table, record_run, register_artifact
from dselect_assets.assets.selection import partition_selection_key, selection_partitions
from dselect_assets.core.selection.export import (
    DEFAULT_MAX_BYTES_PER_FILE,
    EXPORT_FORMATS,
    MANIFEST_NAME,
    ExportError,
    write_export,
)
from dselect_assets.resources import DataPaths, DuckDBStore
from dselect_assets.store import selections as selection_store

EXPORT_VERSION = "1"
_BATCH_ROWS = 4096


class ExportConfig(dg.Config):
    format: str = pydantic.Field(default="jsonl.zst", description=f"One of {sorted(EXPORT_FORMATS)}.")
    max_bytes_per_file: int = pydantic.Field(
        default=DEFAULT_MAX_BYTES_PER_FILE,
        description="A file is closed before the document that would take it past this many bytes of "
        "JSON-lines records (uncompressed).",
    )
    out_dir: str = pydantic.Field(
        default="",
        description="Directory to write (e.g. the one a training job reads); '{selection}' and '{format}' "
        "are replaced. Default: $DSELECT_HOME/exports/{selection}/{format}.",
    )


class MissingSelection(RuntimeError):
    pass


def latest_selection(store: DuckDBStore, key: str) -> tuple[str, Path, str]:
    with store.connect(read_only=True) as con:
        row = selection_store.latest_selection(con, key)
    if row is None:
        raise MissingSelection(f"selection {key!r} has not been materialized; materialize selections[{key}] first")
    selection_id, export_path, export_sha = row
    if not Path(export_path).is_file():
        raise MissingSelection(f"selection {key!r}: its export {export_path} is missing; re-materialize it")
    return selection_id, Path(export_path), export_sha


def stage_export_input(store: DuckDBStore, selection_file: Path, staged: Path) -> None:
    """Write to `staged` (Parquet) the selection's rows in its order, with each document's source
    shard and carried metadata; the read-only connection is held only for this, not for the
    slower compression that follows."""
    with store.connect(read_only=True) as con:
        files = [Path(f) for f in selection_store.documents_files(con)]
        with_metadata = [f for f in files if f.is_file() and "metadata" in pq.read_schema(f).names]
        selection_store.stage_export(con, selection_file, staged, with_metadata, staged.parent / "duckdb-spill")


def export_selection(
    store: DuckDBStore, paths: DataPaths, key: str, fmt: str, out_dir: Path,
    max_bytes_per_file: int = DEFAULT_MAX_BYTES_PER_FILE,
) -> dict:
    """Export the newest materialization of selection `key` to out_dir; return the manifest."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {sorted(EXPORT_FORMATS)}")
    selection_id, selection_file, selection_sha = latest_selection(store, key)
    staged = paths.dir("tmp") / f"export-{key}-{os.getpid()}.parquet"
    try:
        stage_export_input(store, selection_file, staged)
        # pre_buffer would keep every row group read so far: the whole selection by the end
        batches = pq.ParquetFile(staged, pre_buffer=False).iter_batches(batch_size=_BATCH_ROWS)
        info = {
            "selection_key": key,
            "selection_id": selection_id,
            "selection_export": str(selection_file),
            "selection_export_sha256": selection_sha,
        }
        return write_export(batches, out_dir, fmt, max_bytes_per_file, info)
    finally:
        staged.unlink(missing_ok=True)


def export_dir(config: ExportConfig, paths: DataPaths, key: str) -> Path:
    template = config.out_dir or str(paths.root / "exports" / "{selection}" / "{format}")
    return Path(template.replace("{selection}", key).replace("{format}", config.format))


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=selection_partitions,
    deps=["selections"],
    group_name="selection",
    code_version=EXPORT_VERSION,
    kinds={"parquet", "json"},
    description="A selection written for a trainer: Parquet or dolma-style jsonl.zst/jsonl.gz "
    "(id, text, source, metadata), cut into files by size, with a manifest of counts, bytes and sha256.",
)
def selection_exports(
    context: dg.AssetExecutionContext, config: ExportConfig, store: DuckDBStore, paths: DataPaths
) -> dg.MaterializeResult:
    key = partition_selection_key(context.partition_key)
    out_dir = export_dir(config, paths, key)
    try:
        manifest = export_selection(store, paths, key, config.format, out_dir, config.max_bytes_per_file)
    except (MissingSelection, ExportError) as exc:
        raise dg.Failure(f"selection_exports[{key}]: {exc}") from exc
    manifest_path = out_dir / MANIFEST_NAME
    outputs = {k: manifest[k] for k in ("format", "n_files", "n_documents", "n_bytes")} | {"out_dir": str(out_dir)}
    with store.transaction() as con:
        for entry in manifest["files"]:
            register_artifact(
                con, out_dir / entry["path"], "selection_export_file", context.run.run_id,
                manifest["selection_id"], key, entry["n_documents"], entry["sha256"],
            )
        manifest_sha = register_artifact(
            con, manifest_path, "selection_export_manifest", context.run.run_id,
            manifest["selection_id"], key, manifest["n_documents"],
        )
        record_run(con, context, config.model_dump(), manifest["selection_id"], outputs=outputs)
    return dg.MaterializeResult(
        metadata={
            "selection_id": manifest["selection_id"],
            "format": manifest["format"],
            "documents": manifest["n_documents"],
            "files": manifest["n_files"],
            "bytes": manifest["n_bytes"],
            "out_dir": dg.MetadataValue.path(str(out_dir)),
            "manifest": dg.MetadataValue.path(str(manifest_path)),
            "file_table": dg.MetadataValue.md(markdown_table(
                ["file", "documents", "bytes", "sha256"],
                [(f["path"], f["n_documents"], f["n_bytes"], f["sha256"][:16]) for f in manifest["files"]],
            )),
            "manifest_json": dg.MetadataValue.json(json.loads(manifest_path.read_text(encoding="utf-8"))
                                                   | {"files": manifest["files"][:20]}),
        },
        data_version=dg.DataVersion(manifest_sha),
    )

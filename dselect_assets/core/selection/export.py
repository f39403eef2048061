"""Write a selection as the files a training job reads: Parquet, or dolma-style JSON lines
compressed with zstd or gzip, cut into files by size, with a manifest beside them.

Layout of an export directory (dolma's: documents under `documents/`):

    out_dir/
      manifest.json                  written last: counts, bytes and sha256 of every file
      documents/part-00000.jsonl.zst one JSON object per line: {"id", "text", "source", "metadata"}
      documents/part-00001.jsonl.zst ...

`metadata` holds the fields carried from the shards (ingest's `metadata_fields`, e.g. url)
and, under `dselect`, the content hash and scores of the document. A Parquet export has
the columns id, text, source, metadata (that JSON object as a string) and the score columns.

Input is a stream of Arrow record batches (id, text and optionally source, metadata as a
JSON string, and any other columns, which go under metadata.dselect), so memory is bounded
by the batch, not the selection. The same input gives byte-identical files (gzip headers
carry no time or name).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.core.hashing import file_sha256

EXPORT_FORMATS = {"parquet": "parquet", "jsonl.zst": "jsonl.zst", "jsonl.gz": "jsonl.gz"}
DEFAULT_MAX_BYTES_PER_FILE = 512 * 1024 * 1024
MANIFEST_NAME = "manifest.json"
DOCUMENTS_DIR = "documents"
_PARQUET_ROWS = 8192


class ExportError(ValueError):
    """The export cannot be written (bad format, a directory holding someone else's files...)."""


@dataclass
class _Part:
    name: str
    tmp: Path
    n_documents: int = 0
    record_bytes: int = 0


class _JsonLinesPart:
    def __init__(self, tmp: Path, fmt: str):
        self._file = open(tmp, "wb")
        if fmt == "jsonl.gz":
            self._stream = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0)
        else:
            self._stream = pa.CompressedOutputStream(self._file, "zstd")

    def write(self, line: bytes, row: dict) -> None:
        self._stream.write(line)

    def close(self) -> None:
        self._stream.close()
        self._file.close()


class _ParquetPart:
    def __init__(self, tmp: Path, schema: pa.Schema):
        self._writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        self._schema, self._rows = schema, []

    def write(self, line: bytes, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= _PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _records(batches: Iterable[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        names = batch.schema.names
        for name in ("id", "text"):
            if name not in names:
                raise ExportError(f"export input has no {name!r} column (columns: {names})")
        yield from batch.to_pylist()


def _dolma(row: dict) -> dict:
    carried = json.loads(row["metadata"]) if row.get("metadata") else {}
    # NaN (an unscorable document) is not JSON; null is.
    extra = {k: None if isinstance(v, float) and v != v else v
             for k, v in row.items() if k not in ("id", "text", "source", "metadata")}
    return {
        "id": row["id"],
        "text": row["text"],
        "source": row.get("source"),
        "metadata": {**carried, "dselect": extra} if extra else carried,
    }


def _parquet_schema(input_schema: pa.Schema | None) -> pa.Schema:
    fields = [pa.field("id", pa.string()), pa.field("text", pa.string()), pa.field("source", pa.string()),
              pa.field("metadata", pa.string())]
    if input_schema is not None:
        fields += [f for f in input_schema if f.name not in ("id", "text", "source", "metadata")]
    return pa.schema(fields)


def _previous_files(out_dir: Path) -> set[str]:
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return set()
    try:
        listed = {f["path"] for f in json.loads(manifest.read_text(encoding="utf-8"))["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{manifest}: not a dselect export manifest ({exc}); choose another directory") from exc
    # Only names directly under documents/ are ever removed, whatever the manifest says.
    return {p for p in listed if isinstance(p, str) and p.count("/") == 1 and p.startswith(f"{DOCUMENTS_DIR}/")
            and not p.endswith(("/.", "/.."))}


def write_export(
    batches: Iterable[pa.RecordBatch],
    out_dir: Path,
    fmt: str,
    max_bytes_per_file: int = DEFAULT_MAX_BYTES_PER_FILE,
    info: dict | None = None,
) -> dict:
    """Write the documents of `batches` under out_dir/documents/ and return the manifest.

    A file is closed before the document that would take its records past
    `max_bytes_per_file` (bytes of the records as JSON lines, before compression: what
    the trainer will read); a single larger document gets a file of its own. Each file
    is written under a hidden temporary name and renamed when complete, and the manifest
    is replaced last, so a job that reads the manifest never sees a half-written export.
    Files that the previous export in the directory listed and this one does not are
    removed; any other file in documents/ makes the export refuse to mix with it.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {sorted(EXPORT_FORMATS)}")
    if max_bytes_per_file <= 0:
        raise ExportError(f"max_bytes_per_file must be positive, got {max_bytes_per_file}")
    out_dir = Path(out_dir)
    documents_dir = out_dir / DOCUMENTS_DIR
    documents_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(out_dir)
    foreign = sorted(
        f"{DOCUMENTS_DIR}/{p.name}" for p in documents_dir.iterdir()
        if not p.name.startswith(".") and f"{DOCUMENTS_DIR}/{p.name}" not in previous
    )
    if foreign:
        raise ExportError(
            f"{documents_dir} holds files no dselect export there wrote ({foreign[:5]}); "
            "a training job reading the directory would mix them in, so choose an empty or dselect-made directory"
        )

    parts: list[_Part] = []
    writer = None
    input_schema: pa.Schema | None = None
    schema: pa.Schema | None = None

    def batches_seen():
        nonlocal input_schema
        for batch in batches:
            input_schema = input_schema or batch.schema
            yield batch

    def open_part() -> None:
        nonlocal writer
        name = f"part-{len(parts):05d}.{EXPORT_FORMATS[fmt]}"
        part = _Part(name, documents_dir / f".{name}.{os.getpid()}.partial")
        parts.append(part)
        writer = _ParquetPart(part.tmp, schema) if fmt == "parquet" else _JsonLinesPart(part.tmp, fmt)

    try:
        for row in _records(batches_seen()):
            record = _dolma(row)
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            if fmt == "parquet":
                if schema is None:
                    schema = _parquet_schema(input_schema)
                out_row = {k: v for k, v in row.items() if k != "metadata"}
                out_row["metadata"] = json.dumps(record["metadata"], ensure_ascii=False)
                out_row["source"] = row.get("source")
            else:
                out_row = None
            part = parts[-1] if parts else None
            if part is None or (part.n_documents and part.record_bytes + len(line) > max_bytes_per_file):
                if writer is not None:
                    writer.close()
                open_part()
                part = parts[-1]
            writer.write(line, out_row)
            part.n_documents += 1
            part.record_bytes += len(line)
        if writer is not None:
            writer.close()
            writer = None
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the original error is the one to report
                pass
        for part in parts:
            part.tmp.unlink(missing_ok=True)
        raise

    files = []
    for part in parts:
        final = documents_dir / part.name
        part.tmp.replace(final)
        files.append({
            "path": f"{DOCUMENTS_DIR}/{part.name}",
            "n_documents": part.n_documents,
            "n_bytes": final.stat().st_size,
            "record_bytes": part.record_bytes,
            "sha256": file_sha256(final),
        })
    manifest = {
        **(info or {}),
        "format": fmt,
        "layout": "dolma documents: id, text, source, metadata" if fmt != "parquet"
        else "parquet: id, text, source, metadata (JSON), scores",
        "max_bytes_per_file": max_bytes_per_file,
        "n_files": len(files),
        "n_documents": sum(f["n_documents"] for f in files),
        "n_bytes": sum(f["n_bytes"] for f in files),
        "files": files,
    }
    tmp_manifest = out_dir / f".{MANIFEST_NAME}.{os.getpid()}.partial"
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp_manifest.replace(out_dir / MANIFEST_NAME)
    for stale in previous - {f["path"] for f in files}:
        (out_dir / stale).unlink(missing_ok=True)
    return manifest


def read_export(out_dir: Path, verify: bool = True) -> Iterator[dict]:
    """The documents of an export, in order, as dolma records; checks each file's sha256 first."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        path = out_dir / entry["path"]
        if verify and file_sha256(path) != entry["sha256"]:
            raise ExportError(f"{path}: sha256 differs from the manifest's; the file changed after the export")
        if manifest["format"] == "parquet":
            for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=_PARQUET_ROWS):
                for row in batch.to_pylist():
                    yield {"id": row["id"], "text": row["text"], "source": row["source"],
                           "metadata": json.loads(row["metadata"])}
            continue
        if manifest["format"] == "jsonl.gz":
            handle = gzip.open(path, "rb")
        else:
            handle = io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path), "rb"), "zstd"))
        with handle:
            for line in handle:
                yield json.loads(line)

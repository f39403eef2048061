"""Read one corpus shard file into validated documents and quarantined rows.

A shard is one file:
- `.jsonl` / `.ndjson`: one JSON object per line with a string `text` and an optional `id`;
- `.parquet`: a `text` column and an optional `id` column;
- `.txt`: plain UTF-8 text whose documents are its blank-line-separated paragraphs.

Every row either becomes a `Document` or a `Rejection` that says what is wrong
with it and where (file, 1-based line/row). One bad row never stops the rest of
the shard. Documents are streamed to a Parquet file in batches, so a shard of
any size is read in bounded memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.core.hashing import content_hash

SHARD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "txt"}
DEFAULT_MAX_DOCUMENT_BYTES = 1_000_000
_EXCERPT_CHARS = 120
_BATCH_ROWS = 2048
_PARAGRAPH_BREAK = re.compile(rb"\n[ \t\r\f\v]*\n")
_UTF8_BOM = b"\xef\xbb\xbf"

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("doc_id", pa.string()),
        ("content_hash", pa.string()),
        ("text", pa.string()),
        ("n_chars", pa.int64()),
        ("n_bytes", pa.int64()),
    ]
)


class ShardReadError(ValueError):
    """The whole file cannot be read (missing, unknown format, no `text` column...)."""


@dataclass(frozen=True)
class Document:
    row_number: int
    doc_id: str
    content_hash: str
    text: str
    n_bytes: int


@dataclass(frozen=True)
class Rejection:
    row_number: int
    reason: str
    excerpt: str = ""
    doc_id: str | None = None


@dataclass
class ShardSummary:
    path: Path
    format: str
    n_rows: int = 0
    n_documents: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def shard_format(path: Path) -> str:
    try:
        return SHARD_SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ShardReadError(
            f"{path}: unsupported shard format {path.suffix!r}; expected one of {sorted(SHARD_SUFFIXES)}"
        ) from None


def _excerpt(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    # Lone surrogates cannot be stored (Arrow, DuckDB); show them escaped.
    raw = raw.encode("utf-8", errors="backslashreplace").decode("utf-8").replace("\n", "\\n")
    return raw[:_EXCERPT_CHARS] + ("…" if len(raw) > _EXCERPT_CHARS else "")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object, bytes]]:
    """Yield (line, parsed-or-error-str-wrapped, raw) for each non-blank line."""
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            stripped = raw.strip()
            if line_number == 1 and stripped.startswith(_UTF8_BOM):
                stripped = stripped[len(_UTF8_BOM):].strip()  # RFC 8259: a reader may ignore a BOM
            if not stripped:
                continue
            try:
                line = stripped.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_number, Rejection(
                    line_number,
                    f"line is not valid UTF-8: byte 0x{stripped[exc.start]:02x} at offset {exc.start}",
                    _excerpt(stripped),
                ), raw
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_number, Rejection(
                    line_number, f"malformed JSON: {exc.msg} (column {exc.colno})", _excerpt(line)
                ), raw
                continue
            except RecursionError:
                yield line_number, Rejection(line_number, "malformed JSON: nested too deeply", _excerpt(line)), raw
                continue
            except ValueError as exc:  # e.g. an integer longer than sys.get_int_max_str_digits()
                yield line_number, Rejection(line_number, f"malformed JSON: {exc}", _excerpt(line)), raw
                continue
            if not isinstance(record, dict):
                yield line_number, Rejection(
                    line_number, f"expected a JSON object, got {type(record).__name__}", _excerpt(line)
                ), raw
                continue
            yield line_number, record, raw


def _parquet_rows(path: Path) -> Iterator[tuple[int, object, bytes]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ShardReadError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise ShardReadError(f"{path}: Parquet file has no 'text' column (columns: {names})")
    columns = ["text"] + (["id"] if "id" in names else [])
    row_number = 0
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns):
        for record in batch.to_pylist():
            row_number += 1
            yield row_number, record, b""


def _txt_rows(path: Path) -> Iterator[tuple[int, object, bytes]]:
    # Paragraph splitting needs the whole file's bytes; plain-text shards are
    # expected to be modest, and JSONL/Parquet are the formats for big shards.
    data = path.read_bytes()
    start, line = 0, 1
    breaks = list(_PARAGRAPH_BREAK.finditer(data))
    for match in [*breaks, None]:
        end = match.start() if match else len(data)
        chunk = data[start:end]
        leading = len(chunk) - len(chunk.lstrip())
        first_line = line + chunk.count(b"\n", 0, leading)
        if chunk.strip():
            try:
                yield first_line, {"text": chunk.decode("utf-8").strip()}, chunk
            except UnicodeDecodeError as exc:
                yield first_line, Rejection(
                    first_line,
                    f"paragraph is not valid UTF-8: byte 0x{chunk[exc.start]:02x} at offset {exc.start}",
                    _excerpt(chunk),
                ), chunk
        if match is not None:
            line += data.count(b"\n", start, match.end())
            start = match.end()


_READERS = {"jsonl": _jsonl_rows, "parquet": _parquet_rows, "txt": _txt_rows}


def read_shard(
    path: Path, max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
) -> Iterator[Document | Rejection]:
    """Validate every row of a shard file, yielding documents and rejections in file order."""
    path = Path(path)
    fmt = shard_format(path)
    if not path.is_file():
        raise ShardReadError(f"{path}: no such file")
    seen_ids: dict[str, int] = {}
    try:
        rows = _READERS[fmt](path)
        for row_number, record, raw in rows:
            if isinstance(record, Rejection):
                yield record
                continue
            yield _validate(record, row_number, path, seen_ids, max_document_bytes)
    except PermissionError as exc:
        raise ShardReadError(f"{path}: cannot be read: {exc.strerror}") from exc
    except OSError as exc:
        raise ShardReadError(f"{path}: cannot be read: {exc}") from exc


def _is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate(
    record: dict, row_number: int, path: Path, seen_ids: dict[str, int], max_document_bytes: int
) -> Document | Rejection:
    raw_id = record.get("id")
    doc_id = None if raw_id is None else str(raw_id)
    if doc_id is not None and not _is_valid_unicode(doc_id):
        return Rejection(row_number, "'id' contains unpaired surrogates (not valid Unicode)", _excerpt(doc_id))
    if "text" not in record:
        return Rejection(row_number, "missing 'text' field", _excerpt(json.dumps(record)[:200]), doc_id)
    text = record["text"]
    if text is None:
        return Rejection(row_number, "'text' is null", "", doc_id)
    if not isinstance(text, str):
        return Rejection(
            row_number, f"'text' must be a string, got {type(text).__name__}", _excerpt(str(text)), doc_id
        )
    if not text.strip():
        return Rejection(row_number, "empty or whitespace-only text", _excerpt(text), doc_id)
    if "\x00" in text:
        return Rejection(row_number, "text contains NUL characters (binary data?)", _excerpt(text), doc_id)
    n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
    if n_bytes > max_document_bytes:
        return Rejection(
            row_number,
            f"document is {n_bytes:,} bytes, over the {max_document_bytes:,}-byte limit "
            "(raise max_document_bytes to accept it)",
            _excerpt(text),
            doc_id,
        )
    if not _is_valid_unicode(text):
        return Rejection(row_number, "text contains unpaired surrogates (not valid Unicode)", "", doc_id)
    if doc_id is None:
        doc_id = f"{path.name}:{row_number}"
    if doc_id in seen_ids:
        return Rejection(
            row_number, f"duplicate id {doc_id!r} (first seen at row {seen_ids[doc_id]})", _excerpt(text), doc_id
        )
    seen_ids[doc_id] = row_number
    return Document(row_number, doc_id, content_hash(text), text, n_bytes)


def write_documents(
    path: Path,
    out_file: Path,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
) -> ShardSummary:
    """Stream a shard's accepted documents into `out_file` (Parquet) and collect rejections.

    Writes to a temporary name and renames at the end, so a crash never leaves
    a half-written documents file behind.
    """
    path = Path(path)
    summary = ShardSummary(path=path, format=shard_format(path))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = out_file.with_name(out_file.name + ".partial")
    batch: list[Document] = []
    writer = pq.ParquetWriter(tmp_file, DOCUMENTS_SCHEMA, compression="zstd")
    try:
        for item in read_shard(path, max_document_bytes):
            summary.n_rows += 1
            if isinstance(item, Rejection):
                summary.rejections.append(item)
                continue
            summary.n_documents += 1
            batch.append(item)
            if len(batch) >= _BATCH_ROWS:
                writer.write_table(_to_table(batch))
                batch = []
        if batch:
            writer.write_table(_to_table(batch))
    except BaseException:
        writer.close()
        tmp_file.unlink(missing_ok=True)
        raise
    writer.close()
    tmp_file.replace(out_file)
    return summary


def _to_table(batch: list[Document]) -> pa.Table:
    return pa.table(
        {
            "row_number": [d.row_number for d in batch],
            "doc_id": [d.doc_id for d in batch],
            "content_hash": [d.content_hash for d in batch],
            "text": [d.text for d in batch],
            "n_chars": [len(d.text) for d in batch],
            "n_bytes": [d.n_bytes for d in batch],
        },
        schema=DOCUMENTS_SCHEMA,
    )

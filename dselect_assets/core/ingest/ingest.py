"""Read one corpus shard file into validated documents and quarantined rows.

A shard is one file:
- JSON lines, one object per line: `.jsonl` / `.ndjson`, and the same gzip- or
  zstd-compressed (`.jsonl.gz`, `.json.gz`, `.ndjson.gz`, `.jsonl.zst`, `.json.zst`,
  `.ndjson.zst`, `.jsonl.zstd`, `.json.zstd`: C4 and dolma ship `.json.gz`, RedPajama `.jsonl.zst`);
- `.parquet` with any codec pyarrow reads (FineWeb);
- `.arrow`: an Arrow IPC stream or file, e.g. one `data-0000x-of-0000N.arrow` of a Hugging Face
  dataset saved with `save_to_disk` (see `hf_dataset_arrow_files`);
- `.txt`: plain UTF-8 text whose documents are its blank-line-separated paragraphs.

Which field holds the text, which the id, and which fields ride along to the exports as
metadata is a `FieldMap` (dotted paths reach into nested JSON objects and Arrow structs).

Every row either becomes a `Document` or a `Rejection` that says what is wrong
with it and where (file, 1-based line/row). One bad row never stops the rest of
the shard; a compressed stream that breaks off (truncated download, corrupt
frame) keeps the documents before the break and quarantines the rest as one row
that names the line. Compressed files are decompressed as they are read, never to
disk, and documents are streamed to a Parquet file in batches, so a shard of any
size is read in bounded memory.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.core.hashing import content_hash

# Longest suffix first, so `x.json.gz` is gzip JSON lines and not an unknown `.gz`.
SHARD_SUFFIXES = {
    ".jsonl.gz": "jsonl.gz", ".json.gz": "jsonl.gz", ".ndjson.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst", ".json.zst": "jsonl.zst", ".ndjson.zst": "jsonl.zst",
    ".jsonl.zstd": "jsonl.zst", ".json.zstd": "jsonl.zst",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".arrow": "arrow", ".txt": "txt",
}
_SUFFIXES_LONGEST_FIRST = sorted(SHARD_SUFFIXES, key=len, reverse=True)
DEFAULT_MAX_DOCUMENT_BYTES = 1_000_000
_EXCERPT_CHARS = 120
_BATCH_ROWS = 2048
# A configured field that none of this many leading rows has is a wrong name, not sparse data.
FIELD_PROBE_ROWS = 1000
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
        # JSON object of the FieldMap's metadata fields (null when none are configured).
        ("metadata", pa.string()),
    ]
)


class ShardReadError(ValueError):
    """The whole file cannot be read (missing, unknown format, no `text` column...)."""


@dataclass(frozen=True)
class FieldMap:
    """Where a shard keeps its text, its id and the metadata to carry to the exports.

    Each is a dotted path (`meta.url`); a key that itself contains dots is matched
    whole first. `strict` names the fields that were configured by hand: one that no
    leading row (JSON) or no column (Parquet/Arrow) has is an error naming the fields
    the file does have. The defaults stay lenient: a row without `id` gets
    `<shard>:<row>`, as it always has.
    """

    text: str = "text"
    id: str = "id"
    metadata: tuple[str, ...] = ()
    strict: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (self.text, self.id, *self.metadata):
            if not isinstance(name, str) or not name or name.startswith(".") or name.endswith("."):
                raise ShardReadError(f"field path {name!r} is not a field name or a dotted path such as 'meta.url'")
        object.__setattr__(self, "metadata", tuple(self.metadata))
        object.__setattr__(self, "strict", frozenset(self.strict))

    def required(self) -> list[tuple[str, str]]:
        """(role, path) of every field whose absence from the whole file is an error."""
        roles = [("text", self.text), ("id", self.id)] + [("metadata", m) for m in self.metadata]
        return [(role, path) for role, path in roles if role == "metadata" or path in self.strict]

    def as_dict(self) -> dict:
        return {"text_field": self.text, "id_field": self.id, "metadata_fields": list(self.metadata)}


DEFAULT_FIELDS = FieldMap()


@dataclass(frozen=True)
class Document:
    row_number: int
    doc_id: str
    content_hash: str
    text: str
    n_bytes: int
    metadata: str | None = None


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
    fields: dict = field(default_factory=dict)


def shard_format_or_none(path: Path) -> str | None:
    name = Path(path).name.lower()
    for suffix in _SUFFIXES_LONGEST_FIRST:
        if name.endswith(suffix) and len(name) > len(suffix):
            return SHARD_SUFFIXES[suffix]
    return None


def shard_format(path: Path) -> str:
    fmt = shard_format_or_none(path)
    if fmt is None:
        raise ShardReadError(
            f"{path}: unsupported shard format {''.join(Path(path).suffixes[-2:])!r}; "
            f"expected one of {sorted(SHARD_SUFFIXES)}"
        )
    return fmt


def hf_dataset_arrow_files(directory: Path) -> list[Path]:
    """The Arrow files of a Hugging Face dataset saved with `save_to_disk`, in split order.

    `save_to_disk` writes `state.json` (whose `_data_files` lists the Arrow IPC stream
    files, `data-00000-of-0000N.arrow`) and `dataset_info.json`; a DatasetDict writes
    `dataset_dict.json` naming its splits, one such directory each. Anything else: [].
    """
    directory = Path(directory)
    if (directory / "dataset_dict.json").is_file():
        try:
            splits = json.loads((directory / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [f for split in splits if isinstance(split, str) and "/" not in split and split not in (".", "..")
                for f in hf_dataset_arrow_files(directory / split)]
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    # A state.json naming files outside its directory is not followed.
    return [directory / n for n in names if isinstance(n, str) and Path(n).name == n and (directory / n).is_file()]


def _excerpt(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    # Lone surrogates cannot be stored (Arrow, DuckDB); show them escaped.
    raw = raw.encode("utf-8", errors="backslashreplace").decode("utf-8").replace("\n", "\\n")
    return raw[:_EXCERPT_CHARS] + ("…" if len(raw) > _EXCERPT_CHARS else "")


_MISSING = object()


def lookup(record: dict, path: str):
    """The value at a dotted path, or _MISSING; a key spelled with the dots wins over nesting."""
    if path in record:
        return record[path]
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _field_names(record: dict, prefix: str = "", depth: int = 3) -> list[str]:
    names = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        names.append(name)
        if isinstance(value, dict) and depth > 1:
            names += _field_names(value, name + ".", depth - 1)
    return names


def _shown(names: list[str], limit: int = 40) -> str:
    return str(names[:limit])[:-1] + (f", … {len(names) - limit} more]" if len(names) > limit else "]")


class _StreamBroken(Exception):
    """The decompressor (or Arrow reader) failed mid-file; carries what to say about it."""


def _open_lines(path: Path, fmt: str):
    if fmt == "jsonl.gz":
        return gzip.open(path, "rb")  # handles multi-member files (`cat a.gz b.gz`)
    if fmt == "jsonl.zst":
        return io.BufferedReader(_ZstdReader(path), buffer_size=_ZSTD_READ)
    return open(path, "rb")


_ZSTD_READ = 1 << 16


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a zstd file, streamed (pyarrow's reader: concatenated frames, checksums).

    pyarrow raises on a truncated or corrupt stream without handing over what it had
    decoded in that read, so on the first failure the stream is reopened, the bytes
    already delivered are skipped, and the rest is read one byte at a time: every byte
    that decodes before the break reaches the caller, then the error does.
    """

    def __init__(self, path: Path):
        self._path, self._delivered, self._careful = path, 0, False
        self._stream = self._open()

    def _open(self):
        return pa.CompressedInputStream(pa.OSFile(str(self._path), "rb"), "zstd")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(1 if self._careful else len(buffer))
        except OSError as exc:
            if self._careful or not _is_truncation(exc):
                raise
            self._stream.close()
            self._stream, self._careful = self._open(), True
            skipped = 0
            while skipped < self._delivered:
                skipped += len(self._stream.read(min(_ZSTD_READ, self._delivered - skipped)))
            return self.readinto(buffer)
        buffer[: len(data)] = data
        self._delivered += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _codec(fmt: str) -> str:
    return {"jsonl.gz": "gzip", "jsonl.zst": "zstd"}.get(fmt, "")


def _lines(path: Path, fmt: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line); a compressed stream that breaks raises _StreamBroken."""
    line_number = 0
    with _open_lines(path, fmt) as handle:
        iterator = iter(handle)
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except PermissionError:
                raise
            except (EOFError, zlib.error, OSError) as exc:  # gzip: EOFError/BadGzipFile/zlib; zstd: OSError
                codec = _codec(fmt)
                if not codec:
                    raise
                if line_number == 0:
                    raise ShardReadError(f"{path}: not a readable {codec} stream (failed before line 1: {exc})") from exc
                if _is_truncation(exc):
                    raise _StreamBroken(
                        line_number + 1,
                        f"{codec} stream is truncated after line {line_number} ({exc}); "
                        f"line {line_number + 1} onwards could not be read",
                    ) from exc
                # A checksum or decode failure is found after the damage, not at it: the lines
                # decoded before it may be damaged too, so none of them is stored.
                raise ShardReadError(
                    f"{path}: {codec} stream is corrupt, detected after line {line_number} ({exc}); "
                    "the lines decoded before it cannot be trusted, so nothing of this file was stored"
                ) from exc
            line_number += 1
            yield line_number, raw


def _is_truncation(exc: BaseException) -> bool:
    """A stream that stops early (a cut-off download): everything decoded before it is intact.

    Also a gzip file with something other than a gzip member after a complete one: each
    member's CRC was checked when it ended, so the lines before are verified.
    """
    if isinstance(exc, EOFError):
        return True
    message = str(exc)
    return "Truncated compressed stream" in message or (
        isinstance(exc, gzip.BadGzipFile) and message.startswith("Not a gzipped file")
    )


def _jsonl_rows(path: Path, fmt: str, fields: FieldMap) -> Iterator[tuple[int, object, bytes]]:
    """Yield (line, parsed-or-Rejection, raw) for each non-blank line."""
    for line_number, raw in _lines(path, fmt):
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


def _schema_paths(schema: pa.Schema) -> list[str]:
    def walk(fields, prefix):
        for f in fields:
            yield prefix + f.name
            if pa.types.is_struct(f.type):
                yield from walk(list(f.type), prefix + f.name + ".")
    return list(walk(list(schema), ""))


def _columns_for(path: Path, kind: str, schema: pa.Schema, fields: FieldMap) -> list[str]:
    """Top-level columns to read; a field the schema cannot have fails naming the columns."""
    available = set(_schema_paths(schema))
    names = schema.names
    needed: list[str] = []
    for role, name in [("text", fields.text), ("id", fields.id)] + [("metadata", m) for m in fields.metadata]:
        if name in available:
            root = name if name in names else name.split(".")[0]
        elif role == "id" and name not in fields.strict:
            continue  # optional default id column
        else:
            what = "" if role == "text" and name == "text" else f" ({role} field)"
            raise ShardReadError(
                f"{path}: {kind} file has no {name!r} column{what} (columns: {_shown(_schema_paths(schema))})"
            )
        if root not in needed:
            needed.append(root)
    return needed


def _batch_rows(batches, path: Path, kind: str) -> Iterator[tuple[int, object, bytes]]:
    row_number = 0
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            if isinstance(exc, PermissionError):
                raise
            if row_number == 0:
                raise ShardReadError(f"{path}: not a readable {kind} file: {exc}") from exc
            raise _StreamBroken(
                row_number + 1,
                f"{kind} data is truncated or corrupt after row {row_number} ({exc}); "
                f"row {row_number + 1} onwards could not be read",
            ) from exc
        for start in range(0, batch.num_rows, _BATCH_ROWS):
            for record in batch.slice(start, _BATCH_ROWS).to_pylist():
                row_number += 1
                yield row_number, record, b""


def _parquet_rows(path: Path, fmt: str, fields: FieldMap) -> Iterator[tuple[int, object, bytes]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ShardReadError(f"{path}: not a readable Parquet file: {exc}") from exc
    columns = _columns_for(path, "Parquet", parquet.schema_arrow, fields)
    yield from _batch_rows(parquet.iter_batches(batch_size=_BATCH_ROWS, columns=columns), path, "Parquet")


def _arrow_rows(path: Path, fmt: str, fields: FieldMap) -> Iterator[tuple[int, object, bytes]]:
    # Hugging Face writes the IPC *stream* format; Feather v2 / `pa.ipc.new_file` the file format.
    try:
        source = pa.OSFile(str(path), "rb")
        reader = pa.ipc.open_stream(source)
        schema, batches = reader.schema, reader
    except pa.ArrowInvalid:
        try:
            ipc_file = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        except pa.ArrowInvalid as exc:
            raise ShardReadError(f"{path}: not a readable Arrow IPC stream or file: {exc}") from exc
        schema = ipc_file.schema
        batches = (ipc_file.get_batch(i) for i in range(ipc_file.num_record_batches))
    columns = _columns_for(path, "Arrow", schema, fields)
    yield from _batch_rows((b.select(columns) for b in batches), path, "Arrow")


def _txt_rows(path: Path, fmt: str, fields: FieldMap) -> Iterator[tuple[int, object, bytes]]:
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
                yield first_line, {fields.text: chunk.decode("utf-8").strip()}, chunk
            except UnicodeDecodeError as exc:
                yield first_line, Rejection(
                    first_line,
                    f"paragraph is not valid UTF-8: byte 0x{chunk[exc.start]:02x} at offset {exc.start}",
                    _excerpt(chunk),
                ), chunk
        if match is not None:
            line += data.count(b"\n", start, match.end())
            start = match.end()


_READERS = {
    "jsonl": _jsonl_rows, "jsonl.gz": _jsonl_rows, "jsonl.zst": _jsonl_rows,
    "parquet": _parquet_rows, "arrow": _arrow_rows, "txt": _txt_rows,
}


class _FieldProbe:
    """Notices a configured JSON field that no leading row has: a wrong name, said once, early."""

    def __init__(self, path: Path, fields: FieldMap):
        self.path, self.required = path, fields.required()
        self.unseen = {name for _, name in self.required}
        self.rows, self.first_line, self.first_fields = 0, None, []

    def see(self, line_number: int, record: dict) -> None:
        if not self.unseen:
            return
        if self.first_line is None:
            self.first_line, self.first_fields = line_number, _field_names(record)
        self.unseen = {name for name in self.unseen if lookup(record, name) is _MISSING}
        self.rows += 1
        if self.rows >= FIELD_PROBE_ROWS:
            self.finish()

    def finish(self) -> None:
        if not self.unseen or self.first_line is None:
            return
        missing = [f"{name!r} ({role} field)" for role, name in self.required if name in self.unseen]
        raise ShardReadError(
            f"{self.path}: no row among the first {self.rows} has {', '.join(missing)}; "
            f"line {self.first_line} has the fields {_shown(self.first_fields)}"
        )


def read_shard(
    path: Path,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    fields: FieldMap = DEFAULT_FIELDS,
    shard_name: str | None = None,
) -> Iterator[Document | Rejection]:
    """Validate every row of a shard file, yielding documents and rejections in file order.

    `shard_name` (default: the file name) prefixes the ids made up for rows without one.
    """
    path = Path(path)
    fmt = shard_format(path)
    if not path.is_file():
        raise ShardReadError(f"{path}: no such file")
    seen_ids: dict[str, int] = {}
    probe = _FieldProbe(path, fields) if fmt in ("jsonl", "jsonl.gz", "jsonl.zst") else None
    name = shard_name or path.name
    try:
        for row_number, record, raw in _READERS[fmt](path, fmt, fields):
            if isinstance(record, Rejection):
                yield record
                continue
            if probe is not None:
                probe.see(row_number, record)
            yield _validate(record, row_number, name, fields, seen_ids, max_document_bytes)
        if probe is not None:
            probe.finish()
    except _StreamBroken as broken:
        row_number, reason = broken.args
        if probe is not None:
            probe.finish()
        yield Rejection(row_number, reason)
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


def _metadata_json(record: dict, fields: FieldMap) -> str | None:
    if not fields.metadata:
        return None
    values = {}
    for name in fields.metadata:
        value = lookup(record, name)
        values[name] = None if value is _MISSING else value
    # default=str: Parquet timestamps, decimals and bytes become their text form.
    encoded = json.dumps(values, ensure_ascii=False, default=str)
    return encoded if _is_valid_unicode(encoded) else json.dumps(values, default=str)


def _validate(
    record: dict, row_number: int, shard_name: str, fields: FieldMap, seen_ids: dict[str, int],
    max_document_bytes: int,
) -> Document | Rejection:
    raw_id = lookup(record, fields.id)
    doc_id = None if raw_id is None or raw_id is _MISSING else str(raw_id)
    id_label, text_label = repr(fields.id), repr(fields.text)
    if doc_id is not None and not _is_valid_unicode(doc_id):
        return Rejection(row_number, f"{id_label} contains unpaired surrogates (not valid Unicode)", _excerpt(doc_id))
    text = lookup(record, fields.text)
    if text is _MISSING:
        return Rejection(
            row_number, f"missing {text_label} field", _excerpt(json.dumps(record, default=str)[:200]), doc_id
        )
    if text is None:
        return Rejection(row_number, f"{text_label} is null", "", doc_id)
    if not isinstance(text, str):
        return Rejection(
            row_number, f"{text_label} must be a string, got {type(text).__name__}", _excerpt(str(text)), doc_id
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
        doc_id = f"{shard_name}:{row_number}"
    if doc_id in seen_ids:
        return Rejection(
            row_number, f"duplicate id {doc_id!r} (first seen at row {seen_ids[doc_id]})", _excerpt(text), doc_id
        )
    seen_ids[doc_id] = row_number
    return Document(row_number, doc_id, content_hash(text), text, n_bytes, _metadata_json(record, fields))


def write_documents(
    path: Path,
    out_file: Path,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    fields: FieldMap = DEFAULT_FIELDS,
    shard_name: str | None = None,
) -> ShardSummary:
    """Stream a shard's accepted documents into `out_file` (Parquet) and collect rejections.

    Writes to a temporary name and renames at the end, so a crash never leaves
    a half-written documents file behind. The field map is kept in the file's
    schema metadata, so the documents file says how it was read.
    """
    path = Path(path)
    summary = ShardSummary(path=path, format=shard_format(path), fields=fields.as_dict())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = out_file.with_name(out_file.name + ".partial")
    batch: list[Document] = []
    schema = DOCUMENTS_SCHEMA.with_metadata({"dselect.fields": json.dumps(fields.as_dict(), sort_keys=True)})
    writer = pq.ParquetWriter(tmp_file, schema, compression="zstd")
    try:
        for item in read_shard(path, max_document_bytes, fields, shard_name):
            summary.n_rows += 1
            if isinstance(item, Rejection):
                summary.rejections.append(item)
                continue
            summary.n_documents += 1
            batch.append(item)
            if len(batch) >= _BATCH_ROWS:
                writer.write_table(_to_table(batch, schema))
                batch = []
        if batch:
            writer.write_table(_to_table(batch, schema))
    except BaseException:
        writer.close()
        tmp_file.unlink(missing_ok=True)
        raise
    writer.close()
    tmp_file.replace(out_file)
    return summary


def _to_table(batch: list[Document], schema: pa.Schema = DOCUMENTS_SCHEMA) -> pa.Table:
    return pa.table(
        {
            "row_number": [d.row_number for d in batch],
            "doc_id": [d.doc_id for d in batch],
            "content_hash": [d.content_hash for d in batch],
            "text": [d.text for d in batch],
            "n_chars": [len(d.text) for d in batch],
            "n_bytes": [d.n_bytes for d in batch],
            "metadata": [d.metadata for d in batch],
        },
        schema=schema,
    )


# ------------------------------------------------------------------ field maps from configuration

FIELDS_FILE_NAME = "fields.toml"
_RULE_KEYS = {"match", "text_field", "id_field", "metadata_fields"}


def fields_file_rule(fields_file: Path, shard: str) -> dict:
    """The first `[[shard]]` rule of a TOML fields file whose `match` glob matches `shard`, or {}.

    ```toml
    [[shard]]
    match = "c4-*.json.gz"
    metadata_fields = ["url", "timestamp"]
    ```
    """
    import fnmatch
    import tomllib

    try:
        rules = tomllib.loads(Path(fields_file).read_text(encoding="utf-8")).get("shard", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ShardReadError(f"fields file {fields_file}: cannot be read: {exc}") from exc
    if not isinstance(rules, list):
        raise ShardReadError(f"fields file {fields_file}: 'shard' must be an array of tables ([[shard]])")
    for i, rule in enumerate(rules, start=1):
        unknown = set(rule) - _RULE_KEYS if isinstance(rule, dict) else {"<not a table>"}
        if unknown or not isinstance(rule.get("match"), str):
            raise ShardReadError(
                f"fields file {fields_file}: rule {i} needs a string 'match' and only the keys "
                f"{sorted(_RULE_KEYS)} (unknown: {sorted(unknown)})"
            )
        if fnmatch.fnmatchcase(shard, rule["match"]):
            return {k: v for k, v in rule.items() if k != "match"}
    return {}


def resolve_fields(
    shard: str,
    text_field: str | None = None,
    id_field: str | None = None,
    metadata_fields: list[str] | None = None,
    fields_file: Path | None = None,
) -> FieldMap:
    """The field map of one shard: explicit values first, then the fields file's rule, then defaults.

    Whatever was given (here or by the file) is strict: a name the file lacks is an error.
    """
    rule = fields_file_rule(fields_file, shard) if fields_file is not None and Path(fields_file).is_file() else {}
    chosen = {
        "text_field": text_field if text_field is not None else rule.get("text_field"),
        "id_field": id_field if id_field is not None else rule.get("id_field"),
        "metadata_fields": metadata_fields if metadata_fields is not None else rule.get("metadata_fields"),
    }
    if chosen["metadata_fields"] is not None and (
        not isinstance(chosen["metadata_fields"], list) or not all(isinstance(m, str) for m in chosen["metadata_fields"])
    ):
        raise ShardReadError(f"metadata_fields must be a list of field names, got {chosen['metadata_fields']!r}")
    for key in ("text_field", "id_field"):
        if chosen[key] is not None and not isinstance(chosen[key], str):
            raise ShardReadError(f"{key} must be a field name, got {chosen[key]!r}")
    text = chosen["text_field"] or DEFAULT_FIELDS.text
    doc_id = chosen["id_field"] or DEFAULT_FIELDS.id
    strict = {name for key, name in (("text_field", text), ("id_field", doc_id)) if chosen[key]}
    return FieldMap(text=text, id=doc_id, metadata=tuple(chosen["metadata_fields"] or ()), strict=frozenset(strict))

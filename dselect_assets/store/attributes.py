"""Attribute files: a producer's per-document results as Parquet files, one directory per shard.

Layout: `<attributes>/<producer id>/<shard>/<chunk>.parquet` (a producer id is `kind:<16 hex>`; the
directory is named by it verbatim, so a listing says whose files these are). A file holds `hash` (the first 16 bytes of the document's sha256 content
hash, FIXED_SIZE_BINARY(16)) and the value columns of the producer's kind (VALUE_COLUMNS). Each
chunk is written to a temporary name and renamed, so a killed run loses only the chunk in flight
and a reader never sees part of a file. A text found in several shards is computed once: the
missing work of a shard is its texts with no row in *any* file of the producer. Two workers
scoring shards that share a text at the same moment may both write it; readers take either row
(the producer id pins everything that changes the value, so they are equal).

Corpus-wide results replaced as a whole (density) live in the one file
`<producer id>/.all/values.parquet` (`.all` is no shard key: keys never start with a dot).

Embeddings keep their vectors in an .npy file beside each chunk's Parquet file of hashes
(write_vectors says why), as float16 (VECTOR_DTYPE). DuckDB is the query engine over these files (`read_parquet` over the producer's glob), from the
catalogue connection or from an in-memory connection (`duckdb.connect()`) that never opens the
catalogue file, which is what scoring workers use.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.core.hashing import hash_characters
from dselect_assets.store.errors import CorruptFile, MissingUpstream
from dselect_assets.store.sql_text import literal

HASH_BYTES = 16
# Vectors are stored as float16: half the bytes of float32 for every stage that reads them all
# (7.4 GB against 15 GB at 10M documents of 384 dimensions). Rounding moves a unit vector's
# components by at most 6.7e-5; on 3,000 default corpus documents the density ranks kept a
# Spearman of 0.9997 and SemDeDup, Prototypes and the k-means assignment were unchanged
# (benchmarks/bench_vector_precision.py). Readers take float32 files (older stores) as well.
VECTOR_DTYPE = np.dtype(np.float16)
CORPUS_WIDE = ".all"
CATALOGUE_DIR = "_catalogue"  # records for the catalogue (catalogue.py); no producer dir starts with '_'
PROBLEM_UNSCORABLE = "could not be scored (tokenizes to too few tokens)"

# Value columns by producer kind (the part of the producer id before ':'); embeddings have `vector`.
VALUE_COLUMNS = {
    "ask_llm": ("value", "value_norm", "problem"),
    "ask_llm_distilled": ("value", "value_norm", "problem"),
    "perplexity": ("value", "problem"),
    "density": ("value",),
    "embedding": (),  # the vectors are in an .npy beside each hash file (write_vectors)
    # one corpus-wide file per clustering (assets/density.py clusters)
    "kmeans": ("cluster", "part", "distance"),
}
NOT_SCORES = ("embedding", "kmeans")  # kinds the scores view leaves out
_TYPES = {"value": pa.float64(), "value_norm": pa.float64(), "problem": pa.string()}


def key_sql(column: str) -> str:
    """SQL for the 16-byte key of a 64-hex content hash column (what attribute files store)."""
    return f"unhex(left({column}, {2 * HASH_BYTES}))"


def as_strings(hex_hashes) -> pa.StringArray:
    """Content hashes as one Arrow string array, from a list, a Series' Arrow array or a chunked array."""
    if isinstance(hex_hashes, pa.ChunkedArray):
        hex_hashes = hex_hashes.combine_chunks()
    if not isinstance(hex_hashes, pa.Array):
        hex_hashes = pa.array(list(hex_hashes), pa.string())
    return hex_hashes.cast(pa.string())


def hash_keys(hex_hashes) -> pa.FixedSizeBinaryArray:
    """The 16-byte keys of 64-hex content hashes, decoded from the Arrow buffer in one call."""
    hashes = as_strings(hex_hashes)
    n = len(hashes)
    chars = hash_characters(hashes)
    if chars is not None:
        raw = bytes.fromhex(chars[:, : 2 * HASH_BYTES].tobytes().decode("ascii"))
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(HASH_BYTES), n, [None, pa.py_buffer(raw)])
    return pa.array([bytes.fromhex(h[: 2 * HASH_BYTES]) for h in hashes.to_pylist()], pa.binary(HASH_BYTES))


def kind_of(producer: str) -> str:
    return producer.split(":", 1)[0]


def producer_dir(root: Path, producer: str) -> Path:
    if "/" in producer or producer.startswith((".", "_")) or not producer:
        raise ValueError(f"producer id {producer!r} cannot name a directory of attribute files")
    return Path(root) / producer


def producer_glob(root: Path, producer: str) -> str | None:
    """The glob of every attribute file of `producer`, or None while it has none."""
    pattern = str(producer_dir(root, producer) / "*" / "*.parquet")
    return pattern if next(glob.iglob(pattern, include_hidden=True), None) is not None else None


def producers_on_disk(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and not d.name.startswith(("_", ".")) and producer_glob(root, d.name))


def _write_atomically(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _chunk_name(keys: pa.Array) -> str:
    """Named by the texts it holds, so a re-run of the same chunk replaces rather than duplicates."""
    return hashlib.sha256(b"".join(keys.to_pylist())).hexdigest()[:32] + ".parquet"


def score_table(producer: str, hex_hashes, value: np.ndarray,
                value_norm: np.ndarray | None = None) -> pa.Table:
    """The attribute table of `producer`'s kind; NaN values are stored as null with the reason."""
    value = np.asarray(value, dtype=np.float64)
    unscorable = np.isnan(value)
    norm = np.full(len(value), np.nan) if value_norm is None else np.asarray(value_norm, dtype=np.float64)
    columns = {
        "value": pa.array(value, mask=unscorable),
        "value_norm": pa.array(norm, mask=np.isnan(norm)),
        "problem": pa.array(np.where(unscorable, PROBLEM_UNSCORABLE, None).tolist(), pa.string()),
    }
    wanted = VALUE_COLUMNS.get(kind_of(producer), ("value", "value_norm", "problem"))
    return pa.table({"hash": hash_keys(hex_hashes), **{c: columns[c] for c in wanted}})


def _save_npy_atomically(vectors: np.ndarray, path: Path) -> None:
    if vectors.dtype not in (np.float16, np.float32):
        raise ValueError(f"vectors are stored as float16 or float32, got {vectors.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, np.ascontiguousarray(vectors))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_vectors(root: Path, producer: str, shard: str, hex_hashes, vectors: np.ndarray,
                  dtype: np.dtype = VECTOR_DTYPE) -> Path:
    """Write one chunk of embeddings: the vectors as `<chunk>.npy` (rounded to `dtype`), then the hash
    file `<chunk>.parquet` (row i of one is row i of the other). The hash file is the commit: readers
    list hash files, so a kill between the two leaves only an .npy nobody reads, replaced by the
    re-run of the chunk.

    .npy rather than a FIXED_SIZE_LIST column: read 13x faster whole and 4.5x faster for a wanted
    half of a shard (benchmarks/bench_attributes.py), for 7% more bytes than zstd Parquet."""
    keys = hash_keys(hex_hashes)
    path = producer_dir(root, producer) / shard / _chunk_name(keys)
    _save_npy_atomically(np.asarray(vectors).astype(dtype, copy=False), path.with_suffix(".npy"))
    return _write_atomically(pa.table({"hash": keys}), path)


def write_chunk(root: Path, producer: str, shard: str, table: pa.Table) -> Path:
    """Write one chunk of `producer`'s results for `shard`, atomically."""
    return _write_atomically(table, producer_dir(root, producer) / shard / _chunk_name(table["hash"].combine_chunks()))


def replace_corpus_wide(root: Path, producer: str, tables: Iterable[pa.Table]) -> Path:
    """Write a corpus-wide result as one file, batch by batch, then swap it in: a reader sees the
    previous file or the new one, whole, and memory holds one batch at a time."""
    path = producer_dir(root, producer) / CORPUS_WIDE / "values.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:
            raise ValueError(f"{path}: no rows to write")
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return path


_FILE_IN_MESSAGE = re.compile(r"""["']([^"']+\.parquet)["']""")


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list, what: str, producer: str):
    try:
        return con.sql(sql, params=params).to_arrow_table()
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        found = _FILE_IN_MESSAGE.search(str(exc))
        where = found.group(1) if found else f"an attribute file of {producer}"
        raise CorruptFile(
            f"{where}: unreadable {what} file ({type(exc).__name__}: {exc}); delete it and re-materialize "
            f"{'embeddings' if what == 'embedding' else what + ' scores'} for its shard: the documents it held "
            "are then computed again"
        ) from exc


def _wanted(con: duckdb.DuckDBPyConnection, hex_hashes) -> str:
    con.register("_wanted_hashes", pa.table({"content_hash": as_strings(hex_hashes)}))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _wanted AS SELECT (row_number() OVER () - 1)::BIGINT AS position,"
        f" {key_sql('content_hash')} AS key FROM _wanted_hashes"
    )
    con.unregister("_wanted_hashes")
    return "_wanted"


def present(con: duckdb.DuckDBPyConnection, root: Path, producer: str, hex_hashes) -> np.ndarray:
    """Which of the given documents have a result from `producer` (bool per position)."""
    files = producer_glob(root, producer)
    n = len(hex_hashes)
    out = np.zeros(n, dtype=bool)
    if files is None or n == 0:
        return out
    wanted = _wanted(con, hex_hashes)
    found = _query(con, f"SELECT w.position FROM {wanted} w SEMI JOIN read_parquet(?) a ON a.hash = w.key",
                   [files], kind_of(producer), producer)
    out[found["position"].to_numpy()] = True
    return out


def read_values(con: duckdb.DuckDBPyConnection, root: Path, producer: str, hex_hashes,
                column: str = "value") -> tuple[np.ndarray, np.ndarray]:
    """(value per document, NaN where unscorable or absent; whether a row exists) in the order given."""
    values, found = _read_columns(con, root, producer, lambda: _wanted(con, hex_hashes), len(hex_hashes), (column,))
    return values[column], found


def _read_columns(con: duckdb.DuckDBPyConnection, root: Path, producer: str, wanted_table: Callable[[], str], n: int,
                  columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    for column in columns:
        if column not in VALUE_COLUMNS.get(kind_of(producer), ("value", "value_norm")):
            raise ValueError(f"{producer} has no column {column!r}")
    values, found = {column: np.full(n, np.nan) for column in columns}, np.zeros(n, dtype=bool)
    files = producer_glob(root, producer)
    if files is None or n == 0:
        return values, found
    wanted = wanted_table()
    selected = ", ".join(f"a.{column}::DOUBLE AS {column}" for column in columns)
    rows = _query(con, f"SELECT w.position, {selected} FROM {wanted} w"
                       " JOIN read_parquet(?) a ON a.hash = w.key", [files], kind_of(producer), producer)
    positions = rows["position"].to_numpy()
    for column in columns:
        values[column][positions] = rows[column].to_numpy(zero_copy_only=False)
    found[positions] = True
    return values, found


class DocumentSignals:
    """Attribute columns of one set of documents, each (producer, column) read once and kept: a
    selection's sampler, export and kept/rejected table read the same scores, and the documents'
    keys are registered once for all of them (1.1 s a time at 10M documents)."""

    def __init__(self, root: Path, hex_hashes):
        self.root, self.hex_hashes, self.n = root, hex_hashes, len(hex_hashes)
        self._con = duckdb.connect()
        self._wanted: str | None = None
        self._values: dict[tuple[str, str], np.ndarray] = {}
        self._found: dict[str, np.ndarray] = {}

    def _wanted_table(self) -> str:
        if self._wanted is None:
            self._wanted = _wanted(self._con, self.hex_hashes)
        return self._wanted

    def columns(self, producer: str, columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """read_values of these documents for several columns of one producer, read in one pass
        over its files (the arrays are shared: do not write to them)."""
        missing = tuple(c for c in columns if (producer, c) not in self._values)
        if missing:
            values, found = _read_columns(self._con, self.root, producer, self._wanted_table, self.n, missing)
            self._found.setdefault(producer, found)  # whether a row exists: the same for every column
            self._values.update({(producer, c): v for c, v in values.items()})
        return {c: self._values[producer, c] for c in columns}, self._found[producer]

    def values(self, producer: str, column: str = "value") -> tuple[np.ndarray, np.ndarray]:
        """read_values of these documents (the arrays are shared: do not write to them)."""
        values, found = self.columns(producer, (column,))
        return values[column], found

    def has_column(self, producer: str, column: str) -> bool:
        return has_column(self._con, self.root, producer, column)

    def close(self) -> None:
        """Release the connection and the keys' table; columns read so far stay readable."""
        self._con.close()

    def __enter__(self) -> DocumentSignals:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def has_column(con: duckdb.DuckDBPyConnection, root: Path, producer: str, column: str) -> bool:
    """Whether `producer`'s attribute files have `column` (a file written before the column was
    added has not)."""
    files = producer_glob(root, producer)
    return files is not None and column in _query(con, "SELECT * FROM read_parquet(?) LIMIT 0", [files],
                                                  kind_of(producer), producer).column_names


def _unreadable_vectors(path: Path, why: str) -> CorruptFile:
    return CorruptFile(
        f"{path}: unreadable embedding file ({why}); delete it and its .parquet, "
        "and re-materialize embeddings for its shard: the documents it held are then embedded again"
    )


def _vector_block(hash_file: str) -> np.ndarray:
    path = Path(hash_file).with_suffix(".npy")
    try:
        return np.load(path, mmap_mode="r")
    except Exception as exc:  # truncated header, bad magic, missing file
        raise _unreadable_vectors(path, f"{type(exc).__name__}: {exc}") from exc


# Wanted rows at most this far apart are read together (the rows between are read and dropped:
# cheaper than another system call); farther apart, each run of rows is a read of its own.
ROW_GAP = 8

if hasattr(os, "preadv"):
    def _read_at(file, buffer: memoryview, offset: int) -> int:
        return os.preadv(file.fileno(), [buffer], offset)
else:  # pragma: no cover - platforms without preadv
    def _read_at(file, buffer: memoryview, offset: int) -> int:
        file.seek(offset)
        return file.readinto(buffer)


def _layout(hash_file: str) -> tuple[int, int, np.dtype]:
    """(data offset, row width, dtype) of the .npy beside `hash_file`, from its checked header."""
    block = _vector_block(hash_file)  # parses and checks the header; maps, but touches no page
    return block.offset, block.shape[1], block.dtype


def _read_rows(hash_file: str, rows: np.ndarray, layout: tuple[int, int, np.dtype]) -> np.ndarray:
    """Rows `rows` (ascending, repeats allowed) of the .npy beside `hash_file`, whose `_layout` is
    `layout`, as float32.

    Read with one pread per run of nearby rows, not through a memory map: a map faults once per
    page it touches, and a cluster's members lie far apart in files of 100,000 rows, so at 10M
    documents SemDeDup faulted once per row (9.8M faults, 80 s of system time; a read of a
    cluster group took 0.46-0.69 s mapped against 0.14-0.19 s by pread).
    """
    offset, dim, dtype = layout
    wanted = np.unique(rows)
    breaks = np.flatnonzero(np.diff(wanted) > ROW_GAP) + 1
    first, last = wanted[np.r_[0, breaks]], wanted[np.r_[breaks - 1, len(wanted) - 1]]
    lengths = last - first + 1
    at = np.r_[0, np.cumsum(lengths)[:-1]]  # where each run lands in `read`
    read = np.empty((int(lengths.sum()), dim), dtype=dtype)
    buffer, row_bytes = memoryview(read.reshape(-1).view(np.uint8)), dim * dtype.itemsize
    path = Path(hash_file).with_suffix(".npy")
    with open(path, "rb", buffering=0) as file:
        for start, row, count in zip(at.tolist(), first.tolist(), lengths.tolist()):
            span = buffer[start * row_bytes: (start + count) * row_bytes]
            if _read_at(file, span, offset + row * row_bytes) != len(span):
                raise _unreadable_vectors(path, f"ends before row {row + count - 1}")
    run = np.searchsorted(first, rows, side="right") - 1
    return read[at[run] + rows - first[run]].astype(np.float32, copy=False)


class VectorChunk:
    """One chunk's vectors (the .npy beside `hash_file`), read a range of rows at a time; its
    header is parsed at the first read, once."""

    def __init__(self, hash_file: Path):
        self.hash_file = str(hash_file)
        self._layout: tuple[int, int, np.dtype] | None = None

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (start < stop) as float32, in one read."""
        if self._layout is None:
            self._layout = _layout(self.hash_file)
        return _read_rows(self.hash_file, np.arange(start, stop), self._layout)


class VectorRows:
    """The embeddings of given documents, read on demand: row i is hex_hashes[i]'s vector.

    DuckDB locates every vector (hash file, row) once; `read` then reads only the rows asked for
    from each chunk's .npy (_read_rows), so a corpus's embeddings are never resident together
    (samplers read them a block or a cluster at a time).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, root: Path, producer: str, hex_hashes,
                 shard: str | None = None):
        """`shard`: the shard the documents are from, whose files are searched first."""
        self.n = len(hex_hashes)
        pattern = producer_glob(root, producer)
        self._files = sorted(glob.glob(pattern, include_hidden=True)) if pattern else []
        self._code = np.full(self.n, -1, dtype=np.int32)
        self._row = np.zeros(self.n, dtype=np.int64)
        # each file's header, parsed when first read: a reader that comes back to a file for every
        # group of clusters (SemDeDup at 10M documents: 16,300 times) parsed it each time (5.4 s)
        self._layouts: dict[int, tuple[int, int, np.dtype]] = {}
        if self._files and self.n:
            wanted = _wanted(con, hex_hashes)
            # Files by number, not by name: a name per document would cost more than its vector's location.
            con.register("_vector_files", pa.table({"file": self._files, "code": np.arange(len(self._files), dtype=np.int32)}))
            # A shard's texts were embedded with it, bar the few another shard brought first: their
            # vectors are looked up in its own files, and only the rest in every file. A lookup
            # joins with every hash of the files it reads: a shard of 100k in a 10M-document corpus
            # took 0.3 s over every file (a cost per shard that grew with the corpus), 0.04 s over its own.
            own = [f for f in self._files if Path(f).parent.name == shard]
            self._locate(con, wanted, own or self._files, producer)
            if own and (self._code < 0).any():
                con.register("_unlocated", pa.table({"position": np.flatnonzero(self._code < 0)}))
                con.execute(f"DELETE FROM {wanted} WHERE position NOT IN (SELECT position FROM _unlocated)")
                con.unregister("_unlocated")
                self._locate(con, wanted, self._files, producer)
            con.unregister("_vector_files")
        missing = np.flatnonzero(self._code < 0)
        if missing.size:
            first = as_strings(hex_hashes)[int(missing[0])].as_py()
            raise MissingUpstream(
                f"{missing.size} documents have no embedding from {producer} (e.g. {first}); "
                "materialize the embeddings asset for every shard first"
            )
        self.dim = _vector_block(self._files[0]).shape[1] if self.n else 0

    def _locate(self, con: duckdb.DuckDBPyConnection, wanted: str, files: list[str], producer: str) -> None:
        located = _query(con, f"SELECT w.position, f.code, a.file_row_number AS row FROM {wanted} w"
                              " JOIN read_parquet(?, filename = true, file_row_number = true) a ON a.hash = w.key"
                              " JOIN _vector_files f ON f.file = a.filename",
                         [files], "embedding", producer)
        positions = located["position"].to_numpy()
        self._code[positions] = located["code"].to_numpy()
        self._row[positions] = located["row"].to_numpy()

    def storage_order(self) -> np.ndarray:
        """Every position, ordered as the vectors lie on disk: reading in this order reads each file once, in order."""
        return np.lexsort((self._row, self._code))

    def read(self, positions) -> np.ndarray:
        """The vectors of `positions`, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        codes, rows = self._code[positions], self._row[positions]
        by_file = np.lexsort((rows, codes))
        bounds = np.flatnonzero(np.r_[True, np.diff(codes[by_file]) != 0, True])
        for start, stop in zip(bounds[:-1], bounds[1:]):
            mine = by_file[start:stop]
            code = int(codes[mine[0]])
            if code not in self._layouts:
                self._layouts[code] = _layout(self._files[code])
            out[mine] = _read_rows(self._files[code], rows[mine], self._layouts[code])
        return out

    def take(self, rows) -> VectorRows:
        """The same reader over a subset: position i of the result is position rows[i] of this one."""
        subset = object.__new__(VectorRows)
        subset.n, subset.dim, subset._files, subset._layouts = len(rows), self.dim, self._files, self._layouts
        subset._code, subset._row = self._code[rows], self._row[rows]
        return subset


def read_vectors(con: duckdb.DuckDBPyConnection, root: Path, producer: str, hex_hashes,
                 shard: str | None = None) -> np.ndarray:
    """Embeddings of the given documents (of `shard`, when given), row i for hex_hashes[i]; every one must exist."""
    if len(hex_hashes) == 0:
        return np.empty((0, 0), dtype=np.float32)
    rows = VectorRows(con, root, producer, hex_hashes, shard)
    return rows.read(np.arange(rows.n))


def scores_view_sql(root: Path) -> str:
    """A query listing every stored score as (content_hash key, producer_id, value, value_norm, problem)."""
    parts = []
    for producer in producers_on_disk(root):
        if kind_of(producer) in NOT_SCORES:
            continue
        columns = VALUE_COLUMNS.get(kind_of(producer), ("value", "value_norm", "problem"))
        select = ", ".join(f"{c}" if c in columns else f"NULL::{'VARCHAR' if c == 'problem' else 'DOUBLE'} AS {c}"
                           for c in ("value", "value_norm", "problem"))
        parts.append(f"SELECT hash, {literal(producer)} AS producer_id, {select}"
                     f" FROM read_parquet({literal(producer_glob(root, producer))})")
    if not parts:
        return ("SELECT NULL::BLOB AS hash, NULL::VARCHAR AS producer_id, NULL::DOUBLE AS value,"
                " NULL::DOUBLE AS value_norm, NULL::VARCHAR AS problem WHERE false")
    return " UNION ALL ".join(parts)


def compact(root: Path, producer: str, shard: str) -> Path | None:
    """Merge a shard's chunk files into one file, so a finished shard is one file per producer.

    The merged file is renamed in before the chunks it holds are deleted: a reader in between
    sees some rows twice, which readers tolerate, and never a row missing.
    """
    directory = producer_dir(root, producer) / shard
    chunks = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith("."))
    if len(chunks) < 2:
        return chunks[0] if chunks else None
    table = pa.concat_tables(pq.read_table(path) for path in chunks)
    if kind_of(producer) == "embedding":
        vectors = np.concatenate([_vector_block(str(path)) for path in chunks])
        merged = producer_dir(root, producer) / shard / _chunk_name(table["hash"].combine_chunks())
        _save_npy_atomically(vectors, merged.with_suffix(".npy"))
        _write_atomically(table, merged)
    else:
        merged = write_chunk(root, producer, shard, table)
    for path in chunks:
        if path != merged:
            path.unlink(missing_ok=True)  # the hash file first: its vectors are then no one's
            path.with_suffix(".npy").unlink(missing_ok=True)
    return merged

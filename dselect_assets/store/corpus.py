"""The corpus in the catalogue: shards, their documents, quarantine, and first occurrence.

A shard's documents are rows of its documents file (Parquet, written by ingest); the catalogue
names the file in `shards`, and the view `documents` reads every shard's file (sql/013). `contents`
(sql/005_contents_owner.sql) holds each distinct text once with its owner: the shard that brought
it first in arrival order. It is maintained here, inside the transaction that replaces or removes
a shard's documents, for the texts that shard held before or holds now.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from dselect_assets.store.sql_text import literal

_TOUCHED = "_touched_texts"
# The columns of a documents file that the view `documents` shows, beside the shard.
DOCUMENT_COLUMNS = {"row_number": "BIGINT", "doc_id": "VARCHAR", "content_hash": "VARCHAR",
                    "n_chars": "BIGINT", "n_bytes": "BIGINT"}


def _documents_sql(files: dict[str, str]) -> str:
    """A query of shard and DOCUMENT_COLUMNS over the documents files `files` (shard -> file) that
    exist: one deleted by hand is left out, so that ingest still runs and re-ingesting its shard
    writes it again."""
    files = {shard: path for shard, path in files.items() if Path(path).is_file()}
    if not files:
        columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in DOCUMENT_COLUMNS.items())
        return f"SELECT NULL::VARCHAR AS shard, {columns} WHERE false"
    columns = ", ".join(f"d.{name}" for name in DOCUMENT_COLUMNS)
    paths = ", ".join(literal(path) for path in files.values())
    pairs = ", ".join(f"({literal(shard)}, {literal(path)})" for shard, path in files.items())
    # union_by_name: a file written by older code may lack a column the view does not show
    return (f"SELECT f.shard, {columns} FROM read_parquet([{paths}], filename = true, union_by_name = true) d"
            f" JOIN (VALUES {pairs}) f(shard, documents_file) ON d.filename = f.documents_file")


def define_documents_view(con: duckdb.DuckDBPyConnection, files: dict[str, str]) -> None:
    """Define the view `documents` (shard and DOCUMENT_COLUMNS) over the documents files `files`
    (shard -> file), inside the caller's transaction.

    The file list is written into the view (a table function takes no subquery), so the view is
    redefined in each transaction that changes a shard's file: readers see the files the
    committed `shards` rows name.
    """
    con.execute(f"CREATE OR REPLACE VIEW documents AS {_documents_sql(files)}")


def shard_documents_files(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """shard -> documents file, of every ingested shard."""
    return dict(con.execute("SELECT shard, documents_file FROM shards ORDER BY shard").fetchall())


def quarantine_whole_file(con: duckdb.DuckDBPyConnection, shard: str, reason: str, run_id: str) -> None:
    con.execute("INSERT OR REPLACE INTO quarantine VALUES (?, 0, NULL, ?, '', now(), ?)", [shard, reason, run_id])


def ids_taken_by_other_shards(
    con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path
) -> list[tuple[int, str, str]]:
    """(row, id, where) of rows whose id another shard already holds.

    Run inside the transaction that inserts the shard: DuckDB admits one writer
    process at a time, so no other shard can take the same id in between.
    """
    (low, high) = con.execute("SELECT min(doc_id), max(doc_id) FROM read_parquet(?)", [str(documents_file)]).fetchone()
    if low is None:
        return []
    # Bounded by the shard's own ids, the scan of every other file skips each row group whose ids
    # lie outside them (by the files' statistics): where ids grow with the row, as a shard name
    # plus a row number does, it reads almost nothing (100 files of 100k rows: 0.1 s against 0.5 s).
    others = {other: path for other, path in shard_documents_files(con).items() if other != shard}
    return con.execute(
        "SELECT p.row_number, p.doc_id, d.shard || ' row ' || d.row_number"
        f" FROM read_parquet(?) p JOIN ({_documents_sql(others)}) d ON p.doc_id = d.doc_id"
        " WHERE d.doc_id BETWEEN ? AND ? ORDER BY p.row_number",
        [str(documents_file), low, high],
    ).fetchall()


def note_texts_held(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """Remember the texts `shard` holds now, before its documents are replaced or removed.

    Those are its documents file's; if that file is gone, at least the texts it owns, whose
    owners are then re-derived (a text it held without owning keeps a stale occurrence count).
    """
    held = documents_file_of(con, shard)
    if held is not None and Path(held).is_file():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_TOUCHED} AS"
                    " SELECT DISTINCT content_hash FROM read_parquet(?)", [held])
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_TOUCHED} AS"
                    " SELECT content_hash FROM contents WHERE shard = ?", [shard])


def record_arrival(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """A shard seen for the first time arrives after every other (re-ingest keeps its place)."""
    if con.execute("SELECT 1 FROM shard_arrivals WHERE shard = ?", [shard]).fetchone() is None:
        (last,) = con.execute("SELECT coalesce(max(arrival), 0) FROM shard_arrivals").fetchone()
        con.execute("INSERT INTO shard_arrivals VALUES (?, ?, now())", [shard, last + 1])


def hash_key_sql(column: str) -> str:
    """SQL for `contents.hash_key` of a content hash column: its first 64 bits (sql/012)."""
    return f"coalesce(TRY_CAST('0x' || left({column}, 16) AS UBIGINT), 0)"


def update_owners(con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path | None) -> None:
    """Re-derive the `contents` rows of every text `shard` held (noted before) or holds now (the
    rows of `documents_file`; None once it is retired), after the view `documents` was redefined.

    A text keeps its owner while the owner still holds it (its row may move); otherwise the
    earliest-arrived shard holding it owns it, then by shard name and row; a text no shard
    holds any more leaves `contents`. Occurrences are recounted over all shards.
    """
    # the shard's rows as the view shows them, from its one file
    shard_rows = (f"(SELECT {literal(shard)} AS shard, * FROM read_parquet({literal(str(documents_file))}))"
                  if documents_file is not None else "(SELECT * FROM documents WHERE false)")
    con.execute(
        f"INSERT INTO {_TOUCHED} SELECT DISTINCT content_hash FROM {shard_rows}"
        f" EXCEPT SELECT content_hash FROM {_TOUCHED}"
    )
    # A touched text `contents` does not list was held by no shard before: only `shard` holds it,
    # and its rows there decide its owner. Only the texts `contents` lists need every shard's rows
    # (a scan of every documents file), which a growing corpus's new shard mostly does not have.
    # Found by hash key (sql/012): a superset of the touched texts `contents` lists, each of which
    # the slow path below re-derives (one the shard never held keeps its owner).
    # (IN builds its hash table on the touched texts, a shard's worth, and streams `contents` past it)
    # By row id first: a query that returns the hashes reads the whole 64-hex column to filter it,
    # 0.3 s a shard at 10M documents against 0.1 s for the keys alone; only the few rows that
    # match are then read whole.
    con.execute("CREATE OR REPLACE TEMP TABLE _known_rows AS SELECT rowid AS known_row FROM contents"
                f" WHERE hash_key IN (SELECT {hash_key_sql('content_hash')} FROM {_TOUCHED})")
    con.execute("CREATE OR REPLACE TEMP TABLE _known AS SELECT content_hash FROM contents"
                " WHERE rowid IN (SELECT known_row FROM _known_rows)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _new_owners AS"
        " SELECT d.content_hash, d.shard, min(d.row_number) AS row_number, arg_min(d.doc_id, d.row_number) AS doc_id,"
        "  arg_min(d.n_chars, d.row_number) AS n_chars, count(*) AS occurrences,"
        f"  {hash_key_sql('d.content_hash')} AS hash_key"
        f" FROM {shard_rows} d WHERE d.content_hash NOT IN (SELECT content_hash FROM _known)"
        " GROUP BY d.content_hash, d.shard"
    )
    if con.execute("SELECT count(*) FROM _known").fetchone()[0]:
        con.execute(
            "INSERT INTO _new_owners"
            f" SELECT content_hash, shard, row_number, doc_id, n_chars, occurrences, {hash_key_sql('content_hash')} FROM ("
            "  SELECT d.content_hash, d.shard, d.row_number, d.doc_id, d.n_chars,"
            "   count(*) OVER (PARTITION BY d.content_hash) AS occurrences,"
            "   row_number() OVER (PARTITION BY d.content_hash ORDER BY"
            "    (d.shard = c.shard) IS TRUE DESC, a.arrival NULLS LAST, d.shard, d.row_number) AS pick"
            "  FROM documents d JOIN _known k ON k.content_hash = d.content_hash"
            "  LEFT JOIN contents c ON c.content_hash = d.content_hash"
            "  LEFT JOIN shard_arrivals a ON a.shard = d.shard"
            " ) WHERE pick = 1"
        )
        con.execute("DELETE FROM contents WHERE content_hash IN (SELECT content_hash FROM _known)")
    con.execute("INSERT INTO contents BY NAME SELECT * FROM _new_owners")
    con.execute(f"DROP TABLE {_TOUCHED}")
    con.execute("DROP TABLE _known")
    con.execute("DROP TABLE _known_rows")
    con.execute("DROP TABLE _new_owners")


def documents_file_of(con: duckdb.DuckDBPyConnection, shard: str) -> str | None:
    rows = con.execute("SELECT documents_file FROM shards WHERE shard = ?", [shard]).fetchall()
    return rows[0][0] if rows else None


def retire(con: duckdb.DuckDBPyConnection, shard: str, reason: str) -> tuple[dict, str] | None:
    """Remove a shard (inside the caller's transaction), recording why in `retired_shards`.
    Returns the `retired_shards` row and the shard's documents file, or None when never ingested."""
    rows = con.execute("SELECT file_sha256, documents_file, n_documents FROM shards WHERE shard = ?",
                       [shard]).fetchall()
    if not rows:
        return None
    file_hash, documents_file, n_documents = rows[0]
    note_texts_held(con, shard)
    con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
    con.execute("DELETE FROM shards WHERE shard = ?", [shard])
    define_documents_view(con, shard_documents_files(con))
    update_owners(con, shard, None)
    con.execute("DELETE FROM shard_arrivals WHERE shard = ?", [shard])
    con.execute("DELETE FROM artifacts WHERE path = ?", [documents_file])
    con.execute("INSERT INTO retired_shards VALUES (?, ?, ?, ?, now())", [shard, file_hash, n_documents, reason])
    return {"shard": shard, "file_sha256": file_hash, "n_documents": n_documents, "reason": reason}, documents_file


def replace_documents(con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path,
                      rejections: list[tuple[int, str | None, str, str]], run_id: str) -> int:
    """Replace the shard's documents and quarantine rows with those of `documents_file` and
    `rejections` (row, id, reason, excerpt), keep first occurrence right, and return how many of
    its rows are not their text's first occurrence (inside the caller's transaction)."""
    note_texts_held(con, shard)
    con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
    define_documents_view(con, shard_documents_files(con) | {shard: str(documents_file)})
    record_arrival(con, shard)
    update_owners(con, shard, documents_file)
    if rejections:
        rows = pa.table({
            "row_number": pa.array([r[0] for r in rejections], pa.int64()),
            "doc_id": pa.array([r[1] for r in rejections], pa.string()),
            "reason": pa.array([r[2] for r in rejections], pa.string()),
            "excerpt": pa.array([r[3] for r in rejections], pa.string()),
        })
        con.register("_rejections", rows)
        con.execute("INSERT INTO quarantine SELECT ?, row_number, doc_id, reason, excerpt, ?, ? FROM _rejections",
                    [shard, datetime.now(), run_id])
        con.unregister("_rejections")
    # Rows that are not their text's first occurrence (another shard's, or an earlier row): every
    # text `contents` gives this shard is first held at one of its rows. Counted by shard, not by
    # looking each row up in `contents`, which scanned every text of the corpus for each shard.
    return con.execute(
        "SELECT (SELECT count(*) FROM read_parquet($2)) - (SELECT count(*) FROM contents WHERE shard = $1)",
        [shard, str(documents_file)],
    ).fetchall()[0][0]


def record_shard(con: duckdb.DuckDBPyConnection, row: list) -> None:
    """Upsert the shard's row of `shards` (columns in table order, without ingested_at)."""
    con.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)", row)


def shard_sources(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int, str]]:
    """shard -> (source path, byte size, file sha256) of every ingested shard."""
    return {shard: (path, size, sha) for shard, path, size, sha in con.execute(
        "SELECT shard, path, byte_size, file_sha256 FROM shards").fetchall()}

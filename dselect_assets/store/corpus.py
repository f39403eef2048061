"""The corpus in the catalogue: shards, their documents rows, quarantine, and first occurrence.

`contents` (sql/005_contents_owner.sql) holds each distinct text once with its owner: the shard
that brought it first in arrival order. It is maintained here, inside the transaction that
replaces or removes a shard's rows, for the texts that shard held before or holds now.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

_TOUCHED = "_touched_texts"


def quarantine_whole_file(con: duckdb.DuckDBPyConnection, shard: str, reason: str, run_id: str) -> None:
    con.execute("INSERT OR REPLACE INTO quarantine VALUES (?, 0, NULL, ?, '', now(), ?)", [shard, reason, run_id])


def ids_taken_by_other_shards(
    con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path
) -> list[tuple[int, str, str]]:
    """(row, id, where) of rows whose id another shard already holds.

    Run inside the transaction that inserts the shard: DuckDB admits one writer
    process at a time, so no other shard can take the same id in between.
    """
    return con.execute(
        "SELECT p.row_number, p.doc_id, d.shard || ' row ' || d.row_number"
        " FROM read_parquet(?) p JOIN documents d ON p.doc_id = d.doc_id AND d.shard <> ?"
        " ORDER BY p.row_number",
        [str(documents_file), shard],
    ).fetchall()


def note_texts_held(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """Remember the texts `shard` holds now, before its rows are replaced or removed."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_TOUCHED} AS"
        " SELECT DISTINCT content_hash FROM documents WHERE shard = ?",
        [shard],
    )


def record_arrival(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """A shard seen for the first time arrives after every other (re-ingest keeps its place)."""
    if con.execute("SELECT 1 FROM shard_arrivals WHERE shard = ?", [shard]).fetchone() is None:
        (last,) = con.execute("SELECT coalesce(max(arrival), 0) FROM shard_arrivals").fetchone()
        con.execute("INSERT INTO shard_arrivals VALUES (?, ?, now())", [shard, last + 1])


def hash_key_sql(column: str) -> str:
    """SQL for `contents.hash_key` of a content hash column: its first 64 bits (sql/012)."""
    return f"coalesce(TRY_CAST('0x' || left({column}, 16) AS UBIGINT), 0)"


def update_owners(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """Re-derive the `contents` rows of every text `shard` held (noted before) or holds now.

    A text keeps its owner while the owner still holds it (its row may move); otherwise the
    earliest-arrived shard holding it owns it, then by shard name and row; a text no shard
    holds any more leaves `contents`. Occurrences are recounted over all shards.
    """
    con.execute(
        f"INSERT INTO {_TOUCHED} SELECT DISTINCT content_hash FROM documents WHERE shard = ?"
        f" EXCEPT SELECT content_hash FROM {_TOUCHED}",
        [shard],
    )
    # A touched text `contents` does not list was held by no shard before: only `shard` holds it,
    # and its rows there decide its owner. Only the texts `contents` lists need every shard's rows
    # (a scan of all of `documents`), which a growing corpus's new shard mostly does not have.
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
        f" FROM documents d WHERE d.shard = ? AND d.content_hash NOT IN (SELECT content_hash FROM _known)"
        " GROUP BY d.content_hash, d.shard",
        [shard],
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


def retire(con: duckdb.DuckDBPyConnection, shard: str, reason: str) -> tuple[dict, str | None] | None:
    """Remove a shard's rows (inside the caller's transaction), recording why in `retired_shards`.
    Returns the `retired_shards` row and the shard's documents file, or None when never ingested."""
    rows = con.execute("SELECT file_sha256, documents_file FROM shards WHERE shard = ?", [shard]).fetchall()
    (n_documents,) = con.execute("SELECT count(*) FROM documents WHERE shard = ?", [shard]).fetchall()[0]
    if not rows and n_documents == 0:
        return None
    file_hash, documents_file = rows[0] if rows else ("", None)
    note_texts_held(con, shard)
    con.execute("DELETE FROM documents WHERE shard = ?", [shard])
    con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
    update_owners(con, shard)
    con.execute("DELETE FROM shards WHERE shard = ?", [shard])
    con.execute("DELETE FROM shard_arrivals WHERE shard = ?", [shard])
    if documents_file is not None:
        con.execute("DELETE FROM artifacts WHERE path = ?", [documents_file])
    con.execute("INSERT INTO retired_shards VALUES (?, ?, ?, ?, now())", [shard, file_hash, n_documents, reason])
    return {"shard": shard, "file_sha256": file_hash, "n_documents": n_documents, "reason": reason}, documents_file


def replace_documents(con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path,
                      rejections: list[tuple[int, str | None, str, str]], run_id: str) -> int:
    """Replace the shard's documents and quarantine rows with those of `documents_file` and
    `rejections` (row, id, reason, excerpt), keep first occurrence right, and return how many of
    its rows are not their text's first occurrence (inside the caller's transaction)."""
    note_texts_held(con, shard)
    con.execute("DELETE FROM documents WHERE shard = ?", [shard])
    con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
    con.execute(
        "INSERT INTO documents SELECT ?, row_number, doc_id, content_hash, n_chars, n_bytes FROM read_parquet(?)",
        [shard, str(documents_file)],
    )
    record_arrival(con, shard)
    update_owners(con, shard)
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
        "SELECT (SELECT count(*) FROM documents WHERE shard = $1) - (SELECT count(*) FROM contents WHERE shard = $1)",
        [shard],
    ).fetchall()[0][0]


def record_shard(con: duckdb.DuckDBPyConnection, row: list) -> None:
    """Upsert the shard's row of `shards` (columns in table order, without ingested_at)."""
    con.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)", row)


def shard_sources(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, int, str]]:
    """shard -> (source path, byte size, file sha256) of every ingested shard."""
    return {shard: (path, size, sha) for shard, path, size, sha in con.execute(
        "SELECT shard, path, byte_size, file_sha256 FROM shards").fetchall()}

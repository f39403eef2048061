"""What the coverage assets read and record: the texts each shard owns, the sketch records that
say which owned set a shard's sketch counts, and the cluster assignments."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def _hashes(table: pa.Table) -> pa.Array:
    return table["content_hash"].combine_chunks().cast(pa.string())


def owned_hashes(con: duckdb.DuckDBPyConnection, shard: str) -> pa.Array:
    """The texts `shard` owns in `contents` (its sketch counts them), sorted."""
    return _hashes(con.sql("SELECT content_hash FROM contents WHERE shard = ? ORDER BY content_hash",
                           params=[shard]).to_arrow_table())


def corpus_hashes(con: duckdb.DuckDBPyConnection) -> pa.Array:
    """Every distinct text of the corpus, sorted."""
    return _hashes(con.sql("SELECT content_hash FROM contents ORDER BY content_hash").to_arrow_table())


def owner_shards(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [shard for (shard,) in con.execute("SELECT DISTINCT shard FROM contents ORDER BY 1").fetchall()]


def count_contents(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(*) FROM contents").fetchall()[0][0]


def contents_columns(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """content_hash, owner shard and length of every distinct text, sorted by hash."""
    return con.sql("SELECT content_hash, shard, n_chars FROM contents ORDER BY content_hash").to_arrow_table()


def sketch_record(con: duckdb.DuckDBPyConnection, producer: str, shard: str) -> tuple | None:
    """(owned_version, n_docs, sketch_file) recorded for the shard's sketch, or None."""
    rows = con.execute(
        "SELECT owned_version, n_docs, sketch_file FROM density_sketch_sets WHERE producer_id = ? AND shard = ?",
        [producer, shard],
    ).fetchall()
    return rows[0] if rows else None


def record_sketch(con: duckdb.DuckDBPyConnection, producer: str, shard: str, owned_version: str, n_docs: int,
                  sketch_file: str, sketch_sha256: str, run_id: str) -> None:
    con.execute(
        "INSERT OR REPLACE INTO density_sketch_sets VALUES (?, ?, ?, ?, ?, ?, ?, now())",
        [producer, shard, owned_version, n_docs, sketch_file, sketch_sha256, run_id],
    )

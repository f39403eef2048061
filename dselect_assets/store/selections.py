"""What a selection reads from the catalogue and what it records: eligible documents, clusters,
ids, members. Documents are passed as Arrow string arrays of content hashes, never Python lists;
results come back aligned with them (row i for hash i)."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa


def _register_positions(con: duckdb.DuckDBPyConnection, hex_hashes, name: str = "_positions") -> str:
    hashes = hex_hashes if isinstance(hex_hashes, (pa.Array, pa.ChunkedArray)) else pa.array(hex_hashes, pa.string())
    con.register(f"{name}_in", pa.table({"content_hash": hashes}))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS"
                f" SELECT (row_number() OVER () - 1)::BIGINT AS position, content_hash FROM {name}_in")
    con.unregister(f"{name}_in")
    return name


def eligible_hashes(con: duckdb.DuckDBPyConnection) -> pa.Array:
    """Every distinct text of the corpus that no evaluation set holds, sorted by content hash."""
    table = con.sql(
        "SELECT content_hash FROM contents c WHERE NOT EXISTS"
        " (SELECT 1 FROM eval_documents e WHERE e.content_hash = c.content_hash) ORDER BY content_hash"
    ).to_arrow_table()
    return table["content_hash"].combine_chunks().cast(pa.string())


def held_out_count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(DISTINCT content_hash) FROM eval_documents").fetchall()[0][0]


def current_clustering(con: duckdb.DuckDBPyConnection) -> tuple[str, str | None] | None:
    """(clustering id, the embedding producer it was built on) of the stored assignments, or None."""
    rows = con.execute(
        "SELECT a.clustering_id, json_extract_string(p.identity_json, '$.embedder')"
        " FROM (SELECT clustering_id FROM cluster_assignments LIMIT 1) a"
        " LEFT JOIN producers p ON p.producer_id = a.clustering_id"
    ).fetchall()
    return rows[0] if rows else None


def clusters_of(con: duckdb.DuckDBPyConnection, hex_hashes) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each document, -1 where unassigned; whether it is assigned)."""
    n = len(hex_hashes)
    cluster, found = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    positions = _register_positions(con, hex_hashes)
    rows = con.sql(f"SELECT w.position, a.cluster FROM {positions} w"
                       " JOIN cluster_assignments a USING (content_hash)").to_arrow_table()
    at = rows["position"].to_numpy()
    cluster[at], found[at] = rows["cluster"].to_numpy(), True
    return cluster, found


def doc_ids(con: duckdb.DuckDBPyConnection, hex_hashes) -> pa.Array:
    """The id of each document's first occurrence (null for a text not in the corpus)."""
    positions = _register_positions(con, hex_hashes)
    return con.sql(
        f"SELECT c.doc_id FROM {positions} w LEFT JOIN contents c USING (content_hash) ORDER BY w.position"
    ).to_arrow_table()["doc_id"].combine_chunks()


def record_selection(con: duckdb.DuckDBPyConnection, row: dict, kept: pa.Array) -> None:
    """Replace the selection's row and members (inside the caller's transaction)."""
    con.execute("DELETE FROM selection_members WHERE selection_id = ?", [row["selection_id"]])
    con.register("_kept", pa.table({"content_hash": kept}))
    con.execute("INSERT INTO selection_members SELECT ?, content_hash FROM _kept", [row["selection_id"]])
    con.unregister("_kept")
    con.execute(
        "INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [row["selection_id"], row["selection_key"], row["sampler"], row["rate"], row["seed"],
         json.dumps(row["config"], sort_keys=True), json.dumps(row["producers"], sort_keys=True),
         row["input_version"], row["n_considered"], row["n_kept"], row["export_path"], row["export_sha256"],
         row["run_id"]],
    )

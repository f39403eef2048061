"""What a selection reads from the catalogue and what it records: eligible documents, clusters,
ids, the selection row (its members are the content hashes of its export). Documents are passed
as Arrow string arrays of content hashes, never Python lists; results come back aligned with them
(row i for hash i)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.core.hashing import hash_order, is_sorted
from dselect_assets.store import attributes, catalogue
from dselect_assets.store.connection import bound_memory
from dselect_assets.store.sql_text import literal


def _register_positions(con: duckdb.DuckDBPyConnection, hex_hashes, name: str = "_positions") -> str:
    # A registered Arrow table is scanned in place: a temp table would copy every hash into DuckDB.
    hashes = attributes.as_strings(hex_hashes)
    con.register(name, pa.table({"position": np.arange(len(hashes), dtype=np.int64), "content_hash": hashes}))
    return name


def eligible_hashes(con: duckdb.DuckDBPyConnection) -> pa.Array:
    """Every distinct text of the corpus that no evaluation set holds, sorted by content hash."""
    # Arrow sorts the fetched hashes with an index per row; an ORDER BY in DuckDB held sort keys
    # of every hash beside the result (0.9 GB of peak memory at 3M documents against 0.66 GB here).
    con.execute("SET preserve_insertion_order = false")
    column = con.sql(
        "SELECT content_hash FROM contents c WHERE NOT EXISTS"
        " (SELECT 1 FROM eval_documents e WHERE e.content_hash = c.content_hash)"
    ).to_arrow_table()["content_hash"]
    hashes = attributes.as_strings(column)
    del column
    return hashes.take(hash_order(hashes))


def validation_split(con: duckdb.DuckDBPyConnection, fraction: float) -> pa.Table:
    """content_hash and first-occurrence doc_id of the texts in the fixed validation split, sorted by
    hash: those whose hash's first 32 bits are below fraction * 2**32, so a text never changes side
    as the corpus grows (filtered here: the corpus's hashes never leave DuckDB)."""
    return con.sql("SELECT content_hash, doc_id FROM contents"
                   " WHERE ('0x' || left(content_hash, 8))::UBIGINT < ? ORDER BY content_hash",
                   params=[int(fraction * 2**32)]).to_arrow_table()


def locate_texts(con: duckdb.DuckDBPyConnection, hex_hashes) -> pa.Table:
    """(content_hash, row_number, documents_file) of each given text's first occurrence."""
    positions = _register_positions(con, hex_hashes)
    return con.sql(
        f"SELECT c.content_hash, c.row_number, s.documents_file FROM contents c"
        f" JOIN {positions} w USING (content_hash) JOIN shards s USING (shard)"
    ).to_arrow_table()


def replace_eval_set(con: duckdb.DuckDBPyConnection, name: str, documents: pa.Table) -> None:
    """The documents (content_hash, doc_id) of evaluation set `name` (inside the caller's transaction,
    after clear_eval_sets)."""
    con.register("_eval_set", documents)
    con.execute("INSERT INTO eval_documents SELECT ?, content_hash, doc_id FROM _eval_set", [name])
    con.unregister("_eval_set")


def clear_eval_sets(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DELETE FROM eval_documents")


def eval_texts_in_corpus(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return con.execute("SELECT count(*) FROM eval_documents e JOIN contents c USING (content_hash)"
                       " WHERE e.eval_set = ?", [name]).fetchall()[0][0]


def held_out_count(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT count(DISTINCT content_hash) FROM eval_documents").fetchall()[0][0]


def current_clustering(con: duckdb.DuckDBPyConnection) -> tuple[str, str | None] | None:
    """(clustering id, the embedding producer it was built on) of the clusters asset's last clustering, or None."""
    rows = con.execute(
        "SELECT r.producer_id, json_extract_string(p.identity_json, '$.embedder') FROM resource_producers r"
        " LEFT JOIN producers p USING (producer_id) WHERE r.resource = ?", [catalogue.CLUSTERS_RESOURCE]).fetchall()
    return rows[0] if rows else None


def clusters_of(signals: attributes.DocumentSignals, clustering_id: str,
                with_parts: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(cluster of each of the signals' documents, -1 where unassigned; with_parts: its part of the
    cluster, None for a clustering written before clusters had parts; whether it is assigned)."""
    with_parts = with_parts and signals.has_column(clustering_id, "part")
    values, found = signals.columns(clustering_id, ("cluster", "part") if with_parts else ("cluster",))
    as_ids = {c: np.where(found, np.nan_to_num(v, nan=-1), -1).astype(np.int64) for c, v in values.items()}
    return as_ids["cluster"], as_ids.get("part"), found


def doc_ids(con: duckdb.DuckDBPyConnection, hex_hashes) -> pa.Array:
    """The id of each document's first occurrence (null for a text not in the corpus)."""
    positions = _register_positions(con, hex_hashes)
    return con.sql(
        f"SELECT c.doc_id FROM {positions} w LEFT JOIN contents c USING (content_hash) ORDER BY w.position"
    ).to_arrow_table()["doc_id"].combine_chunks()


def record_selection(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    """Replace the selection's row (inside the caller's transaction). Its members are the
    content_hash column of its export (`export_path`), one Parquet file per selection: a table of
    (selection, hash) rows with a primary key held every selection of a 10M-document corpus in
    the catalogue and its index in memory."""
    con.execute(
        "INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [row["selection_id"], row["selection_key"], row["sampler"], row["rate"], row["seed"],
         json.dumps(row["config"], sort_keys=True), json.dumps(row["producers"], sort_keys=True),
         row["input_version"], row["n_considered"], row["n_kept"], row["export_path"], row["export_sha256"],
         row["run_id"]],
    )


def members_file(con: duckdb.DuckDBPyConnection, selection_id: str) -> Path:
    """The Parquet file whose `content_hash` column lists the selection's members."""
    rows = con.execute("SELECT export_path FROM selections WHERE selection_id = ?", [selection_id]).fetchall()
    if not rows:
        raise KeyError(f"no selection {selection_id!r} is recorded")
    return Path(rows[0][0])


def eval_leaks(con: duckdb.DuckDBPyConnection, selection_id: str) -> int:
    """How many members of the selection an evaluation set holds."""
    return con.execute(
        "SELECT count(*) FROM read_parquet(?) m WHERE EXISTS"
        " (SELECT 1 FROM eval_documents e WHERE e.content_hash = m.content_hash)",
        [str(members_file(con, selection_id))],
    ).fetchall()[0][0]


def latest_selection(con: duckdb.DuckDBPyConnection, key: str) -> tuple[str, str, str] | None:
    """(selection id, export path, export sha256) of the newest selection of partition `key`."""
    rows = con.execute(
        "SELECT selection_id, export_path, export_sha256 FROM selections WHERE selection_key = ?"
        " ORDER BY created_at DESC LIMIT 1", [key],
    ).fetchall()
    return rows[0] if rows else None


def documents_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [path for (path,) in con.execute("SELECT documents_file FROM shards").fetchall()]


def stage_export(con: duckdb.DuckDBPyConnection, selection_file: Path, staged: Path,
                 with_metadata: list[Path], spill_dir: Path) -> None:
    """Write to `staged` (Parquet) the selection's rows in its order, with each document's source
    shard and, from the documents files in `with_metadata`, the metadata ingest carried.

    A range of EXPORT_RANGE_ROWS rows at a time: one join of the whole selection with `contents`
    ran out of DuckDB's memory limit at 10M documents (a 2M-row selection with its texts), while a
    range is the small side of each join and only it is held. Where each document's first
    occurrence lies (and its metadata) is looked up once for the whole selection, without texts:
    joined with `contents` and every documents file once a range, the ranges read the corpus as
    many times as there are ranges (13.6 s of a 10M-document export, against 0.5 s at 1M)."""
    bound_memory(con, spill_dir)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _export_located AS"
        " SELECT e.file_row_number, c.shard, c.row_number, s.documents_file"
        f" FROM read_parquet({literal(selection_file)}, file_row_number = true) e"
        " LEFT JOIN contents c USING (content_hash) LEFT JOIN shards s ON s.shard = c.shard"
    )
    if with_metadata:
        files = "[" + ", ".join(literal(f) for f in with_metadata) + "]"
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _export_metadata AS SELECT l.file_row_number, m.metadata"
            f" FROM _export_located l JOIN read_parquet({files}, filename = true, union_by_name = true) m"
            " ON m.filename = l.documents_file AND m.row_number = l.row_number"
        )
        metadata_join, metadata = (" LEFT JOIN (SELECT * FROM _export_metadata WHERE file_row_number >= $1"
                                   " AND file_row_number < $2) m USING (file_row_number)"), "m.metadata"
    else:  # shards ingested before metadata was carried
        metadata_join, metadata = "", "CAST(NULL AS VARCHAR)"
    query = (
        f"SELECT e.id, e.text, l.shard AS source, {metadata} AS metadata, e.* EXCLUDE (id, text, file_row_number)"
        f" FROM (SELECT * FROM read_parquet({literal(selection_file)}, file_row_number = true)"
        "  WHERE file_row_number >= $1 AND file_row_number < $2) e"
        " LEFT JOIN (SELECT * FROM _export_located WHERE file_row_number >= $1 AND file_row_number < $2) l"
        " USING (file_row_number)"
        f"{metadata_join}"
        " ORDER BY e.file_row_number"
    )
    n = pq.ParquetFile(selection_file).metadata.num_rows
    writer = None
    try:
        for start in range(0, max(n, 1), EXPORT_RANGE_ROWS):
            rows = con.sql(query, params=[start, min(start + EXPORT_RANGE_ROWS, n)]).to_arrow_table()
            if writer is None:
                writer = pq.ParquetWriter(staged, rows.schema, compression="zstd")
            writer.write_table(rows)
    finally:
        if writer is not None:
            writer.close()
        con.execute("DROP TABLE IF EXISTS _export_located; DROP TABLE IF EXISTS _export_metadata")


EXPORT_BATCH_ROWS = 8192
# Rows of the export assembled at a time from the per-shard parts.
EXPORT_RANGE_ROWS = 1 << 18


def part_row_group(part_rows: int, export_rows: int) -> int:
    """Rows per row group of a part holding `part_rows` of the export's `export_rows` places.

    A part's places are spread over the whole export, so a range of EXPORT_RANGE_ROWS places
    finds about part_rows * EXPORT_RANGE_ROWS / export_rows of them in each part. Row groups of
    half that many let the range read at most about 1.5x the rows it needs; fixed groups of
    EXPORT_BATCH_ROWS made it read 4x at 10M documents (100 shards), and more as files grow.
    """
    per_range = part_rows * EXPORT_RANGE_ROWS // max(export_rows, 1)
    return max(2048, min(EXPORT_BATCH_ROWS, per_range // 2))


def write_export(con: duckdb.DuckDBPyConnection, kept, scores: dict[str, tuple[np.ndarray, np.ndarray] | None],
                 out_file: Path, spill_dir: Path) -> int:
    """Write the selection's export: id, content_hash, text and one column per entry of `scores`
    (name -> (each kept document's value, whether it has one), or None for a column of nulls),
    for `kept`, sorted by content hash. Returns the rows written.

    One join of every kept text with every documents file held the corpus's text in a hash table
    that DuckDB could not spill (out of memory at 3M documents under a 1 GB limit). Instead the
    texts are read one documents file at a time into a part sorted by the row's place in the
    export, and the export is assembled from the parts a range of places at a time, so memory
    holds a shard or a range, plus one score array per entry of `scores`."""
    bound_memory(con, spill_dir)
    kept = attributes.as_strings(kept)
    if not is_sorted(kept):  # the scores come in the kept documents' order, and the export is by hash
        raise ValueError("the kept documents must come sorted by content hash, as the eligible set does")
    values = {name: value for name, value in scores.items() if value is not None}
    positions = _register_positions(con, kept, "_kept_rows")
    # Sorted by documents file (numbered: DuckDB's zone maps keep 8 bytes of a string), so each
    # file's query below reads only its own row groups; a filter over every kept row once per
    # file made the loop grow as files x selection size.
    con.execute("CREATE OR REPLACE TEMP TABLE _files AS SELECT shard, documents_file,"
                " row_number() OVER (ORDER BY documents_file) AS file_number FROM shards")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _kept_located AS SELECT w.position, c.doc_id, c.row_number,"
                f" f.file_number FROM {positions} w JOIN contents c USING (content_hash) JOIN _files f USING (shard)"
                f" ORDER BY f.file_number")
    con.unregister(positions)
    parts = spill_dir / f"export-parts-{uuid.uuid4().hex}"
    parts.mkdir(parents=True)
    try:
        files = con.execute("SELECT f.file_number, f.documents_file, count(*) FROM _kept_located k"
                            " JOIN _files f USING (file_number) GROUP BY ALL ORDER BY 1").fetchall()
        for i, (file_number, documents_file, n_rows) in enumerate(files):
            con.execute(
                f"COPY (SELECT k.position, k.doc_id AS id, t.text FROM _kept_located k"
                f" LEFT JOIN read_parquet({literal(documents_file)}) t USING (row_number)"
                f" WHERE k.file_number = ? ORDER BY k.position)"
                f" TO {literal(parts / f'{i:06d}.parquet')}"
                f" (FORMAT parquet, ROW_GROUP_SIZE {part_row_group(n_rows, len(kept))})",
                [file_number])
        con.execute("DROP TABLE _kept_located; DROP TABLE _files")
        return _assemble(con, kept, values, scores, parts if files else None, out_file)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _assemble(con: duckdb.DuckDBPyConnection, kept: pa.Array, values: dict[str, tuple[np.ndarray, np.ndarray]],
              scores: dict, parts: Path | None, out_file: Path) -> int:
    schema = pa.schema([("id", pa.string()), ("content_hash", pa.string()), ("text", pa.string())]
                       + [(name, pa.float64()) for name in scores])
    n = len(kept)
    # the parts are sorted by position, so a range reads only the row groups that hold it
    source = f"read_parquet({literal(str(parts / '*.parquet'))})" if parts else \
        "(SELECT NULL::BIGINT AS position, NULL::VARCHAR AS id, NULL::VARCHAR AS text WHERE false)"
    # every range reads every part: their footers are parsed once, not once per range
    con.execute("SET parquet_metadata_cache = true")
    with pq.ParquetWriter(out_file, schema, compression="zstd", write_statistics=False) as writer:
        for start in range(0, n, EXPORT_RANGE_ROWS):
            stop = min(start + EXPORT_RANGE_ROWS, n)
            rows = con.sql(f"SELECT position, id, text FROM {source} WHERE position >= $1 AND position < $2"
                           " ORDER BY position", params=[start, stop]).to_arrow_table()
            if len(rows) != stop - start:  # every kept text is in `contents`, read in the same pool
                raise RuntimeError(f"{stop - start - len(rows)} of the kept documents at export rows {start}-{stop - 1}"
                                   " are not in the catalogue; materialize the selection again")
            columns = [rows["id"].cast(pa.string()), kept.slice(start, stop - start), rows["text"].cast(pa.string())]
            # a range's scores made Arrow here: whole columns would be a second copy of each score
            columns += [pa.array(values[name][0][start:stop], pa.float64(), mask=~values[name][1][start:stop])
                        if name in values else pa.nulls(stop - start, pa.float64()) for name in scores]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=EXPORT_BATCH_ROWS)
    return n

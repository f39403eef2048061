"""Python steps of migrations that move rows out of the catalogue into files.

008 (sql/008_attribute_files.sql drops the tables): every `scores` row and every embedding that
`embedding_index` points at is written to attribute files, one file per (producer, shard), the
shard being the text's owner in `contents` (density: its corpus-wide file) (a text no shard holds any more goes to `.migrated`);
embeddings keep the shard of the directory their .npy chunk was in. A migration runs inside one
transaction: if writing a file fails, the tables stay and the files written so far are harmless
(a re-run rewrites them under the same names). It also writes each shard's CURRENT documents
pointer (store/documents.py), which scoring workers read instead of the `shards` table.

009 (sql/009_selection_member_files.sql drops `selection_members`): the members of a selection
already are the content_hash column of its Parquet export, so nothing is written; each recorded
selection with members rows is checked against its export first, and a missing or different export
stops the migration with what to do, rather than dropping the only record of the members.

011 (sql/011_cluster_assignment_files.sql drops `cluster_assignments`): each clustering's rows
become its corpus-wide attribute file (hash, cluster, distance), and the resource pointer
`clusters` names it, as the clusters asset now leaves them.

013 (sql/013_documents_view.sql drops the `documents` table): its rows already are each shard's
documents file, so nothing is written; each shard's file is checked to hold exactly its rows first,
and a missing or different file stops the migration with the shard, the file and what to do. After
the SQL, the view `documents` is defined over the files (store/corpus.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from dselect_assets.store import attributes, catalogue, corpus, documents

UNOWNED = ".migrated"


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]).fetchall())


def _move_scores(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    # density is replaced as a whole, so it moves to its one corpus-wide file
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _score_files AS SELECT s.content_hash, s.producer_id,"
        " CASE WHEN s.producer_id LIKE 'density:%' THEN ? ELSE coalesce(c.shard, ?) END AS shard"
        " FROM scores s LEFT JOIN contents c USING (content_hash)", [attributes.CORPUS_WIDE, UNOWNED]
    )
    groups = con.execute("SELECT DISTINCT producer_id, shard FROM _score_files ORDER BY ALL").fetchall()
    for producer, shard in groups:
        rows = con.sql(
            "SELECT s.content_hash, s.value, s.value_norm FROM scores s JOIN _score_files f"
            " USING (content_hash, producer_id) WHERE f.producer_id = ? AND f.shard = ? ORDER BY s.content_hash",
            params=[producer, shard],
        ).to_arrow_table()
        value = rows["value"].to_numpy(zero_copy_only=False).astype(np.float64)
        norm = rows["value_norm"].to_numpy(zero_copy_only=False).astype(np.float64)
        table = attributes.score_table(producer, rows["content_hash"].to_pylist(), value, norm)
        if shard == attributes.CORPUS_WIDE:
            attributes.replace_corpus_wide(root, producer, [table])
        else:
            attributes.write_chunk(root, producer, shard, table)
    con.execute("DROP TABLE _score_files")


def _move_embeddings(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    files = con.execute("SELECT DISTINCT producer_id, file FROM embedding_index ORDER BY ALL").fetchall()
    for producer, file in files:
        rows = con.execute(
            "SELECT content_hash, row_in_file FROM embedding_index WHERE producer_id = ? AND file = ?"
            " ORDER BY row_in_file", [producer, file]
        ).fetchall()
        try:
            block = np.load(file, mmap_mode="r")
        except Exception as exc:  # truncated header, bad magic, missing file
            raise RuntimeError(f"{file}: unreadable embedding file ({type(exc).__name__}: {exc}); delete the "
                               f"embedding_index rows naming it, migrate, then re-materialize embeddings") from exc
        vectors = np.asarray(block[[row for _, row in rows]], dtype=np.float32)
        # float32 as they were: the producer id they are under named unrounded vectors
        attributes.write_vectors(root, producer, Path(file).parent.name, [h for h, _ in rows], vectors, np.float32)


def _point_at_documents(con: duckdb.DuckDBPyConnection) -> None:
    for (documents_file,) in con.execute("SELECT documents_file FROM shards").fetchall():
        if Path(documents_file).is_file():
            documents.point_at(Path(documents_file))


def move_scores_and_embeddings(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    _point_at_documents(con)
    if _table_exists(con, "scores"):
        _move_scores(con, root)
    if _table_exists(con, "embedding_index"):
        _move_embeddings(con, root)


def check_members_in_exports(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    if not _table_exists(con, "selection_members"):
        return
    selections = con.execute(
        "SELECT selection_id, selection_key, export_path FROM selections s WHERE EXISTS"
        " (SELECT 1 FROM selection_members m WHERE m.selection_id = s.selection_id) ORDER BY 1").fetchall()
    for selection_id, key, export_path in selections:
        what_to_do = (f"delete its row (DELETE FROM selections WHERE selection_id = '{selection_id}'), open the "
                      f"store again and re-materialize selections[{key}]")
        if not Path(export_path).is_file():
            raise RuntimeError(f"selection {selection_id}: its export {export_path} is missing, so its members "
                               f"would be lost with selection_members; {what_to_do}")
        # both directions in one pass: a hash on one side only
        (differing,) = con.execute(
            "SELECT count(*) FROM (SELECT content_hash FROM selection_members WHERE selection_id = ?) m"
            " FULL OUTER JOIN (SELECT DISTINCT content_hash FROM read_parquet(?)) e USING (content_hash)"
            " WHERE m.content_hash IS NULL OR e.content_hash IS NULL", [selection_id, export_path]).fetchone()
        if differing:
            raise RuntimeError(f"selection {selection_id}: its export {export_path} and its selection_members rows "
                               f"differ in {differing} documents (the file changed after the selection); {what_to_do}")


def move_cluster_assignments(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    if not _table_exists(con, "cluster_assignments"):
        return
    for (clustering_id,) in con.execute("SELECT DISTINCT clustering_id FROM cluster_assignments ORDER BY 1").fetchall():
        table = con.sql(f"SELECT {attributes.key_sql('content_hash')} AS hash, cluster, distance"
                        " FROM cluster_assignments WHERE clustering_id = ? ORDER BY hash", params=[clustering_id]
                        ).to_arrow_table()
        table = table.set_column(0, "hash", table["hash"].cast(pa.binary(attributes.HASH_BYTES)))
        attributes.replace_corpus_wide(root, clustering_id, [table])
        catalogue.insert_producer(con, clustering_id, "clusters", {}, resource_as=catalogue.CLUSTERS_RESOURCE)


def check_documents_in_files(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    if not _table_exists(con, "documents"):
        return
    columns = ", ".join(corpus.DOCUMENT_COLUMNS)
    for shard, documents_file in con.execute("SELECT shard, documents_file FROM shards ORDER BY 1").fetchall():
        what_to_do = (f"restore the file, or delete the shard's rows (DELETE FROM documents WHERE shard = '{shard}';"
                      f" DELETE FROM shards WHERE shard = '{shard}'), open the store again and re-materialize "
                      f"documents[{shard}]")
        if not Path(documents_file).is_file():
            raise RuntimeError(f"shard {shard}: its documents file {documents_file} is missing, so its documents "
                               f"would be lost with the documents table; {what_to_do}")
        try:
            # both directions in one pass: a row on one side only
            (differing,) = con.execute(
                f"SELECT count(*) FROM (SELECT {columns} FROM documents WHERE shard = ?) t"
                f" FULL OUTER JOIN (SELECT {columns} FROM read_parquet(?)) f"
                f" USING ({columns}) WHERE t.row_number IS NULL OR f.row_number IS NULL",
                [shard, documents_file]).fetchone()
        except duckdb.Error as exc:
            raise RuntimeError(f"shard {shard}: its documents file {documents_file} is unreadable ({exc}); "
                               f"{what_to_do}") from exc
        if differing:
            raise RuntimeError(f"shard {shard}: its documents file {documents_file} and its documents rows differ "
                               f"in {differing} rows; {what_to_do}")


def define_documents_view(con: duckdb.DuckDBPyConnection) -> None:
    corpus.define_documents_view(con, corpus.shard_documents_files(con))


STEPS: dict[int, Callable[[duckdb.DuckDBPyConnection, Path], None]] = {
    8: move_scores_and_embeddings, 9: check_members_in_exports, 11: move_cluster_assignments,
    13: check_documents_in_files}
# Steps that run after their migration's SQL, in its transaction.
STEPS_AFTER_SQL: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {13: define_documents_view}

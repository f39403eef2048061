"""sql/005_contents_owner.sql moves a store built by the code before it (schema 001-004, where
`contents` was a view) forward: `contents` becomes a table with the same rows, and the store then
keeps ownership by arrival, retires shards and records sketch sets."""

from __future__ import annotations

import shutil

import duckdb

from dselect_assets.assets import corpus
from dselect_assets import store as store_module
from dselect_assets.resources import DuckDBStore

# What the `contents` view of sql/001_corpus.sql computed: the lexically first (shard, row).
OLD_CONTENTS_VIEW = """
SELECT content_hash,
    arg_min(shard, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS shard,
    arg_min(row_number, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS row_number,
    arg_min(doc_id, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS doc_id,
    any_value(n_chars) AS n_chars,
    count(*) AS occurrences
FROM documents GROUP BY content_hash ORDER BY content_hash
"""

# shard, row, text: "t1" is in all three shards, "t2" twice in b (rows 12 > 2 lexically), "t3" in b and c.
DOCUMENTS = [
    ("b.jsonl", 2, "t2"), ("b.jsonl", 12, "t2"), ("b.jsonl", 3, "t1"), ("b.jsonl", 4, "t3"),
    ("a.jsonl", 7, "t1"), ("a.jsonl", 1, "t4"),
    ("c.jsonl", 1, "t3"), ("c.jsonl", 2, "t1"), ("c.jsonl", 3, "t5"),
]


def old_store(tmp_path):
    """A store at the schema of the code before 005, filled with rows the way it wrote them."""
    old_sql = tmp_path / "sql-before-005"
    old_sql.mkdir()
    for path in store_module.migration_files():
        if int(path.name[:3]) < 5:
            shutil.copy(path, old_sql / path.name)
    database = tmp_path / "old.duckdb"
    con = duckdb.connect(str(database))
    assert store_module.apply_migrations(con, old_sql) == [
        "001_corpus.sql", "002_scores.sql", "003_selection.sql", "004_training.sql"]
    for shard in ("c.jsonl", "a.jsonl", "b.jsonl"):  # ingested in this (non-lexical) order
        n = sum(1 for s, _, _ in DOCUMENTS if s == shard)
        con.execute(
            "INSERT INTO shards VALUES (?, ?, 'jsonl', 10, ?, ?, ?, 0, 0, ?, 'd', now(), 'run')",
            [shard, f"/corpus/{shard}", f"sha-{shard}", n, n, f"/nowhere/{shard}.parquet"],
        )
    for shard, row, text in DOCUMENTS:
        con.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                    [shard, row, f"{shard}:{row}", f"hash-{text}", len(text), len(text)])
    before = con.execute("SELECT * FROM contents ORDER BY content_hash").fetchall()
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'contents'").fetchall() \
        == [("VIEW",)]
    con.close()
    return database, before


def test_migration_turns_the_contents_view_into_a_table_with_the_same_rows(tmp_path):
    database, before = old_store(tmp_path)
    with store_module.connect(database) as con:
        versions = [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        assert 5 in versions
        assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'contents'"
                           ).fetchall() == [("BASE TABLE",)]
        assert con.execute("SELECT * FROM contents ORDER BY content_hash").fetchall() == before
        # shards "arrived" in name order, so the old lexical owners are the earliest arrivals
        assert con.execute("SELECT shard, arrival FROM shard_arrivals ORDER BY arrival").fetchall() == [
            ("a.jsonl", 1), ("b.jsonl", 2), ("c.jsonl", 3)]
        assert con.execute("SELECT count(*) FROM retired_shards").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM density_sketch_sets").fetchone() == (0,)
        # a content hash is in contents once (the primary key holds)
        assert con.execute("SELECT count(*), count(DISTINCT content_hash) FROM contents").fetchone() == (5, 5)


def test_a_migrated_store_moves_ownership_when_a_shard_is_retired(tmp_path):
    database, _ = old_store(tmp_path)
    store = DuckDBStore(database=str(database))
    retired = corpus.retire_shard(store, "a.jsonl", "file deleted from the corpus directory")
    assert retired == {"shard": "a.jsonl", "file_sha256": "sha-a.jsonl", "n_documents": 2,
                       "reason": "file deleted from the corpus directory"}
    owners = {h: (shard, row, n) for h, shard, row, n in store.query(
        "SELECT content_hash, shard, row_number, occurrences FROM contents")}
    # t1 (owned by a) moves to b, the earliest-arrived shard still holding it; t4 (only in a) leaves
    assert owners == {"hash-t1": ("b.jsonl", 3, 2), "hash-t2": ("b.jsonl", 2, 2), "hash-t3": ("b.jsonl", 4, 2),
                      "hash-t5": ("c.jsonl", 3, 1)}
    # the lexical rule agrees on what is left, since the migrated arrival order is the name order
    with duckdb.connect(str(database), read_only=True) as con:
        expected = con.execute(OLD_CONTENTS_VIEW).fetchall()
        assert con.execute("SELECT * FROM contents ORDER BY content_hash").fetchall() == expected
        assert con.execute("SELECT shard, n_documents, reason FROM retired_shards").fetchall() == [
            ("a.jsonl", 2, "file deleted from the corpus directory")]

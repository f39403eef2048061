"""Each migration with a step of its own moves a store built by the code before it forward: 005
(`contents` was a view) makes `contents` a table with the same rows, and the store then keeps
ownership by arrival, retires shards and records sketch sets; 008-013 move rows out of the
catalogue into files."""

from __future__ import annotations

import shutil
from pathlib import Path

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

# `contents` as the code before 012 wrote it (012 adds hash_key)
CONTENTS_ROWS = "SELECT content_hash, shard, row_number, doc_id, n_chars, occurrences FROM contents ORDER BY content_hash"

# shard, row, text: "t1" is in all three shards, "t2" twice in b (rows 12 > 2 lexically), "t3" in b and c.
DOCUMENTS = [
    ("b.jsonl", 2, "t2"), ("b.jsonl", 12, "t2"), ("b.jsonl", 3, "t1"), ("b.jsonl", 4, "t3"),
    ("a.jsonl", 7, "t1"), ("a.jsonl", 1, "t4"),
    ("c.jsonl", 1, "t3"), ("c.jsonl", 2, "t1"), ("c.jsonl", 3, "t5"),
]


def write_documents_file(path: Path, rows: list[tuple[int, str, str]]) -> str:
    """A documents file (as ingest writes it) holding `rows` (row, id, content hash)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dselect_assets.core.ingest.ingest import DOCUMENTS_SCHEMA

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows)) if rows else [[], [], []]
    pq.write_table(pa.table({"row_number": columns[0], "doc_id": columns[1], "content_hash": columns[2],
                             "text": ["t"] * len(rows), "n_chars": [5] * len(rows), "n_bytes": [5] * len(rows),
                             "metadata": [None] * len(rows)}, schema=DOCUMENTS_SCHEMA), path)
    return str(path)


def schema_before(tmp_path, version: int, database) -> duckdb.DuckDBPyConnection:
    """A connection to a new store at the schema of the code before migration `version`."""
    old_sql = tmp_path / f"sql-before-{version:03d}"
    old_sql.mkdir()
    for path in store_module.migration_files():
        if int(path.name[:3]) < version:
            shutil.copy(path, old_sql / path.name)
    con = duckdb.connect(str(database))
    # an empty store: the Python steps of the older migrations find nothing to move
    applied = store_module.apply_migrations(con, old_sql, attributes_dir=Path(database).parent / "attributes")
    assert applied == [p.name for p in sorted(old_sql.glob("*.sql"))]
    return con


def old_store(tmp_path):
    """A store at the schema of the code before 005, filled with rows the way it wrote them."""
    database = tmp_path / "old.duckdb"
    con = schema_before(tmp_path, 5, database)
    for shard in ("c.jsonl", "a.jsonl", "b.jsonl"):  # ingested in this (non-lexical) order
        rows = [(row, f"{s}:{row}", f"hash-{text}") for s, row, text in DOCUMENTS if s == shard]
        documents_file = write_documents_file(tmp_path / "documents" / shard / "0123456789abcdef.parquet", rows)
        con.execute(
            "INSERT INTO shards VALUES (?, ?, 'jsonl', 10, ?, ?, ?, 0, 0, ?, 'd', now(), 'run')",
            [shard, f"/corpus/{shard}", f"sha-{shard}", len(rows), len(rows), documents_file],
        )
    for shard, row, text in DOCUMENTS:
        con.execute("INSERT INTO documents VALUES (?, ?, ?, ?, 5, 5)", [shard, row, f"{shard}:{row}", f"hash-{text}"])
    before = con.execute(CONTENTS_ROWS).fetchall()
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'contents'").fetchall() \
        == [("VIEW",)]
    con.close()
    return database, before


def test_migration_010_drops_the_content_hash_indexes_that_made_ingest_quadratic(tmp_path):
    database, before = old_store(tmp_path)
    indexes = "SELECT index_name FROM duckdb_indexes() WHERE table_name = 'documents'"
    keys = "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'contents' AND constraint_type <> 'NOT NULL'"
    with duckdb.connect(str(database)) as con:
        assert con.execute(indexes).fetchall() == [("documents_by_hash",)]
    with store_module.connect(database) as con:
        assert con.execute(indexes).fetchall() == [] and con.execute(keys).fetchall() == []
        assert 10 in [v for (v,) in con.execute("SELECT version FROM schema_version").fetchall()]
        assert con.execute(CONTENTS_ROWS).fetchall() == before


def test_migration_turns_the_contents_view_into_a_table_with_the_same_rows(tmp_path):
    database, before = old_store(tmp_path)
    with store_module.connect(database) as con:
        versions = [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()]
        assert 5 in versions
        assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'contents'"
                           ).fetchall() == [("BASE TABLE",)]
        assert con.execute(CONTENTS_ROWS).fetchall() == before
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
        assert con.execute(CONTENTS_ROWS).fetchall() == expected
        assert con.execute("SELECT shard, n_documents, reason FROM retired_shards").fetchall() == [
            ("a.jsonl", 2, "file deleted from the corpus directory")]


def store_before_008(tmp_path):
    """A store at the schema of the code before 008 (scores and embedding_index as tables, vectors in
    .npy chunks), filled the way that code wrote it: two shards, a text in both, a retired text."""
    import numpy as np

    from dselect_assets.core.hashing import content_hash

    home = tmp_path / "home"
    database = home / "dselect.duckdb"
    home.mkdir()
    con = schema_before(tmp_path, 8, database)
    texts = {"a.jsonl": ["alpha", "shared"], "b.jsonl": ["beta", "shared"]}
    hashes = {t: content_hash(t) for ts in texts.values() for t in ts}
    for shard, shard_texts in texts.items():
        documents_file = write_documents_file(
            home / "documents" / shard / "0123456789abcdef.parquet",
            [(row, f"{shard}:{row}", hashes[text]) for row, text in enumerate(shard_texts, 1)])
        con.execute("INSERT INTO shards VALUES (?, ?, 'jsonl', 1, 'sha', ?, ?, 0, 0, ?, 'd', now(), 'run')",
                    [shard, f"/corpus/{shard}", len(shard_texts), len(shard_texts), documents_file])
        for row, text in enumerate(shard_texts, 1):
            con.execute("INSERT INTO documents VALUES (?, ?, ?, ?, 5, 5)", [shard, row, f"{shard}:{row}", hashes[text]])
    con.execute("INSERT INTO shard_arrivals VALUES ('a.jsonl', 1, now()), ('b.jsonl', 2, now())")
    con.execute("INSERT INTO contents SELECT content_hash, arg_min(shard, shard), arg_min(row_number, shard),"
                " arg_min(doc_id, shard), 5, count(*) FROM documents GROUP BY content_hash")
    gone = content_hash("a text no shard holds any more")
    rows = [(hashes["alpha"], "ask_llm:aaaaaaaaaaaaaaaa", 0.75, 0.8, None),
            (hashes["beta"], "ask_llm:aaaaaaaaaaaaaaaa", None, None, "too short"),
            (hashes["shared"], "ask_llm:aaaaaaaaaaaaaaaa", 0.25, 0.3, None),
            (gone, "ask_llm:aaaaaaaaaaaaaaaa", 0.5, 0.5, None),
            (hashes["alpha"], "perplexity:bbbbbbbbbbbbbbbb", 3.5, None, None),
            (hashes["beta"], "density:cccccccccccccccc", 0.125, None, None),
            (hashes["shared"], "density:cccccccccccccccc", 0.0625, None, None)]
    for row in rows:
        con.execute("INSERT INTO scores VALUES (?, ?, ?, ?, ?, 'run')", list(row))
    vectors = (np.arange(12, dtype=np.float32) / 3).reshape(3, 4)  # thirds: float16 would round them
    npy = home / "embeddings" / "embedding-dddddddddddddddd" / "a.jsonl" / "chunk.npy"
    npy.parent.mkdir(parents=True)
    np.save(npy, vectors)
    for i, text in enumerate(["alpha", "shared", "beta"]):
        con.execute("INSERT INTO embedding_index VALUES (?, 'embedding:dddddddddddddddd', ?, ?)",
                    [hashes[text], str(npy), i])
    con.close()
    return database, hashes, gone, rows, vectors


def test_migration_008_moves_scores_and_embeddings_into_attribute_files(tmp_path):
    import numpy as np

    from dselect_assets.store import attributes, documents

    database, hashes, gone, rows, vectors = store_before_008(tmp_path)
    store = DuckDBStore(database=str(database))
    with store.connect(read_only=True) as con:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()}
        assert not {"scores", "embedding_index"} & tables
        # the scores view over the files lists every row whose text the corpus holds
        assert sorted(con.execute("SELECT content_hash, producer_id, value, value_norm FROM scores").fetchall()) == \
            sorted((h, p, v, n) for h, p, v, n, _ in rows if h != gone)
    root = store.attributes
    assert root == database.parent / "attributes"
    # one file per (producer, owner shard); density as its one corpus-wide file; an unowned text apart
    layout = sorted(str(p.relative_to(root).parent) for p in root.rglob("*.parquet"))
    assert layout == ["ask_llm:aaaaaaaaaaaaaaaa/.migrated", "ask_llm:aaaaaaaaaaaaaaaa/a.jsonl",
                      "ask_llm:aaaaaaaaaaaaaaaa/b.jsonl", "density:cccccccccccccccc/.all",
                      "embedding:dddddddddddddddd/a.jsonl", "perplexity:bbbbbbbbbbbbbbbb/a.jsonl"]
    with duckdb.connect() as con:
        for producer, column in (("ask_llm:aaaaaaaaaaaaaaaa", "value"), ("ask_llm:aaaaaaaaaaaaaaaa", "value_norm"),
                                 ("perplexity:bbbbbbbbbbbbbbbb", "value"), ("density:cccccccccccccccc", "value")):
            expected = {h: (v if column == "value" else n) for h, p, v, n, _ in rows if p == producer}
            wanted = sorted(expected)
            values, found = attributes.read_values(con, root, producer, wanted, column)
            assert found.all()
            assert np.array_equal(values, [np.nan if expected[h] is None else expected[h] for h in wanted],
                                  equal_nan=True)
        order = [hashes["beta"], hashes["alpha"], hashes["shared"]]
        assert np.array_equal(attributes.read_vectors(con, root, "embedding:dddddddddddddddd", order),
                              vectors[[2, 0, 1]])
        # a re-run of a scorer finds the migrated results and computes nothing again
        assert attributes.present(con, root, "ask_llm:aaaaaaaaaaaaaaaa", order).all()
    # scoring workers find each shard's documents file without the catalogue
    for shard in ("a.jsonl", "b.jsonl"):
        assert documents.current(database.parent / "documents" / shard).name == "0123456789abcdef.parquet"


def store_before_009(tmp_path, export_members: dict[str, list[str]]):
    """A store at the schema of the code before 009: each selection's members as selection_members rows
    (h1, h2 for s1; h3 for s2) and its export file, listing `export_members[selection]`."""
    import polars as pl

    database = tmp_path / "home" / "dselect.duckdb"
    database.parent.mkdir()
    con = schema_before(tmp_path, 9, database)
    members = {"selection:s1": ["h1", "h2"], "selection:s2": ["h3"]}
    for selection_id, hashes in members.items():
        export = tmp_path / f"{selection_id.replace(':', '-')}.parquet"
        listed = export_members[selection_id]
        pl.DataFrame({"id": listed, "content_hash": listed, "text": listed}).write_parquet(export)
        con.execute("INSERT INTO selections VALUES (?, 'random@0.20', 'random', 0.2, 0, '{}', '{}', 'input:x', 3, ?,"
                    " ?, 'sha', 'run', now())", [selection_id, len(hashes), str(export)])
        con.executemany("INSERT INTO selection_members VALUES (?, ?)", [(selection_id, h) for h in hashes])
    con.execute("INSERT INTO eval_documents VALUES ('in_distribution', 'h2', 'd2')")
    con.close()
    return database


def test_migration_009_reads_members_from_each_selections_export_and_drops_the_table(tmp_path):
    import polars as pl

    from dselect_assets.store import selections as selection_store

    database = store_before_009(tmp_path, {"selection:s1": ["h2", "h1"], "selection:s2": ["h3"]})
    with store_module.connect(database, read_only=True) as con:
        assert not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'selection_members'"
                               ).fetchall()
        assert sorted(pl.read_parquet(selection_store.members_file(con, "selection:s1"))["content_hash"]) == ["h1", "h2"]
        assert selection_store.eval_leaks(con, "selection:s1") == 1
        assert selection_store.eval_leaks(con, "selection:s2") == 0


def test_migration_009_refuses_to_drop_members_that_no_export_lists(tmp_path):
    import pytest

    # s2's export lists a document its members rows do not hold
    database = store_before_009(tmp_path, {"selection:s1": ["h1", "h2"], "selection:s2": ["h3", "h4"]})
    with pytest.raises(RuntimeError, match="selection:s2.*differ in 1 documents.*DELETE FROM selections"):
        with store_module.connect(database):
            pass
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM selection_members").fetchone() == (3,)
    # an export that is gone is refused the same way
    (tmp_path / "selection-s1.parquet").unlink()
    with pytest.raises(RuntimeError, match="selection:s1: its export .* is missing"):
        store_module.apply_migrations(duckdb.connect(str(database)), attributes_dir=tmp_path / "attributes")


def test_migration_011_moves_cluster_assignments_to_the_clusterings_attribute_file(tmp_path):
    import hashlib

    from dselect_assets.store import attributes
    from dselect_assets.store import selections as selection_store

    database = tmp_path / "home" / "dselect.duckdb"
    database.parent.mkdir()
    con = schema_before(tmp_path, 11, database)
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in ("alpha", "beta", "gamma")]
    clustering = "kmeans:eeeeeeeeeeeeeeee"
    con.execute("INSERT INTO producers VALUES (?, 'clusters', ?, now())", [clustering, '{"embedder": "embedding:d"}'])
    con.executemany("INSERT INTO cluster_assignments VALUES (?, ?, ?, ?)",
                    [(h, clustering, cluster, 0.5 * cluster) for h, cluster in zip(hashes, (2, 0, 2))])
    con.close()
    with store_module.connect(database) as con:
        assert not con.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'cluster_assignments'"
                               ).fetchall()
        assert selection_store.current_clustering(con) == (clustering, "embedding:d")
    signals = attributes.DocumentSignals(database.parent / "attributes", [hashes[2], "f" * 64, hashes[0], hashes[1]])
    cluster, parts, assigned = selection_store.clusters_of(signals, clustering, with_parts=True)
    assert cluster.tolist() == [2, -1, 2, 0] and assigned.tolist() == [True, False, True, True]
    assert parts is None  # a clustering from before clusters had parts: SemDeDup splits large ones itself


def test_migration_012_keys_contents_by_hash_prefix_and_ownership_still_moves(tmp_path):
    from dselect_assets.core.hashing import content_hash

    database = tmp_path / "home" / "dselect.duckdb"
    database.parent.mkdir()
    con = schema_before(tmp_path, 12, database)
    texts = {"a.jsonl": ["alpha", "shared"], "b.jsonl": ["beta", "shared"]}
    hashes = {t: content_hash(t) for ts in texts.values() for t in ts}
    for arrival, (shard, shard_texts) in enumerate(texts.items(), 1):
        documents_file = write_documents_file(
            tmp_path / "documents" / shard / "0123456789abcdef.parquet",
            [(row, f"{shard}:{row}", hashes[text]) for row, text in enumerate(shard_texts, 1)])
        con.execute("INSERT INTO shards VALUES (?, ?, 'jsonl', 1, ?, 2, 2, 0, 0, ?, 'd', now(), 'run')",
                    [shard, f"/corpus/{shard}", f"sha-{shard}", documents_file])
        con.execute("INSERT INTO shard_arrivals VALUES (?, ?, now())", [shard, arrival])
        for row, text in enumerate(shard_texts, 1):
            con.execute("INSERT INTO documents VALUES (?, ?, ?, ?, 5, 5)", [shard, row, f"{shard}:{row}", hashes[text]])
    con.execute("INSERT INTO contents SELECT content_hash, arg_min(shard, shard), arg_min(row_number, shard),"
                " arg_min(doc_id, shard), 5, count(*) FROM documents GROUP BY content_hash")
    con.close()
    with store_module.connect(database) as con:
        keys = dict(con.execute("SELECT content_hash, hash_key FROM contents").fetchall())
    assert keys == {h: int(h[:16], 16) for h in hashes.values()}
    # retiring a finds "shared" in contents by its key: it moves to b, and alpha leaves
    store = DuckDBStore(database=str(database))
    corpus.retire_shard(store, "a.jsonl", "file deleted from the corpus directory")
    assert store.query("SELECT content_hash, shard, occurrences, hash_key FROM contents ORDER BY shard, row_number") == [
        (hashes["beta"], "b.jsonl", 1, int(hashes["beta"][:16], 16)),
        (hashes["shared"], "b.jsonl", 1, int(hashes["shared"][:16], 16))]


def test_migration_013_reads_documents_from_each_shards_file_and_drops_the_table(tmp_path):
    database, _ = old_store(tmp_path)
    with duckdb.connect(str(database), read_only=True) as con:
        before = con.execute("SELECT * FROM documents ORDER BY ALL").fetchall()
    with store_module.connect(database) as con:
        assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'documents'"
                           ).fetchall() == [("VIEW",)]
        assert con.execute("SELECT * FROM documents ORDER BY ALL").fetchall() == before
    # the view follows the shards: a retired shard's rows leave it
    corpus.retire_shard(DuckDBStore(database=str(database)), "a.jsonl", "file deleted from the corpus directory")
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT * FROM documents ORDER BY ALL").fetchall() == [
            row for row in before if row[0] != "a.jsonl"]


def test_migration_013_refuses_to_drop_rows_that_no_documents_file_holds(tmp_path):
    import pytest

    database, _ = old_store(tmp_path)
    with duckdb.connect(str(database)) as con:
        b_file = con.execute("SELECT documents_file FROM shards WHERE shard = 'b.jsonl'").fetchone()[0]
    # b's file lost its row 12
    write_documents_file(Path(b_file), [(row, f"{s}:{row}", f"hash-{text}")
                                        for s, row, text in DOCUMENTS if s == "b.jsonl" and row != 12])
    with pytest.raises(RuntimeError, match="shard b.jsonl: its documents file .* differ in 1 rows.*DELETE FROM documents"):
        with store_module.connect(database):
            pass
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone() == (len(DOCUMENTS),)
        assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'documents'"
                           ).fetchall() == [("BASE TABLE",)]
    Path(b_file).unlink()
    with pytest.raises(RuntimeError, match="shard b.jsonl: its documents file .* is missing"):
        store_module.apply_migrations(duckdb.connect(str(database)), attributes_dir=tmp_path / "attributes")

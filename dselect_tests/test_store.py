"""Schema migrations from sql/: applied in order, recorded, never twice."""

import duckdb
import pytest

from dselect_assets import store


def test_migrations_apply_in_order_and_are_recorded(tmp_path):
    db = tmp_path / "m.duckdb"
    with store.connect(db) as con:
        versions = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    expected = [p.name for p in store.migration_files()]
    assert [name for _, name in versions] == expected
    assert [v for v, _ in versions] == sorted(v for v, _ in versions)
    assert {"shards", "documents", "quarantine", "runs", "artifacts", "producers", "contents"} <= tables
    # scores and embeddings live in attribute files (sql/008_attribute_files.sql)
    assert not {"embedding_index"} & tables


def test_reapplying_is_a_no_op_and_new_files_are_picked_up(tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_a.sql").write_text("CREATE TABLE a (x INTEGER);")
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    assert store.apply_migrations(con, sql_dir) == ["001_a.sql"]
    assert store.apply_migrations(con, sql_dir) == []
    (sql_dir / "002_b.sql").write_text("CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (1);")
    assert store.apply_migrations(con, sql_dir) == ["002_b.sql"]
    assert con.execute("SELECT * FROM a").fetchall() == [(1,)]


def test_a_failing_migration_is_rolled_back_and_not_recorded(tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "001_bad.sql").write_text("CREATE TABLE c (x INTEGER); SELECT * FROM missing_table;")
    con = duckdb.connect(str(tmp_path / "y.duckdb"))
    try:
        store.apply_migrations(con, sql_dir)
    except RuntimeError as exc:
        assert "001_bad.sql" in str(exc)
    else:
        raise AssertionError("expected the migration to fail")
    assert con.execute("SELECT count(*) FROM schema_version").fetchone() == (0,)


HOLD_OPEN = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("holding", flush=True)
time.sleep(120)
"""

FRESH_READER = """
import sys
from dselect_assets import store
with store.connect(sys.argv[1], read_only=True, lock_timeout_s=10) as con:
    print(con.execute("SELECT count(*) FROM shards").fetchone()[0])
"""


def _hold(db, mode):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(db), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_fresh_process_reads_beside_another_reader_without_taking_the_write_lock(tmp_path):
    """The first read-only connection of a process must not open the file writable."""
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "s.duckdb"
    with store.connect(db):
        pass
    holder = _hold(db, "ro")  # a notebook reading the store: a writer could not open now
    try:
        repo = Path(__file__).resolve().parents[1]
        out = subprocess.run([sys.executable, "-c", FRESH_READER, str(db)], cwd=repo, capture_output=True,
                             text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0"


def test_a_held_lock_fails_after_the_bounded_wait_naming_the_file(tmp_path):
    import pytest

    db = tmp_path / "w.duckdb"
    with store.connect(db):
        pass
    holder = _hold(db, "rw")
    try:
        with pytest.raises(store.StoreLockTimeout, match=r"w\.duckdb: still locked by another process"):
            with store.connect(db, lock_timeout_s=1):
                pass
    finally:
        holder.kill()
        holder.wait()
    with store.connect(db, lock_timeout_s=10) as con:  # released: the next writer gets in
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(store.migration_files())


def test_records_another_writer_took_in_meanwhile_are_skipped_not_an_error(tmp_path):
    from dselect_assets.store import catalogue

    db, root = tmp_path / "s.duckdb", tmp_path / "attributes"
    with store.connect(db):
        pass
    catalogue.leave_record(root, {"kind": "producer", "producer_id": "ask_llm:x", "producer_kind": "ask_llm",
                                  "identity": {"model": "m"}, "resource_as": ""})
    listed_before = catalogue.pending_records(root)
    # Another writer takes the record in and deletes it, as two `dselect run` workers can.
    with store.connect(db, attributes_dir=root):
        pass
    assert not catalogue.pending_records(root)
    con = duckdb.connect(str(db))
    catalogue.apply_records(con, listed_before)
    assert con.execute("SELECT count(*) FROM producers WHERE producer_id = 'ask_llm:x'").fetchone() == (1,)


def test_vector_rows_read_the_positions_asked_for_across_chunk_files(tmp_path):
    import hashlib

    import numpy as np
    import pytest

    from dselect_assets.store import attributes
    from dselect_assets.store.errors import MissingUpstream

    producer = "embedding:dddddddddddddddd"
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)]
    vectors = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float16).astype(np.float32)
    attributes.write_vectors(tmp_path, producer, "a.jsonl", hashes[:200], vectors[:200])
    attributes.write_vectors(tmp_path, producer, "b.jsonl", hashes[200:], vectors[200:])
    wanted = np.random.default_rng(1).permutation(300)
    with duckdb.connect() as con:
        rows = attributes.VectorRows(con, tmp_path, producer, [hashes[i] for i in wanted])
        assert (rows.n, rows.dim) == (300, 8)
        asked = np.array([5, 0, 299, 5, 150])
        np.testing.assert_array_equal(rows.read(asked), vectors[wanted[asked]])
        # storage order visits every position once, one chunk file after the other
        order = rows.storage_order()
        assert sorted(order) == list(range(300))
        in_first_file = wanted[order] < 200
        assert in_first_file[:200].all() and not in_first_file[200:].any()
        subset = rows.take(np.array([7, 3]))
        np.testing.assert_array_equal(subset.read(np.array([1, 0])), vectors[wanted[[3, 7]]])
        with pytest.raises(MissingUpstream, match="1 documents have no embedding"):
            attributes.VectorRows(con, tmp_path, producer, [hashes[0], "f" * 64])
        # told the documents are b's, it looks in b's files first and finds a's texts in a's
        for shard in ("b.jsonl", "a.jsonl", "never-ingested.jsonl"):
            np.testing.assert_array_equal(
                attributes.read_vectors(con, tmp_path, producer, [hashes[i] for i in wanted], shard), vectors[wanted])
        with pytest.raises(MissingUpstream, match="1 documents have no embedding"):
            attributes.VectorRows(con, tmp_path, producer, [hashes[250], "f" * 64], "b.jsonl")


def test_validation_split_is_the_hashes_below_the_fraction_of_32_bits(tmp_path):
    import hashlib

    from dselect_assets.store import selections

    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    with store.connect(tmp_path / "s.duckdb") as con:
        con.executemany("INSERT INTO contents (content_hash, shard, row_number, doc_id, n_chars, occurrences)"
                        " VALUES (?, 'a.jsonl', ?, ?, 10, 1)",
                        [[h, i, f"doc-{i}"] for i, h in enumerate(hashes)])
        for fraction in (0.0, 0.1, 0.5, 1.0):
            split = selections.validation_split(con, fraction)
            expected = sorted(h for h in hashes if int(h[:8], 16) < int(fraction * 2**32))
            assert split["content_hash"].to_pylist() == expected
            assert split["doc_id"].to_pylist() == [f"doc-{hashes.index(h)}" for h in expected]


def test_vector_rows_read_runs_of_nearby_rows_and_name_a_cut_file(tmp_path):
    import hashlib

    import numpy as np
    import pytest

    from dselect_assets.store import attributes
    from dselect_assets.store.errors import CorruptFile

    producer = "embedding:dddddddddddddddd"
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    vectors = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    hash_file = attributes.write_vectors(tmp_path, producer, "a.jsonl", hashes, vectors, np.float32)
    gap = attributes.ROW_GAP
    # rows just within and just beyond the gap that joins them into one read, a repeat, the last row
    wanted = np.array([0, gap, 2 * gap + 1, 2 * gap + 1, 5 * gap, 5 * gap + 1, 399, 3])
    with duckdb.connect() as con:
        rows = attributes.VectorRows(con, tmp_path, producer, hashes)
        np.testing.assert_array_equal(rows.read(wanted), vectors[wanted])
        np.testing.assert_array_equal(rows.read(np.arange(400)), vectors)
        npy = hash_file.with_suffix(".npy")
        npy.write_bytes(npy.read_bytes()[: -8 * 4 * 10])  # the last ten rows cut off, the header intact
        # cut under a reader that has its header: the rows past the end fail to read
        with pytest.raises(CorruptFile, match=rf"{npy.name}: unreadable embedding file.*ends before row 399"):
            rows.read(np.array([0, 399]))
        # a new reader finds the header and the file's size disagree
        with pytest.raises(CorruptFile, match=rf"{npy.name}: unreadable embedding file.*re-materialize embeddings"):
            attributes.VectorRows(con, tmp_path, producer, hashes).read(np.array([0, 3]))


def test_vectors_are_stored_as_float16_and_read_as_float32_with_older_float32_files(tmp_path):
    import hashlib

    import numpy as np

    from dselect_assets.assets.scoring import embedding_identity
    from dselect_assets.core.hashing import producer_id
    from dselect_assets.store import attributes

    producer = "embedding:dddddddddddddddd"
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    vectors = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    new = attributes.write_vectors(tmp_path, producer, "a.jsonl", hashes[:30], vectors[:30])
    old = attributes.write_vectors(tmp_path, producer, "b.jsonl", hashes[30:], vectors[30:], np.float32)
    assert np.load(new.with_suffix(".npy")).dtype == np.float16
    assert np.load(old.with_suffix(".npy")).dtype == np.float32
    with duckdb.connect() as con:
        read = attributes.read_vectors(con, tmp_path, producer, hashes)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read[:30], vectors[:30].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(read[30:], vectors[30:])
    assert 0 < np.abs(read[:30] - vectors[:30]).max() < 1e-3
    # rounded vectors are other values: their producer is not the unrounded one's
    model = {"model": "m", "dtype": "float32"}
    assert producer_id("embedding", **embedding_identity(model)) != producer_id("embedding", **model)


def test_document_signals_read_each_column_once_and_as_read_values_does(tmp_path, monkeypatch):
    import hashlib

    import numpy as np

    from dselect_assets.store import attributes

    rng = np.random.default_rng(3)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)]
    scored = hashes[:-1]  # the last is in no file
    value = rng.random(len(scored))
    value[7] = np.nan  # unscorable
    producer = "ask_llm:0123456789abcdef"
    for shard, rows in (("a", slice(0, 200)), ("b", slice(200, None))):
        attributes.write_chunk(tmp_path, producer, shard,
                               attributes.score_table(producer, scored[rows], value[rows], 2 * value[rows]))
    wanted = [hashes[i] for i in rng.permutation(len(hashes))]
    with duckdb.connect() as con:
        expected = {column: attributes.read_values(con, tmp_path, producer, wanted, column)[0]
                    for column in ("value", "value_norm")}
        expected_found = attributes.read_values(con, tmp_path, producer, wanted)[1]
    reads = []
    read = attributes._read_columns
    monkeypatch.setattr(attributes, "_read_columns", lambda *a: reads.append(a[-1]) or read(*a))
    with attributes.DocumentSignals(tmp_path, wanted) as signals:
        value_norm, found = signals.values(producer, "value_norm")
        both, found_again = signals.columns(producer, ("value", "value_norm"))
        assert signals.values(producer, "value")[0] is both["value"] and both["value_norm"] is value_norm
    assert reads == [("value_norm",), ("value",)]  # each column read once, only the missing one the second time
    np.testing.assert_array_equal(found, expected_found)
    assert found_again is found and found.sum() == len(scored)
    for column in ("value", "value_norm"):
        np.testing.assert_array_equal(both[column], expected[column])

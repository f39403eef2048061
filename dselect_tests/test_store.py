"""Schema migrations from sql/: applied in order, recorded, never twice."""

import duckdb

from dselect_assets.core import store


def test_migrations_apply_in_order_and_are_recorded(tmp_path):
    db = tmp_path / "m.duckdb"
    with store.connect(db) as con:
        versions = con.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    expected = [p.name for p in store.migration_files()]
    assert [name for _, name in versions] == expected
    assert [v for v, _ in versions] == sorted(v for v, _ in versions)
    assert {"shards", "documents", "quarantine", "runs", "artifacts", "scores", "contents"} <= tables


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

"""DuckDB metadata store: schema migrations and short, lock-tolerant connections.

DuckDB lets one process hold the database file for writing. Dagster's
multiprocess executor runs steps in separate processes, so every access here is
a short connection that is retried while another process holds the lock; heavy
work happens outside any connection and only its results are written, in one
transaction per chunk.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")
_migrated: set[str] = set()


class StoreLockTimeout(RuntimeError):
    pass


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """Numbered `NNN_name.sql` files in apply order."""
    files = sorted(p for p in sql_dir.glob("*.sql") if p.name[:3].isdigit())
    if not files:
        raise FileNotFoundError(f"no migration files (NNN_name.sql) in {sql_dir}")
    return files


def apply_migrations(con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply every migration not yet recorded in schema_version; return the names applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    done = {row[0] for row in con.execute("SELECT version FROM schema_version").fetchall()}
    applied = []
    for path in migration_files(sql_dir):
        version = int(path.name[:3])
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(path.read_text(encoding="utf-8"))
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, now())", [version, path.name]
            )
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise RuntimeError(f"migration {path} failed: {exc}") from exc
        applied.append(path.name)
    return applied


def _is_lock_error(exc: Exception) -> bool:
    return any(marker in str(exc) for marker in _LOCK_MARKERS)


@contextlib.contextmanager
def connect(
    database: str | Path, read_only: bool = False, lock_timeout_s: float = 600.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the database, waiting (with jittered backoff) while another process holds it.

    The first writable connection in a process applies pending migrations.
    A read-only connection to a file that does not exist yet is opened writable
    once so the schema exists.
    """
    database = str(database)
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    if read_only and (database not in _migrated or not Path(database).exists()):
        read_only = False
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(database, read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() > deadline:
                raise StoreLockTimeout(
                    f"{database}: still locked by another process after {lock_timeout_s:.0f}s"
                ) from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    try:
        if not read_only and database not in _migrated:
            apply_migrations(con)
            _migrated.add(database)
        yield con
    finally:
        con.close()

"""DuckDB metadata store: schema migrations and short, lock-tolerant connections.

DuckDB lets one process hold the database file for writing. Dagster's
multiprocess executor runs steps in separate processes, so every access here is
a short connection that is retried while another process holds the lock; heavy
work happens outside any connection and only its results are written, in one
transaction per chunk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb

from dselect_assets.store import attributes, catalogue, migrate_files
from dselect_assets.store.sql_text import literal

_log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")
_migrated: set[str] = set()
# Every connection is one short transaction, so a wait this long means something holds the
# file open (a notebook, a stuck process): fail and say so rather than stall a run.
DEFAULT_LOCK_TIMEOUT_S = 120.0
LOCK_WAIT_WARN_S = 5.0


class StoreLockTimeout(RuntimeError):
    pass


# What one corpus-sized query (an export's joins and sort) may hold before DuckDB spills to disk.
# DuckDB's own default is 80% of the machine's memory, which lets a 3M-document export run a
# container out of memory; 2 GB leaves room under a 4 GiB step for Python and Arrow batches.
QUERY_MEMORY_LIMIT = "2GB"


def bound_memory(con: duckdb.DuckDBPyConnection, spill_dir: Path, memory_limit: str = QUERY_MEMORY_LIMIT) -> None:
    """Let this connection's joins and sorts spill to `spill_dir` past `memory_limit`, and reorder
    rows wherever a query asks no order (an unordered streaming join buffers nothing to keep it)."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    # a directory of this connection's own: DuckDB names its spill files alike in every process,
    # and creates (and at close removes) the directory only when it spills
    own = spill_dir / f"duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = {literal(own)}")
    con.execute("SET preserve_insertion_order = false")


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """Numbered `NNN_name.sql` files in apply order."""
    files = sorted(p for p in sql_dir.glob("*.sql") if p.name[:3].isdigit())
    if not files:
        raise FileNotFoundError(f"no migration files (NNN_name.sql) in {sql_dir}")
    return files


def apply_migrations(
    con: duckdb.DuckDBPyConnection, sql_dir: Path = SQL_DIR, attributes_dir: Path | None = None
) -> list[str]:
    """Apply every migration not yet recorded in schema_version; return the names applied.

    A migration with a Python step (migrate_files.STEPS: rows moved out to files) runs it in the
    same transaction, before its SQL; it writes under `attributes_dir`. A step of
    migrate_files.STEPS_AFTER_SQL runs after its migration's SQL, in the same transaction.
    """
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
            if version in migrate_files.STEPS:
                if attributes_dir is None:
                    raise ValueError(f"{path.name} moves rows into attribute files: give attributes_dir")
                migrate_files.STEPS[version](con, Path(attributes_dir))
            con.execute(path.read_text(encoding="utf-8"))
            if version in migrate_files.STEPS_AFTER_SQL:
                migrate_files.STEPS_AFTER_SQL[version](con)
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


def latest_schema_version(sql_dir: Path = SQL_DIR) -> int:
    return int(migration_files(sql_dir)[-1].name[:3])


def _open(database: str, read_only: bool, lock_timeout_s: float) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, waiting with jittered backoff while another process holds the file.

    The wait is bounded and logged: past a few seconds it says so, and at the limit the
    error carries DuckDB's own message, which names the process holding the lock.
    """
    started = time.monotonic()
    delay, warned = 0.02, False
    while True:
        try:
            con = duckdb.connect(database, read_only=read_only)
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise
            waited = time.monotonic() - started
            if waited > lock_timeout_s:
                raise StoreLockTimeout(
                    f"{database}: still locked by another process after {waited:.0f}s "
                    f"(limit lock_timeout_s={lock_timeout_s:.0f}): {exc}"
                ) from exc
            if waited > LOCK_WAIT_WARN_S and not warned:
                _log.warning("%s: waiting for another process's lock (%.1fs so far): %s", database, waited, exc)
                warned = True
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)
            continue
        if warned:
            _log.warning("%s: got the lock after %.1fs", database, time.monotonic() - started)
        return con


def _schema_is_current(database: str, lock_timeout_s: float) -> bool:
    if not Path(database).exists():
        return False
    con = _open(database, True, lock_timeout_s)
    try:
        row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    except duckdb.CatalogException:
        return False
    finally:
        con.close()
    return row is not None and row[0] == latest_schema_version()


def _take_in_records(database: str, attributes_dir: Path, lock_timeout_s: float) -> None:
    """Apply the records scoring workers left for the catalogue (see catalogue.py), then delete them."""
    if not catalogue.pending_records(attributes_dir):
        return
    con = _open(database, False, lock_timeout_s)
    try:
        # Listed again under the write lock: a writer that held it meanwhile may have taken some in.
        records = catalogue.pending_records(attributes_dir)
        con.execute("BEGIN TRANSACTION")
        try:
            catalogue.apply_records(con, records)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()
    for path in records:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def connect(
    database: str | Path,
    read_only: bool = False,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    attributes_dir: str | Path | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short connection to the store; migrations are applied once per process, by a writer.

    A read-only connection never takes the write lock for its own reads: it checks that the
    schema is current and only when it is not (a new or older store) opens a writer once to
    migrate it, and likewise once to take in records that workers left for the catalogue
    (with `attributes_dir`), then reads read-only. With `attributes_dir` the connection also has
    a temporary view `scores` (content_hash, producer_id, value, value_norm, problem): every
    stored score of a text in `contents`, for ad-hoc queries; the assets read the files through
    `attributes`, one producer at a time.
    """
    database = str(database)
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    if attributes_dir is None:
        attributes_dir = Path(database).parent / "attributes"
    if database not in _migrated:
        if not (read_only and _schema_is_current(database, lock_timeout_s)):
            con = _open(database, False, lock_timeout_s)
            try:
                apply_migrations(con, attributes_dir=attributes_dir)
            finally:
                con.close()
        _migrated.add(database)
    _take_in_records(database, Path(attributes_dir), lock_timeout_s)
    con = _open(database, read_only, lock_timeout_s)
    try:
        con.execute(
            "CREATE TEMP VIEW scores AS SELECT DISTINCT ON (c.content_hash, s.producer_id)"
            " c.content_hash, s.producer_id, s.value, s.value_norm, s.problem"
            f" FROM ({attributes.scores_view_sql(Path(attributes_dir))}) s"
            f" JOIN contents c ON {attributes.key_sql('c.content_hash')} = s.hash"
        )
        yield con
    finally:
        con.close()

"""Dagster resources: where the data lives and the DuckDB metadata store.

Defaults come from the environment so `dagster dev`, the CLI and the tests all
agree: DSELECT_HOME (default ./data) holds the DuckDB file and every artifact;
DSELECT_CORPUS_DIR (default $DSELECT_HOME/corpus) is the directory of shard
files the sensor watches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb

from dselect_assets.core import store


def default_home() -> Path:
    return Path(os.environ.get("DSELECT_HOME") or Path.cwd() / "data").resolve()


class DataPaths(dg.ConfigurableResource):
    """Directories for the corpus and every file dselect writes."""

    home: str = ""
    corpus_dir: str = ""

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() if self.home else default_home()

    @property
    def corpus(self) -> Path:
        if self.corpus_dir:
            return Path(self.corpus_dir).resolve()
        env = os.environ.get("DSELECT_CORPUS_DIR")
        return Path(env).resolve() if env else self.root / "corpus"

    def dir(self, *parts: str) -> Path:
        """A sub-directory of home, created on first use."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


class DuckDBStore(dg.ConfigurableResource):
    """The DuckDB metadata store (one file), opened briefly and retried while locked."""

    database: str = ""
    lock_timeout_s: float = 600.0

    @property
    def path(self) -> Path:
        if self.database:
            return Path(self.database).resolve()
        env = os.environ.get("DSELECT_DB")
        return Path(env).resolve() if env else default_home() / "dselect.duckdb"

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with store.connect(self.path, read_only=read_only, lock_timeout_s=self.lock_timeout_s) as con:
            yield con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with store.connect(self.path, lock_timeout_s=self.lock_timeout_s) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

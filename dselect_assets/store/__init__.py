"""The data-access layer: every SQL statement dselect runs, Arrow and NumPy in and out.

- `connection`: the DuckDB catalogue file, its migrations and short, lock-tolerant connections;
- `attributes`: per-(producer, shard) Parquet attribute files (scores, embeddings) and the
  queries over them, usable from an in-memory DuckDB connection that never opens the catalogue;
- `catalogue`: producers, runs and artifacts, and the records workers leave beside their files
  for the catalogue to take in;
- `training`: the selection and tokenizer a checkpoint trains on, checkpoints and eval metrics.
"""

from dselect_assets.store.connection import (
    DEFAULT_LOCK_TIMEOUT_S,
    SQL_DIR,
    StoreLockTimeout,
    apply_migrations,
    connect,
    latest_schema_version,
    migration_files,
)
from dselect_assets.store.errors import CorruptFile, MissingUpstream

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S", "SQL_DIR", "StoreLockTimeout", "apply_migrations", "connect",
    "latest_schema_version", "migration_files", "CorruptFile", "MissingUpstream",
]

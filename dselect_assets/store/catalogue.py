"""The catalogue: producers, which producer a configured resource is, lineage rows and artifacts.

Scoring workers never open the DuckDB file (it may sit on storage they must not share). What
they have to tell the catalogue (a producer, the resource that produced it, a lineage row) they
leave as a small JSON record in `<attributes>/_catalogue/`, written atomically beside their
attribute files. The catalogue takes records in at read time: the first connection of a process
that finds records waiting applies them in one transaction and deletes them (connection.connect),
so whoever reads producers or runs sees every finished worker's records. Applying is idempotent:
a record applied twice (a kill between commit and delete) changes nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path

import duckdb

from dselect_assets.core.hashing import file_sha256
from dselect_assets.store.attributes import CATALOGUE_DIR

CLUSTERS_RESOURCE = "clusters"  # the resource_producers row naming the clusters asset's last clustering


def insert_producer(con: duckdb.DuckDBPyConnection, producer: str, kind: str, identity: dict,
                    resource_as: str = "", at: datetime | None = None) -> None:
    """Record a producer and, with `resource_as`, that the resource so configured produces it now
    (a later registration of the same resource wins, whichever record is applied first)."""
    at = at or datetime.now()
    con.execute(
        "INSERT INTO producers VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [producer, kind, json.dumps(identity, sort_keys=True, default=str), at],
    )
    if resource_as:
        con.execute(
            "INSERT INTO resource_producers VALUES (?, ?, ?) ON CONFLICT (resource) DO UPDATE"
            " SET producer_id = excluded.producer_id, registered_at = excluded.registered_at"
            " WHERE excluded.registered_at >= resource_producers.registered_at",
            [resource_as, producer, at],
        )


def insert_run(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    """Upsert a lineage row (the same run re-executed replaces it); `row` as `run_row` builds it."""
    con.execute(
        "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row["run_id"], row["asset"], row["partition_key"], row["config_json"], row["producer_id"],
         row["code_version"], row["started_at"], row["finished_at"], row["outputs_json"]],
    )


def run_row(run_id: str, asset: str, partition_key: str, config: dict | None, producer_id: str | None,
            code_version: str | None, outputs: dict | None) -> dict:
    now = datetime.now().isoformat()
    return {
        "run_id": run_id, "asset": asset, "partition_key": partition_key,
        "config_json": json.dumps(config or {}, sort_keys=True, default=str), "producer_id": producer_id,
        "code_version": code_version, "started_at": now, "finished_at": now,
        "outputs_json": json.dumps(outputs or {}, sort_keys=True, default=str),
    }


def insert_artifact(con: duckdb.DuckDBPyConnection, path: Path, kind: str, run_id: str, producer_id: str | None = None,
                    partition_key: str | None = None, n_rows: int | None = None, sha256: str | None = None) -> str:
    digest = sha256 or file_sha256(path)
    con.execute(
        "INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, now())",
        [str(path), kind, producer_id, partition_key, digest, n_rows, run_id],
    )
    return digest


def resource_producer(con: duckdb.DuckDBPyConnection, resource: str) -> str | None:
    rows = con.execute("SELECT producer_id FROM resource_producers WHERE resource = ?", [resource]).fetchall()
    return rows[0][0] if rows else None


def producer_exists(con: duckdb.DuckDBPyConnection, producer: str, kind: str) -> bool:
    return bool(con.execute("SELECT 1 FROM producers WHERE producer_id = ? AND kind = ?", [producer, kind]).fetchall())


def artifacts_of_kind(con: duckdb.DuckDBPyConnection, kind: str) -> list[tuple[str, str, dict]]:
    """(producer id, path, producer identity) of every artifact of `kind`, newest first."""
    rows = con.execute(
        "SELECT a.producer_id, a.path, p.identity_json FROM artifacts a JOIN producers p USING (producer_id)"
        " WHERE a.kind = ? ORDER BY a.created_at DESC",
        [kind],
    ).fetchall()
    return [(producer, path, json.loads(identity)) for producer, path, identity in rows]


# ------------------------------------------------------------ records left by workers


def leave_record(attributes_root: Path, record: dict) -> Path:
    """Leave a record for the catalogue (kind 'producer' or 'run'), atomically."""
    directory = Path(attributes_root) / CATALOGUE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    record = {**record, "recorded_at": datetime.now().isoformat()}
    path = directory / f"{record['recorded_at'].replace(':', '')}-{uuid.uuid4().hex}.json"
    tmp = directory / f".{path.name}.tmp"
    tmp.write_text(json.dumps(record, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def pending_records(attributes_root: Path) -> list[Path]:
    directory = Path(attributes_root) / CATALOGUE_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def apply_records(con: duckdb.DuckDBPyConnection, records: list[Path]) -> None:
    """Apply the given records, in the order they were left, inside the caller's transaction."""
    for path in records:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            # Another writer applied it, committed, then deleted it after this list was made;
            # applying a record is idempotent, so skipping it loses nothing.
            continue
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{path}: unreadable catalogue record ({exc}); delete it and re-materialize "
                               "the asset that wrote it") from exc
        if record["kind"] == "producer":
            insert_producer(con, record["producer_id"], record["producer_kind"], record["identity"],
                            record.get("resource_as", ""), datetime.fromisoformat(record["recorded_at"]))
        elif record["kind"] == "run":
            insert_run(con, record["row"])
        else:
            raise RuntimeError(f"{path}: unknown catalogue record kind {record['kind']!r}")

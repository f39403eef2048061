"""Corpus ingestion: one `documents` partition per shard file, and the sensor that finds new files."""

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pydantic

from dselect_assets.assets.common import (
    insert_frame,
    markdown_table,
    record_run,
    register_artifact,
    shards,
    write_atomically,
)
from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.shard_keys import validate_shard_key
from dselect_assets.core.ingest import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    FIELDS_FILE_NAME,
    FieldMap,
    ShardReadError,
    hf_dataset_arrow_files,
    resolve_fields,
    shard_format,
    shard_format_or_none,
    write_documents,
)
from dselect_assets.resources import DataPaths, DuckDBStore
from dselect_assets.store import documents as documents_files

INGEST_VERSION = "2"  # 2: documents files carry a metadata column


class IngestConfig(dg.Config):
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    # Unset (null) fields come from the fields file's rule for the shard, then the defaults.
    text_field: str | None = pydantic.Field(
        default=None, description="Field (dotted path for nested JSON/structs) holding the text; default 'text'."
    )
    id_field: str | None = pydantic.Field(
        default=None, description="Field holding the document id; default 'id', else '<shard>:<row>'."
    )
    metadata_fields: list[str] | None = pydantic.Field(
        default=None, description="Fields carried to the exports as metadata, e.g. ['url', 'source']."
    )
    fields_file: str = pydantic.Field(
        default="",
        description=f"TOML file of per-shard [[shard]] rules (match, text_field, id_field, metadata_fields); "
        f"default: $DSELECT_HOME/{FIELDS_FILE_NAME} when it exists. Sensor-launched runs use it.",
    )

    def field_map(self, shard: str, home: Path) -> FieldMap:
        fields_file = Path(self.fields_file) if self.fields_file else Path(home) / FIELDS_FILE_NAME
        if self.fields_file and not fields_file.is_file():
            raise ShardReadError(f"fields file {fields_file} (fields_file in the documents config) does not exist")
        return resolve_fields(shard, self.text_field, self.id_field, self.metadata_fields, fields_file)


def is_shard_file(path: Path) -> bool:
    # shard_format_or_none, not path.suffix: `c4-train.00000-of-01024.json.gz` has two suffixes.
    return path.is_file() and shard_format_or_none(path) is not None and not path.name.startswith(".")


def list_shard_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if is_shard_file(p)) if corpus.is_dir() else []


# A partition key must be a plain file name, so an Arrow file of a Hugging Face dataset
# directory `wiki/` is keyed `wiki@data-00000-of-00002.arrow` (`wiki@train@...` for a split).
HF_KEY_SEPARATOR = "@"


def list_shards(corpus: Path) -> dict[str, Path]:
    """Every shard by partition key: the shard files of the corpus directory, then one per Arrow
    file of each Hugging Face dataset (`save_to_disk`) directory in it."""
    found = {p.name: p for p in list_shard_files(corpus)}
    if corpus.is_dir():
        for directory in sorted(d for d in corpus.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for arrow in hf_dataset_arrow_files(directory):
                found.setdefault(HF_KEY_SEPARATOR.join(arrow.relative_to(corpus).parts), arrow)
    return found


def shard_source(corpus: Path, key: str) -> Path:
    """The file a shard key names: `corpus/key`, or the Arrow file of a dataset directory."""
    direct = corpus / key
    if HF_KEY_SEPARATOR in key and not direct.is_file():
        return list_shards(corpus).get(key, direct)
    return direct


def _quarantine_whole_file(store: DuckDBStore, shard: str, reason: str, run_id: str) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO quarantine VALUES (?, 0, NULL, ?, '', now(), ?)",
            [shard, reason, run_id],
        )


def _ids_taken_by_other_shards(
    con: duckdb.DuckDBPyConnection, shard: str, documents_file: Path
) -> list[tuple[int, str, str]]:
    """(row, id, where) of rows whose id another shard already holds.

    Run inside the transaction that inserts the shard: DuckDB admits one writer
    process at a time, so no other shard can take the same id in between.
    """
    return con.execute(
        "SELECT p.row_number, p.doc_id, d.shard || ' row ' || d.row_number"
        " FROM read_parquet(?) p JOIN documents d ON p.doc_id = d.doc_id AND d.shard <> ?"
        " ORDER BY p.row_number",
        [str(documents_file), shard],
    ).fetchall()


def _without_rows(documents_file: Path, rows: list[int]) -> Path:
    """A copy of the documents file without `rows`, under its own name (the original may be in use)."""
    kept = pl.read_parquet(documents_file).filter(~pl.col("row_number").is_in(rows))
    out = documents_file.with_name(f"{documents_file.stem}-without-{len(rows)}.parquet")
    write_atomically(out, lambda tmp: kept.write_parquet(tmp, compression="zstd"))
    return out


# ---------------------------------------------------------------- first occurrence
# `contents` (sql/005_contents_owner.sql) holds each distinct text once with its owner: the shard
# that brought it first in arrival order. It is maintained here, inside the transaction that
# replaces or removes a shard's rows, for the texts that shard held before or holds now.
_TOUCHED = "_touched_texts"


def _note_texts_held(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """Remember the texts `shard` holds now, before its rows are replaced or removed."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_TOUCHED} AS"
        " SELECT DISTINCT content_hash FROM documents WHERE shard = ?",
        [shard],
    )


def _record_arrival(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """A shard seen for the first time arrives after every other (re-ingest keeps its place)."""
    if con.execute("SELECT 1 FROM shard_arrivals WHERE shard = ?", [shard]).fetchone() is None:
        (last,) = con.execute("SELECT coalesce(max(arrival), 0) FROM shard_arrivals").fetchone()
        con.execute("INSERT INTO shard_arrivals VALUES (?, ?, now())", [shard, last + 1])


def _update_owners(con: duckdb.DuckDBPyConnection, shard: str) -> None:
    """Re-derive the `contents` rows of every text `shard` held (noted before) or holds now.

    A text keeps its owner while the owner still holds it (its row may move); otherwise the
    earliest-arrived shard holding it owns it, then by shard name and row; a text no shard
    holds any more leaves `contents`. Occurrences are recounted over all shards.
    """
    con.execute(
        f"INSERT INTO {_TOUCHED} SELECT DISTINCT content_hash FROM documents WHERE shard = ?"
        f" EXCEPT SELECT content_hash FROM {_TOUCHED}",
        [shard],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _new_owners AS"
        " SELECT content_hash, shard, row_number, doc_id, n_chars, occurrences FROM ("
        "  SELECT d.content_hash, d.shard, d.row_number, d.doc_id, d.n_chars,"
        "   count(*) OVER (PARTITION BY d.content_hash) AS occurrences,"
        "   row_number() OVER (PARTITION BY d.content_hash ORDER BY"
        "    (d.shard = c.shard) IS TRUE DESC, a.arrival NULLS LAST, d.shard, d.row_number) AS pick"
        f"  FROM documents d JOIN {_TOUCHED} t ON t.content_hash = d.content_hash"
        "  LEFT JOIN contents c ON c.content_hash = d.content_hash"
        "  LEFT JOIN shard_arrivals a ON a.shard = d.shard"
        " ) WHERE pick = 1"
    )
    con.execute(f"DELETE FROM contents WHERE content_hash IN (SELECT content_hash FROM {_TOUCHED})")
    con.execute("INSERT INTO contents SELECT * FROM _new_owners")
    con.execute(f"DROP TABLE {_TOUCHED}")
    con.execute("DROP TABLE _new_owners")


RETIRED_FILE_DELETED = "file deleted from the corpus directory"


def retire_shard(store: DuckDBStore, shard: str, reason: str = RETIRED_FILE_DELETED) -> dict | None:
    """Remove a shard's rows from the store in one transaction, recording why in `retired_shards`.

    Its documents and quarantine rows go, the texts it owned move to another shard holding
    them (or leave `contents`), and its documents file is deleted once that is committed.
    Scores and embeddings stay: they are keyed by text and the texts may come back.
    Returns the `retired_shards` row, or None when the store never ingested the shard.
    """
    with store.transaction() as con:
        row = con.execute(
            "SELECT file_sha256, documents_file FROM shards WHERE shard = ?", [shard]
        ).fetchone()
        (n_documents,) = con.execute("SELECT count(*) FROM documents WHERE shard = ?", [shard]).fetchone()
        if row is None and n_documents == 0:
            return None
        file_hash, documents_file = row if row is not None else ("", None)
        _note_texts_held(con, shard)
        con.execute("DELETE FROM documents WHERE shard = ?", [shard])
        con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
        _update_owners(con, shard)
        con.execute("DELETE FROM shards WHERE shard = ?", [shard])
        con.execute("DELETE FROM shard_arrivals WHERE shard = ?", [shard])
        if documents_file is not None:
            con.execute("DELETE FROM artifacts WHERE path = ?", [documents_file])
        con.execute(
            "INSERT INTO retired_shards VALUES (?, ?, ?, ?, now())", [shard, file_hash, n_documents, reason]
        )
    if documents_file is not None:
        documents_files.pointer(Path(documents_file).parent).unlink(missing_ok=True)
        Path(documents_file).unlink(missing_ok=True)
    return {"shard": shard, "file_sha256": file_hash, "n_documents": n_documents, "reason": reason}


@dg.asset(
    partitions_def=shards,
    group_name="corpus",
    code_version=INGEST_VERSION,
    kinds={"duckdb", "parquet"},
    description="Validated, hashed documents of one shard file; bad rows go to the quarantine table.",
)
def documents(
    context: dg.AssetExecutionContext, config: IngestConfig, paths: DataPaths, store: DuckDBStore
) -> dg.MaterializeResult:
    shard = validate_shard_key(context.partition_key)  # refused before any file or store is touched
    source = shard_source(paths.corpus, shard)  # a Hugging Face dataset's Arrow file lies one level down
    try:
        fmt = shard_format(source)
        if not source.is_file():
            raise ShardReadError(f"{source}: no such file (was it moved or deleted?)")
        file_hash = file_sha256(source)
        # Content-addressed name: the previous file stays valid until the new one is committed.
        out_file = paths.dir("documents", shard) / f"{file_hash[:16]}.parquet"
        # write_documents writes a temporary file and renames it: a kill leaves no partial file.
        summary = write_documents(source, out_file, config.max_document_bytes, config.field_map(shard, paths.root), shard)
    except (ShardReadError, PermissionError, OSError) as exc:
        reason = str(exc)
        _quarantine_whole_file(store, shard, reason, context.run.run_id)
        raise dg.Failure(
            description=f"shard {shard} could not be read: {reason}",
            metadata={"shard": shard, "reason": reason},
        ) from exc

    read_file = out_file
    with store.transaction() as con:
        clashes = _ids_taken_by_other_shards(con, shard, read_file)
        if clashes:
            out_file = _without_rows(read_file, [row for row, _, _ in clashes])
        rejections = [(r.row_number, r.doc_id, r.reason, r.excerpt) for r in summary.rejections]
        rejections += [
            (row, doc_id, f"duplicate id {doc_id!r}: already used by shard {where}", "")
            for row, doc_id, where in clashes
        ]
        n_documents = summary.n_documents - len(clashes)
        previous = con.execute(
            "SELECT documents_file FROM shards WHERE shard = ?", [shard]
        ).fetchone()
        _note_texts_held(con, shard)
        con.execute("DELETE FROM documents WHERE shard = ?", [shard])
        con.execute("DELETE FROM quarantine WHERE shard = ?", [shard])
        con.execute(
            "INSERT INTO documents SELECT ?, row_number, doc_id, content_hash, n_chars, n_bytes"
            " FROM read_parquet(?)",
            [shard, str(out_file)],
        )
        _record_arrival(con, shard)
        _update_owners(con, shard)
        if rejections:
            rows = pl.DataFrame(rejections, schema=["row_number", "doc_id", "reason", "excerpt"], orient="row")
            insert_frame(con, "quarantine", rows.select(
                pl.lit(shard).alias("shard"), "row_number", "doc_id", "reason", "excerpt",
                pl.lit(datetime.now()).alias("recorded_at"), pl.lit(context.run.run_id).alias("run_id"),
            ))
        # Rows that are not their text's first occurrence (another shard's, or an earlier row).
        n_duplicates = con.execute(
            "SELECT count(*) FROM documents d WHERE d.shard = ? AND NOT EXISTS ("
            " SELECT 1 FROM contents c WHERE c.content_hash = d.content_hash"
            " AND c.shard = d.shard AND c.row_number = d.row_number)",
            [shard],
        ).fetchone()[0]
        documents_sha = register_artifact(
            con, out_file, "documents", context.run.run_id, partition_key=shard, n_rows=n_documents
        )
        con.execute(
            "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)",
            [
                shard, str(source), fmt, source.stat().st_size, file_hash, summary.n_rows,
                n_documents, len(rejections), n_duplicates, str(out_file), documents_sha, context.run.run_id,
            ],
        )
        outputs = {
            "n_rows": summary.n_rows,
            "n_documents": n_documents,
            "n_rejected": len(rejections),
            "n_duplicates": n_duplicates,
            "documents_file": str(out_file),
            "fields": summary.fields,  # the mapping used, wherever it came from (launchpad or fields file)
        }
        record_run(con, context, config.model_dump(), outputs=outputs)
        n_corpus = con.execute("SELECT count(*) FROM contents").fetchone()[0]

    documents_files.point_at(out_file)
    for stale in {previous[0] if previous else None, str(read_file)} - {None, str(out_file)}:
        Path(stale).unlink(missing_ok=True)

    reasons = Counter(reason.split(":")[0].split(" (")[0] for _, _, reason, _ in rejections)
    context.log.info(f"{shard}: {n_documents} documents, {len(rejections)} quarantined, {n_duplicates} duplicates")
    return dg.MaterializeResult(
        metadata={
            "format": fmt,
            "rows_read": summary.n_rows,
            "documents": n_documents,
            "quarantined": len(rejections),
            "duplicates": n_duplicates,
            "distinct_texts_in_corpus": n_corpus,
            "source_file": dg.MetadataValue.path(str(source)),
            "documents_file": dg.MetadataValue.path(str(out_file)),
            "quarantine_reasons": dg.MetadataValue.md(
                markdown_table(["reason", "rows"], reasons.most_common()) if reasons else "none"
            ),
            "quarantined_rows": dg.MetadataValue.md(
                markdown_table(
                    ["row", "id", "reason", "excerpt"],
                    [(row, doc_id or "", reason, excerpt) for row, doc_id, reason, excerpt in rejections],
                    limit=20,
                )
                if rejections
                else "none"
            ),
        },
        data_version=dg.DataVersion(documents_sha),
    )


def shard_run_key(key: str, path: Path) -> str:
    stat = path.stat()
    return f"{key}:{stat.st_size}:{stat.st_mtime_ns}"


def _shards_gone(corpus: Path, known: set[str], found: dict[str, Path], store: DuckDBStore) -> set[str]:
    """Partitions, and shards the store ingested from this corpus directory, whose file is gone."""
    from_here = {
        shard for shard, path in store.query("SELECT shard, path FROM shards")
        if Path(path).resolve().is_relative_to(corpus.resolve())
    }
    return (known | from_here) - set(found)


def build_corpus_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a `shards` partition for each new corpus file and runs the per-shard assets "
        "for new or changed files; a file deleted from the corpus directory has its partition deleted "
        "and its rows retired (table retired_shards says why).",
    )
    def corpus_sensor(
        context: dg.SensorEvaluationContext, paths: DataPaths, store: DuckDBStore
    ) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        known = set(context.instance.get_dynamic_partitions(shards.name))
        found = list_shards(paths.corpus)
        new_partitions = [key for key in found if key not in known]
        # A missing corpus directory (unmounted, misconfigured) is not a deletion of every file.
        gone = sorted(_shards_gone(paths.corpus, known, found, store)) if paths.corpus.is_dir() else []
        for shard in gone:
            retired = retire_shard(store, shard, RETIRED_FILE_DELETED)
            seen.pop(shard, None)
            context.log.info(
                f"{shard}: {RETIRED_FILE_DELETED}; partition deleted"
                + (f", {retired['n_documents']} documents retired" if retired else "")
            )
        partition_requests = [shards.build_add_request(new_partitions)] if new_partitions else []
        gone_partitions = [shard for shard in gone if shard in known]
        if gone_partitions:
            partition_requests.append(shards.build_delete_request(gone_partitions))
        # Files already ingested with these exact bytes (e.g. by `dselect run`) need no run.
        ingested = {name: (size, sha) for name, size, sha in store.query(
            "SELECT shard, byte_size, file_sha256 FROM shards")}
        run_requests = []
        for shard, path in found.items():
            run_key = shard_run_key(shard, path)
            if seen.get(shard) == run_key:
                continue
            seen[shard] = run_key
            size, sha = ingested.get(shard, (None, None))
            if size == path.stat().st_size and sha == file_sha256(path):
                continue
            run_requests.append(dg.RunRequest(run_key=run_key, partition_key=shard))
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps(seen, sort_keys=True),
        )

    return corpus_sensor

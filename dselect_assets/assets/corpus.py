"""Corpus ingestion: one `documents` partition per shard file, and the sensor that finds new files."""

import json
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pydantic

from dselect_assets.assets.common import (
    CATALOGUE_POOL,
    markdown_table,
    record_run,
    register_artifact,
    shards,
    write_atomically,
)
from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.ingest.ingest import (
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
from dselect_assets.core.ingest.shard_keys import validate_shard_key
from dselect_assets.resources import DataPaths, DuckDBStore
from dselect_assets.store import corpus as corpus_store
from dselect_assets.store import coverage
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


def _without_rows(documents_file: Path, rows: list[int]) -> Path:
    """A copy of the documents file without `rows`, under its own name (the original may be in use)."""
    kept = pl.read_parquet(documents_file).filter(~pl.col("row_number").is_in(rows))
    out = documents_file.with_name(f"{documents_file.stem}-without-{len(rows)}.parquet")
    write_atomically(out, lambda tmp: kept.write_parquet(tmp, compression="zstd"))
    return out


RETIRED_FILE_DELETED = "file deleted from the corpus directory"


def retire_shard(store: DuckDBStore, shard: str, reason: str = RETIRED_FILE_DELETED) -> dict | None:
    """Remove a shard's rows from the store in one transaction, recording why in `retired_shards`.

    Its `shards` and quarantine rows go (so its documents leave the view `documents`), the texts
    it owned move to another shard holding them (or leave `contents`), and its documents file is
    deleted once that is committed.
    Scores and embeddings stay: they are keyed by text and the texts may come back.
    Returns the `retired_shards` row, or None when the store never ingested the shard.
    """
    with store.transaction() as con:
        retired = corpus_store.retire(con, shard, reason)
    if retired is None:
        return None
    row, documents_file = retired
    documents_files.pointer(Path(documents_file).parent).unlink(missing_ok=True)
    Path(documents_file).unlink(missing_ok=True)
    return row


@dg.asset(
    pool=CATALOGUE_POOL,
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
        with store.transaction() as con:
            corpus_store.quarantine_whole_file(con, shard, reason, context.run.run_id)
        raise dg.Failure(
            description=f"shard {shard} could not be read: {reason}",
            metadata={"shard": shard, "reason": reason},
        ) from exc

    read_file = out_file
    with store.transaction() as con:
        clashes = corpus_store.ids_taken_by_other_shards(con, shard, read_file)
        if clashes:
            out_file = _without_rows(read_file, [row for row, _, _ in clashes])
        rejections = [(r.row_number, r.doc_id, r.reason, r.excerpt) for r in summary.rejections]
        rejections += [
            (row, doc_id, f"duplicate id {doc_id!r}: already used by shard {where}", "")
            for row, doc_id, where in clashes
        ]
        n_documents = summary.n_documents - len(clashes)
        previous = corpus_store.documents_file_of(con, shard)
        n_duplicates = corpus_store.replace_documents(con, shard, out_file, rejections, context.run.run_id)
        documents_sha = register_artifact(
            con, out_file, "documents", context.run.run_id, partition_key=shard, n_rows=n_documents
        )
        corpus_store.record_shard(con, [
            shard, str(source), fmt, source.stat().st_size, file_hash, summary.n_rows,
            n_documents, len(rejections), n_duplicates, str(out_file), documents_sha, context.run.run_id,
        ])
        outputs = {
            "n_rows": summary.n_rows,
            "n_documents": n_documents,
            "n_rejected": len(rejections),
            "n_duplicates": n_duplicates,
            "documents_file": str(out_file),
            "fields": summary.fields,  # the mapping used, wherever it came from (launchpad or fields file)
        }
        record_run(con, context, config.model_dump(), outputs=outputs)
        n_corpus = coverage.count_contents(con)

    documents_files.point_at(out_file)
    for stale in {previous, str(read_file)} - {None, str(out_file)}:
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
    with store.connect(read_only=True) as con:
        sources = corpus_store.shard_sources(con)
    from_here = {shard for shard, (path, _, _) in sources.items() if Path(path).resolve().is_relative_to(corpus.resolve())}
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
        with store.connect(read_only=True) as con:
            ingested = {name: (size, sha) for name, (_, size, sha) in corpus_store.shard_sources(con).items()}
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

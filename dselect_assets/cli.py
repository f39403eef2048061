"""`dselect`: run the whole pipeline from the command line, recorded in a persistent Dagster instance.

`dselect run` is what the README's first command calls: it builds the default
corpus when the corpus directory is empty, registers a `shards` partition per
file, then materializes every stage in order. Runs land in
$DAGSTER_HOME (default: $DSELECT_HOME/dagster_home), so `dagster dev` pointed at
the same home shows them, with their metadata, in the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dselect_assets.resources import DataPaths, default_home


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or default_home() / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def ensure_default_corpus() -> None:
    from dselect_assets.assets.corpus import list_shards
    from dselect_assets.core import default_corpus

    corpus = DataPaths().corpus
    if list_shards(corpus):
        return
    if os.environ.get("DSELECT_CORPUS_DIR"):
        sys.exit(f"dselect: no shard files (see docs/formats.md) in DSELECT_CORPUS_DIR={corpus}")
    print(f"dselect: building the default corpus in {corpus}")
    manifest = default_corpus.build_default_corpus(corpus, DataPaths().root / "eval")
    print(f"dselect: {manifest['total_documents']} documents in {len(manifest['shards'])} shards")


def run_pipeline(stages: list[str] | None = None) -> None:
    import dagster as dg

    from dselect_assets.assets.corpus import list_shards
    from dselect_assets.definitions import PIPELINE_STAGES, defs

    dagster_home()
    instance = dg.DagsterInstance.get()
    shard_keys = list(list_shards(DataPaths().corpus))
    instance.add_dynamic_partitions(
        "shards", [k for k in shard_keys if not instance.has_dynamic_partition("shards", k)]
    )
    for stage in PIPELINE_STAGES:
        if stages and stage.job_name not in stages:
            continue
        job = defs.resolve_job_def(stage.job_name)
        keys = stage.partition_keys(shard_keys)
        for key in keys:
            started = time.monotonic()
            label = f"{stage.job_name}[{key}]" if key else stage.job_name
            result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
            status = "ok" if result.success else "FAILED"
            print(f"dselect: {label}: {status} in {time.monotonic() - started:.1f}s", flush=True)
            if not result.success:
                sys.exit(f"dselect: {label} failed; see the run in the UI (dagster dev) for details")


def add_export_parser(sub) -> None:
    from dselect_assets.core.export import DEFAULT_MAX_BYTES_PER_FILE, EXPORT_FORMATS

    export = sub.add_parser(
        "export", help="write a selection as Parquet or dolma jsonl.zst/jsonl.gz files with a manifest"
    )
    export.add_argument("selection", metavar="SELECTION_KEY", help="e.g. ask_llm_density@0.20")
    export.add_argument("--format", default="jsonl.zst", choices=sorted(EXPORT_FORMATS))
    export.add_argument("--out", default="", help="directory to write, e.g. the one a training job reads "
                        "(default: $DSELECT_HOME/exports/SELECTION_KEY/FORMAT)")
    export.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES_PER_FILE,
                        help="uncompressed record bytes per file before a new file is started")


def export_command(args) -> None:
    """Materialize selection_exports[SELECTION_KEY] in the persistent instance, so the export
    is recorded in the UI and in the store's lineage like any other run."""
    import dagster as dg

    from dselect_assets.assets.exports import selection_exports
    from dselect_assets.assets.selection import selection_partitions
    from dselect_assets.resources import DuckDBStore

    if args.selection not in selection_partitions.get_partition_keys():
        sys.exit(f"dselect: unknown selection {args.selection!r}; one of {selection_partitions.get_partition_keys()}")
    dagster_home()
    config = {"format": args.format, "max_bytes_per_file": args.max_bytes, "out_dir": args.out}
    result = dg.materialize(
        [selection_exports], partition_key=args.selection, instance=dg.DagsterInstance.get(),
        resources={"paths": DataPaths(), "store": DuckDBStore()},
        run_config={"ops": {"selection_exports": {"config": config}}}, raise_on_error=False,
    )
    if not result.success:
        failure = result.failure_data_for_node("selection_exports")
        sys.exit(f"dselect: export failed: {failure.error.message.strip() if failure else 'see the run in the UI'}")
    metadata = result.asset_materializations_for_node("selection_exports")[0].metadata
    print(f"dselect: {metadata['documents'].value} documents in {metadata['files'].value} files, "
          f"{metadata['bytes'].value:,} bytes; manifest {metadata['manifest'].value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dselect", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build the default corpus if needed, then materialize every stage")
    run.add_argument("--stage", action="append", help="only these jobs (repeatable), e.g. shard_job")
    sub.add_parser("corpus", help="build the default corpus if the corpus directory is empty")
    add_export_parser(sub)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.command == "export":  # reads a selection already made; builds no corpus
        export_command(args)
        return
    ensure_default_corpus()
    if args.command == "run":
        started = time.monotonic()
        run_pipeline(args.stage)
        print(f"dselect: pipeline finished in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()

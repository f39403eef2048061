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
    from dselect_assets.assets.corpus import list_shard_files
    from dselect_assets.core import default_corpus

    corpus = DataPaths().corpus
    if list_shard_files(corpus):
        return
    if os.environ.get("DSELECT_CORPUS_DIR"):
        sys.exit(f"dselect: no shard files (.jsonl, .parquet, .txt) in DSELECT_CORPUS_DIR={corpus}")
    print(f"dselect: building the default corpus in {corpus}")
    manifest = default_corpus.build_default_corpus(corpus, DataPaths().root / "eval")
    print(f"dselect: {manifest['total_documents']} documents in {len(manifest['shards'])} shards")


def run_pipeline(stages: list[str] | None = None) -> None:
    import dagster as dg

    from dselect_assets.assets.corpus import list_shard_files
    from dselect_assets.definitions import PIPELINE_STAGES, defs

    dagster_home()
    instance = dg.DagsterInstance.get()
    shard_keys = [p.name for p in list_shard_files(DataPaths().corpus)]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dselect", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build the default corpus if needed, then materialize every stage")
    run.add_argument("--stage", action="append", help="only these jobs (repeatable), e.g. shard_job")
    sub.add_parser("corpus", help="build the default corpus if the corpus directory is empty")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ensure_default_corpus()
    if args.command == "run":
        started = time.monotonic()
        run_pipeline(args.stage)
        print(f"dselect: pipeline finished in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()

"""`dselect`: run the whole pipeline from the command line, recorded in a persistent Dagster instance.

`dselect run` is what the README's first command calls: it builds the default
corpus when the corpus directory is empty, registers a `shards` partition per
file, then materializes every stage in order. Runs land in
$DAGSTER_HOME (default: $DSELECT_HOME/dagster_home), so `dagster dev` pointed at
the same home shows them, with their metadata, in the UI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
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


def _run_partition(job_name: str, key: str | None) -> tuple[str, bool, float, float]:
    """One partition of one job, in this (worker) process; models stay cached between calls.

    Returns (key, succeeded, wall seconds, CPU seconds this process spent on it).
    """
    import dagster as dg

    from dselect_assets.definitions import defs

    started, cpu = time.monotonic(), _cpu_seconds()
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False)
    return key or "", result.success, time.monotonic() - started, _cpu_seconds() - cpu


def _worker_init() -> None:
    # Each worker gets one core: two single-threaded steps beat one two-threaded step on a
    # small box (OpenMP spin-waits), and training stays bit-reproducible at one thread.
    os.environ["DSELECT_TORCH_THREADS"] = os.environ["DSELECT_TRAIN_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"


@contextlib.contextmanager
def worker_pool(workers: int):
    """A pool of `workers` spawned processes (one core each) that go down with the CLI: on
    SIGTERM (a scheduler or `kill` stopping the run) the workers are terminated before the CLI
    exits, as Ctrl-C already does by signalling the whole process group."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    def terminate(signum, frame):
        for child in multiprocessing.active_children():
            child.terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            yield pool
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pipeline(stages: list[str] | None = None, workers: int = 1, profile: str = "default") -> None:
    """Every stage of the profile in order; a stage's partitions run `workers` at a time, each in
    its own process. Configurations the profile cannot run here are named, with why, first.

    DuckDB writes from the workers never collide: each is one short transaction retried while
    another process holds the file (dselect_assets/store/connection.py).
    """
    import dagster as dg

    from dselect_assets.assets.corpus import list_shards
    from dselect_assets.definitions import PROFILES

    plan = PROFILES[profile]()
    for reason in plan.skipped:
        print(f"dselect: {reason}", flush=True)
    dagster_home()
    with dg.DagsterInstance.get() as instance:
        shard_keys = list(list_shards(DataPaths().corpus))
        instance.add_dynamic_partitions(
            "shards", [k for k in shard_keys if not instance.has_dynamic_partition("shards", k)]
        )
    run_started, run_cpu = time.monotonic(), 0.0
    with worker_pool(workers) as pool:
        for stage in plan.stages:
            if stages and stage.job_name not in stages:
                continue
            keys = stage.partition_keys(shard_keys)
            started, cpu = time.monotonic(), 0.0
            futures = [pool.submit(_run_partition, stage.job_name, key) for key in keys]
            failed = []
            for future in futures:
                key, ok, seconds, cpu_seconds = future.result()
                cpu += cpu_seconds
                label = f"{stage.job_name}[{key}]" if key else stage.job_name
                print(f"dselect: {label}: {'ok' if ok else 'FAILED'} in {seconds:.1f}s", flush=True)
                if not ok:
                    failed.append(label)
            wall = time.monotonic() - started
            run_cpu += cpu
            print(f"dselect: stage {stage.job_name}: {len(keys)} partition(s) in {wall:.0f}s with {workers} "
                  f"worker(s), CPU {cpu:.0f}s = {cpu / max(wall, 1e-9):.2f} cores busy", flush=True)
            if failed:
                sys.exit(f"dselect: {', '.join(failed)} failed; see the runs in the UI (dagster dev) for details")
    wall = time.monotonic() - run_started
    print(f"dselect: every stage: CPU {run_cpu:.0f}s over {wall:.0f}s = {run_cpu / max(wall, 1e-9):.2f} cores busy "
          f"of {workers} worker(s)", flush=True)


def add_export_parser(sub) -> None:
    from dselect_assets.core.selection.export import DEFAULT_MAX_BYTES_PER_FILE, EXPORT_FORMATS

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
    from dselect_assets.assets.selection import runnable_reason, selection_partition
    from dselect_assets.resources import DuckDBStore

    try:
        partition = selection_partition(args.selection)
    except ValueError as exc:
        sys.exit(f"dselect: {exc}")
    reason = runnable_reason(args.selection)
    if reason:
        sys.exit(f"dselect: {reason}")
    dagster_home()
    config = {"format": args.format, "max_bytes_per_file": args.max_bytes, "out_dir": args.out}
    result = dg.materialize(
        [selection_exports], partition_key=partition, instance=dg.DagsterInstance.get(),
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
    run.add_argument("--profile", default="default", choices=["default", "paper"],
                     help="default: every default selection, six samplers and the full data trained at 20%% with "
                     "3 seeds; paper: the paper's 19 configurations as the stand-ins installed here, at its five "
                     "rates, 3 seeds each (long)")
    run.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                     help="partitions run at once, one process and one core each (default: up to 2)")
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
        run_pipeline(args.stage, max(1, args.workers), args.profile)
        print(f"dselect: pipeline finished in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()

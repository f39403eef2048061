"""The per-shard steps run on a real distributed engine by configuration alone.

The engine is the one `DSELECT_DEPLOYMENT=cluster` targets: Celery workers fed by a Redis
broker (dagster-celery). The heavy test starts it on loopback itself (Debian's redis-server
and two `celery -A dagster_celery.app worker` processes of one slot each, matching the
machine's 2 CPUs), scores two shards of the real default corpus through it with
`dagster job execute` against a persistent DAGSTER_HOME, checks that every step ran inside a
worker and every score landed in DuckDB exactly once, and stops the engine in a `finally`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from dselect_assets.deployments import BACKEND_ENV, BROKER_ENV, DeploymentConfigError, celery_executor_config
from dselect_assets.resources import DuckDBStore
from dselect_tests.pipeline_fixtures import build_source_corpus, small_resources, write_slice

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_CONFIG_DIR = REPO_ROOT / "deploy" / "celery"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_cluster_engine.sh"
N_WORKERS = 2
SHARDS = {"a.jsonl": "shard-000.jsonl", "b.jsonl": "shard-001.jsonl"}
DOCS_PER_SHARD = 10
SHARD_STEPS = {"documents", "embeddings", "ask_llm_scores", "perplexity_scores", "density_sketch"}
ENGINE_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
STOP_GRACE_S = 15


def _ensure_engine_installed() -> None:
    """Install redis-server and dagster-celery with the project script when either is missing."""
    if (
        shutil.which("redis-server") is not None
        and importlib.util.find_spec("dagster_celery") is not None
        and importlib.util.find_spec("redis") is not None
    ):
        return
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, env={**os.environ, "PYTHON": sys.executable},
                   timeout=900)
    importlib.invalidate_caches()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, n_chars: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-n_chars:] if log.exists() else "(no log)"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> set[int]:
    parents = {pid: stat[1] for pid in _all_pids() if (stat := _proc_stat(pid))}
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _live_members(process_groups: set[int]) -> list[int]:
    """Processes still running (not zombies) in any of the given process groups."""
    members = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat and stat[2] in process_groups and stat[0] != "Z":
            members.append(pid)
    return members


@dataclass
class Engine:
    """A Redis broker and Celery workers on loopback, each in its own process group."""

    broker_url: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        with log:
            process = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        return process

    def worker_pids(self) -> dict[str, set[int]]:
        """Each worker's main process and its pool processes (the ones that run the steps)."""
        return {name: _descendants(p.pid) for name, p in self.processes.items() if name.startswith("worker")}

    def stop(self) -> None:
        """SIGTERM every process group (warm shutdown), SIGKILL what is left after a grace period."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        groups = {p.pid for p in self.processes.values()}
        if _live_members(groups):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait(timeout=30)
        # Pool children are reaped by their worker; give the kernel a moment after a SIGKILL.
        deadline = time.monotonic() + 10
        while _live_members(groups) and time.monotonic() < deadline:
            time.sleep(0.2)


def _wait_for_redis(port: int, engine: Engine) -> None:
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        redis = engine.processes["redis"]
        if redis.poll() is not None:
            pytest.fail(f"redis-server exited with {redis.returncode}:\n{_log_tail(engine.logs / 'redis.log')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    pytest.fail(f"redis-server did not answer on 127.0.0.1:{port} within {ENGINE_START_TIMEOUT_S} s")


def _wait_for_workers(engine: Engine, names: list[str]) -> None:
    """A Celery worker logs '<name>@<host> ready.' once it consumes from the broker."""
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            process, log = engine.processes[name], engine.logs / f"{name}.log"
            if process.poll() is not None:
                pytest.fail(f"celery {name} exited with {process.returncode}:\n{_log_tail(log)}")
            if " ready." in log.read_text(encoding="utf-8", errors="replace"):
                pending.discard(name)
        time.sleep(0.2)
    if pending:
        pytest.fail(f"celery workers {sorted(pending)} not ready within {ENGINE_START_TIMEOUT_S} s")


@contextlib.contextmanager
def running_engine(work: Path, env: dict[str, str]) -> Iterator[Engine]:
    """Start redis-server and N_WORKERS Celery workers on loopback; always stop them on exit."""
    port = _free_port()
    logs = work / "engine-logs"
    logs.mkdir(parents=True)
    engine = Engine(broker_url=f"redis://127.0.0.1:{port}/0", logs=logs)
    env = {**env, BROKER_ENV: engine.broker_url}
    try:
        engine.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(logs)], env, cwd=logs)
        _wait_for_redis(port, engine)
        names = [f"worker{i}" for i in range(1, N_WORKERS + 1)]
        for name in names:
            engine.start(name, [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker",
                                "-n", f"dselect-{name}@%h", "--concurrency", "1", "--loglevel", "INFO",
                                "--without-gossip", "--without-mingle", "--without-heartbeat"],
                         env, cwd=REPO_ROOT)
        _wait_for_workers(engine, names)
        yield engine
    finally:
        engine.stop()
        leftovers = _live_members({p.pid for p in engine.processes.values()})
        assert not leftovers, f"engine processes still running after shutdown: {leftovers}"


def _run_config(home: Path, corpus_dir: Path) -> dict:
    """The small model settings of the other end-to-end tests, as run config the workers receive."""
    resources = small_resources(home, corpus_dir)
    return {"resources": {name: {"config": r.model_dump(exclude_defaults=True)} for name, r in resources.items()}}


def _step_events(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, int], dict[str, str]]:
    """Each step's process id (from STEP_START) and the Celery worker that reported taking it."""
    pids, workers = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            pids[event.step_key] = event.pid
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and event.step_key:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                workers[event.step_key] = worker.value
    return pids, workers


@pytest.mark.heavy
def test_two_shards_scored_by_celery_workers_exactly_once(tmp_path):
    _ensure_engine_installed()
    src_corpus, _ = build_source_corpus(tmp_path / "source")
    home, corpus_dir, dagster_home = tmp_path / "home", tmp_path / "corpus", tmp_path / "dagster_home"
    for directory in (home, corpus_dir, dagster_home):
        directory.mkdir()
    for shard, source in SHARDS.items():
        write_slice(src_corpus / source, corpus_dir / shard, 0, DOCS_PER_SHARD)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    run_config = tmp_path / "run_config.json"  # JSON is YAML, which `dagster job execute -c` reads
    run_config.write_text(json.dumps(_run_config(home, corpus_dir)), encoding="utf-8")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("shards", list(SHARDS))

    env = {key: value for key, value in os.environ.items() if key not in ("DSELECT_DB", BACKEND_ENV)}
    env.update({
        "DAGSTER_HOME": str(dagster_home),
        "DSELECT_HOME": str(home),
        "DSELECT_CORPUS_DIR": str(corpus_dir),
        "DSELECT_DEPLOYMENT": "cluster",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # One torch thread per worker slot: two workers share the machine's 2 CPUs.
        "DSELECT_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(WORKER_CONFIG_DIR), str(REPO_ROOT)]),
    })

    started = time.monotonic()
    with running_engine(tmp_path, env) as engine:
        driver_env = {**env, BROKER_ENV: engine.broker_url}
        # Both shards at once, as two runs of shard_job: each run's orchestrator hands every
        # step to the broker and only waits; the workers do the work.
        drivers = {
            shard: subprocess.Popen(
                [sys.executable, "-m", "dagster", "job", "execute", "-m", "dselect_assets.definitions",
                 "-j", "shard_job", "--tags", json.dumps({"dagster/partition": shard}), "-c", str(run_config)],
                cwd=REPO_ROOT, env=driver_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for shard in SHARDS
        }
        try:
            outputs = {shard: d.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace")
                       for shard, d in drivers.items()}
        finally:
            for driver in drivers.values():
                if driver.poll() is None:
                    os.killpg(driver.pid, signal.SIGKILL)
                    driver.wait()
        for shard, driver in drivers.items():
            assert driver.returncode == 0, f"run of {shard} failed:\n{outputs[shard][-4000:]}"
        worker_pids = engine.worker_pids()
    print(f"two shards through celery: {time.monotonic() - started:.1f} s including engine start and stop")

    driver_pids = {d.pid for d in drivers.values()}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags.get("dagster/partition") for r in runs) == sorted(SHARDS)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        steps_by_worker: dict[str, set[str]] = {name: set() for name in worker_pids}
        for run in runs:
            pids, celery_workers = _step_events(instance, run.run_id)
            assert set(pids) == SHARD_STEPS, f"run {run.run_id} ran steps {sorted(pids)}"
            assert set(celery_workers) == SHARD_STEPS, "every step is reported as taken by a Celery worker"
            for step, pid in pids.items():
                assert pid not in driver_pids, f"{step} ran in the run's own process, not on the engine"
                owners = [name for name, members in worker_pids.items() if pid in members]
                assert owners, f"{step} of {run.tags['dagster/partition']} ran in pid {pid}, not in a worker"
                assert celery_workers[step].startswith(f"dselect-{owners[0]}@")
                steps_by_worker[owners[0]].add(f"{run.tags['dagster/partition']}:{step}")
        print("steps per worker:", {name: sorted(steps) for name, steps in steps_by_worker.items()})
        assert all(steps_by_worker.values()), f"both workers should take steps: {steps_by_worker}"
        run_ids = {r.run_id for r in runs}

    store = DuckDBStore(database=str(home / "dselect.duckdb"))
    n_docs = store.query("SELECT count(DISTINCT content_hash) FROM documents")[0][0]
    per_shard = dict(store.query("SELECT shard, count(*) FROM documents GROUP BY shard"))
    assert per_shard == {shard: DOCS_PER_SHARD for shard in SHARDS}
    producers = store.query("SELECT producer_id, kind FROM producers ORDER BY kind")
    assert sorted(kind for _, kind in producers) == ["ask_llm", "embedding", "perplexity"]
    for producer, kind in producers:
        table = "embedding_index" if kind == "embedding" else "scores"
        rows, distinct = store.query(
            f"SELECT count(*), count(DISTINCT content_hash) FROM {table} WHERE producer_id = ?", [producer])[0]
        assert rows == distinct == n_docs, f"{kind}: {rows} rows for {distinct} documents, {n_docs} expected"
        unscored = store.query(
            f"SELECT d.shard, count(*) FROM documents d ANTI JOIN {table} t"
            " ON t.content_hash = d.content_hash AND t.producer_id = ? GROUP BY d.shard", [producer])
        assert unscored == [], f"{kind}: documents of these shards have no result: {unscored}"
    writers = {row[0] for row in store.query("SELECT DISTINCT run_id FROM scores")}
    assert writers <= run_ids, f"scores written by runs other than the two cluster runs: {writers - run_ids}"
    lineage = store.query(
        "SELECT asset, partition_key, count(*) FROM runs WHERE asset IN ('ask_llm_scores', 'perplexity_scores')"
        " GROUP BY ALL ORDER BY ALL")
    assert lineage == [(asset, shard, 1) for asset in ("ask_llm_scores", "perplexity_scores") for shard in SHARDS]


def test_cluster_definitions_load_in_a_fresh_process(tmp_path):
    """`dagster definitions validate` loads the code location with the cluster configuration."""
    _ensure_engine_installed()
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DSELECT_DEPLOYMENT": "cluster",
           BROKER_ENV: "redis://dselect-redis:6379/0", BACKEND_ENV: "redis://dselect-redis:6379/1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    validate = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "dselect_assets.definitions"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert validate.returncode == 0, validate.stdout[-3000:] + validate.stderr[-3000:]
    assert "All code locations passed validation" in validate.stdout + validate.stderr

    inspect = (
        "import json; import dagster as dg; from dselect_assets.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "ex = defs.resolve_job_def('shard_job').executor_def\n"
        "print(json.dumps({'name': ex.name, 'base': ex.executor_creation_fn.__name__}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", inspect], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"name": "dselect_celery", "base": "celery_executor"}


def test_cluster_without_broker_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv(BROKER_ENV, raising=False)
    with pytest.raises(DeploymentConfigError, match=BROKER_ENV):
        celery_executor_config()


def test_cluster_config_keeps_urls_as_env_references(monkeypatch):
    monkeypatch.setenv(BROKER_ENV, "redis://:secret@broker:6379/0")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    config = celery_executor_config()
    assert config["broker"] == config["backend"] == {"env": BROKER_ENV}
    monkeypatch.setenv(BACKEND_ENV, "redis://:secret@backend:6379/1")
    assert celery_executor_config()["backend"] == {"env": BACKEND_ENV}
    assert "secret" not in json.dumps(celery_executor_config())


def test_kubernetes_manifests_match_what_the_code_reads():
    """deploy/ names the variables, modules and versions that deployments.py and the workers use."""
    import importlib.metadata

    import yaml

    k8s = REPO_ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    assert all((k8s / name).exists() for name in kustomization["resources"])

    (config_map,) = yaml.safe_load_all((k8s / "dselect-env.yaml").read_text())
    settings = config_map["data"]
    assert settings["DSELECT_DEPLOYMENT"] == "cluster"
    assert {BROKER_ENV, BACKEND_ENV, "DSELECT_HOME", "DSELECT_CORPUS_DIR"} <= set(settings)

    (workers,) = yaml.safe_load_all((k8s / "celery-workers.yaml").read_text())
    (container,) = workers["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "dagster_celery.app", "worker"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]

    values = yaml.safe_load((k8s / "dagster-values.yaml").read_text())
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    assert code_location["dagsterApiGrpcArgs"] == ["-m", "dselect_assets.definitions"]
    assert code_location["envConfigMaps"] == [{"name": config_map["metadata"]["name"]}]
    assert f"--version {dg.__version__}" in (k8s / "dagster-values.yaml").read_text()

    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert "PYTHONPATH=/opt/dselect/deploy/celery" in dockerfile
    assert (WORKER_CONFIG_DIR / "dagster_celery_config.py").exists()
    if importlib.util.find_spec("dagster_celery") is not None:
        assert f'"dagster-celery=={importlib.metadata.version("dagster-celery")}"' in dockerfile


def test_without_the_variable_the_local_executor_is_unchanged(monkeypatch):
    from dselect_assets.deployments import current_deployment, executor_for

    monkeypatch.delenv("DSELECT_DEPLOYMENT", raising=False)
    assert current_deployment() == "local"
    assert executor_for("local").name == "multiprocess"
    monkeypatch.setenv("DSELECT_DEPLOYMENT", "ray")
    with pytest.raises(DeploymentConfigError, match="'ray'"):
        current_deployment()

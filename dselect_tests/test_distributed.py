"""The per-shard steps run on a real distributed engine by configuration alone.

The engine is the one `DSELECT_DEPLOYMENT=cluster` targets: Celery workers fed by a Redis
broker (dagster-celery). The heavy test starts it on loopback itself (Debian's redis-server
with a password, and two `celery -A dagster_celery.app worker` processes of one slot each,
matching the machine's 2 CPUs), shows that a Redis client, an enqueue and a worker without the
password are all refused, scores two shards of the real default corpus through it with
`dagster job execute` against a persistent DAGSTER_HOME, with the DuckDB file out of the workers'
reach (a path no process can open), checks that every step ran inside an authenticated worker,
that every score landed in the attribute files exactly once and reached the catalogue and that the password is
nowhere in the Dagster instance (runs, snapshots, event log), and stops the engine in a
`finally`.

redis-server is a system package: the heavy test never installs it. `.ci/run` runs
scripts/install_cluster_engine.sh before pytest; without it the heavy test fails saying so.
The other tests here need no system package (dagster-celery and redis are project
dependencies).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import runpy
import secrets
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

from dselect_assets.assets import corpus
from dselect_assets.deployments import BACKEND_ENV, BROKER_ENV, DeploymentConfigError, celery_executor_config
from dselect_assets.resources import DuckDBStore
from dselect_assets.store import attributes
from dselect_tests.pipeline_fixtures import build_source_corpus, small_resources, write_slice

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_CONFIG_DIR = REPO_ROOT / "deploy" / "celery"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_cluster_engine.sh"
N_WORKERS = 2
SHARDS = {"a.jsonl": "shard-000.jsonl", "b.jsonl": "shard-001.jsonl"}
DOCS_PER_SHARD = 10
# The scoring steps of shard_job: the workers run them with the DuckDB file out of reach.
SHARD_STEPS = {"embeddings", "ask_llm_scores", "perplexity_scores"}
ENGINE_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 300
STOP_GRACE_S = 15


def _require_engine() -> None:
    """Fail (never install) when the engine the heavy test starts is not on this machine."""
    missing = [name for name, present in (
        ("redis-server (Debian package redis-server)", shutil.which("redis-server") is not None),
        ("Python package dagster-celery", importlib.util.find_spec("dagster_celery") is not None),
        ("Python package redis", importlib.util.find_spec("redis") is not None),
    ) if not present]
    if missing:
        pytest.fail(f"the cluster engine is not installed: missing {', '.join(missing)}. Run "
                    f"`bash {INSTALL_SCRIPT.relative_to(REPO_ROOT)}` first (.ci/run does); tests never "
                    "install system packages themselves", pytrace=False)


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
    """A Redis broker that wants a password and Celery workers on loopback, each in its own process group."""

    port: int
    password: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def url(self, password: str | None = None, db: int = 0) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    @property
    def broker_url(self) -> str:
        return self.url(self.password)

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


def _wait_for_redis(engine: Engine) -> None:
    """Until redis-server answers; it must refuse an unauthenticated PING and accept the password."""
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        redis = engine.processes["redis"]
        if redis.poll() is not None:
            pytest.fail(f"redis-server exited with {redis.returncode}:\n{_log_tail(engine.logs / 'redis.log')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", engine.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(256)
            if reply:
                assert reply.startswith(b"-NOAUTH"), f"redis-server answered a PING without the password: {reply!r}"
                sock.sendall(f"AUTH {engine.password}\r\nPING\r\n".encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(256)
                    assert chunk, "redis-server closed the connection after AUTH"
                    reply += chunk
                assert reply == b"+OK\r\n+PONG\r\n", f"AUTH with the password failed: {reply!r}"
                return
        time.sleep(0.1)
    pytest.fail(f"redis-server did not answer on 127.0.0.1:{engine.port} within {ENGINE_START_TIMEOUT_S} s")


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


def _worker_args(name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-n", f"dselect-{name}@%h",
            "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def _wait_for_refusal(engine: Engine, name: str) -> str:
    """A worker with a wrong password keeps retrying: it logs Redis's refusal and never gets ready."""
    process, log = engine.processes[name], engine.logs / f"{name}.log"
    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        assert " ready." not in text, f"{name} connected to the broker with a wrong password:\n{text[-3000:]}"
        if "invalid username-password pair" in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode} before Redis refused it:\n{text[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"{name} was not refused by Redis within {ENGINE_START_TIMEOUT_S} s:\n{_log_tail(log)}")


@contextlib.contextmanager
def running_engine(work: Path, env: dict[str, str]) -> Iterator[Engine]:
    """Start redis-server (with a password) and N_WORKERS Celery workers on loopback, plus one
    worker with a wrong password that Redis must keep out; always stop them all on exit."""
    logs = work / "engine-logs"
    logs.mkdir(parents=True)
    engine = Engine(port=_free_port(), password=secrets.token_hex(16), logs=logs)
    # The password goes in a config file readable by this user only, not on redis-server's command line.
    config = logs / "redis.conf"
    config.touch(mode=0o600)
    config.write_text(f"port {engine.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {logs}\n"
                      f"requirepass {engine.password}\n", encoding="utf-8")
    env = {**env, BROKER_ENV: engine.broker_url}
    try:
        engine.start("redis", ["redis-server", str(config)], env, cwd=logs)
        _wait_for_redis(engine)
        names = [f"worker{i}" for i in range(1, N_WORKERS + 1)]
        for name in names:
            engine.start(name, _worker_args(name), env, cwd=REPO_ROOT)
        engine.start("intruder", _worker_args("intruder"),
                     {**env, BROKER_ENV: engine.url(secrets.token_hex(16))}, cwd=REPO_ROOT)
        _wait_for_workers(engine, names)
        _wait_for_refusal(engine, "intruder")
        yield engine
    finally:
        engine.stop()
        leftovers = _live_members({p.pid for p in engine.processes.values()})
        assert not leftovers, f"engine processes still running after shutdown: {leftovers}"


def _run_config(home: Path, corpus_dir: Path, unreachable_database: Path) -> dict:
    """The small model settings of the other end-to-end tests, as run config the workers receive,
    with a DuckDB path no process can open: the attribute files are all a scoring worker needs."""
    resources = small_resources(home, corpus_dir)
    resources["store"] = DuckDBStore(database=str(unreachable_database), attributes_dir=str(home / "attributes"))
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


def _assert_refused_without_the_password(engine: Engine) -> None:
    """A Redis client and a Celery enqueue of a dagster step without the password both fail."""
    import redis
    from dagster_celery.config import TASK_EXECUTE_PLAN_NAME
    from dagster_celery.make_app import make_app
    from kombu.exceptions import OperationalError

    for password in (None, secrets.token_hex(16)):
        client = redis.Redis(host="127.0.0.1", port=engine.port, password=password, socket_timeout=10)
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
        client.close()
    with redis.Redis(host="127.0.0.1", port=engine.port, password=engine.password, socket_timeout=10) as client:
        assert client.ping()
        queued_before = client.llen("dagster")

    # What an intruder would do: put a step on the `dagster` queue the workers consume (no result
    # backend: the broker alone must refuse the message).
    intruder = make_app({"broker": engine.url()})
    try:
        with pytest.raises(OperationalError, match="(?i)auth"):
            intruder.send_task(TASK_EXECUTE_PLAN_NAME, args=[{}], queue="dagster", retry=False)
    finally:
        intruder.close()
    with redis.Redis(host="127.0.0.1", port=engine.port, password=engine.password, socket_timeout=10) as client:
        assert client.llen("dagster") == queued_before == 0, "nothing reached the queue without the password"


def _assert_password_not_in_instance(instance: dg.DagsterInstance, dagster_home: Path, password: str) -> None:
    """Neither the runs, their job and plan snapshots, the event log nor any file of DAGSTER_HOME holds it."""
    runs = instance.get_runs()
    assert runs
    for run in runs:
        texts = {"run": dg.serialize_value(run)}
        texts["job snapshot"] = dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        texts["execution plan snapshot"] = dg.serialize_value(
            instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
        texts["event log"] = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(run.run_id))
        for what, text in texts.items():
            assert password not in text, f"the broker password is in the {what} of run {run.run_id}"
    for path in dagster_home.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), f"the broker password is in {path}"


@pytest.mark.heavy
def test_two_shards_scored_by_celery_workers_exactly_once(tmp_path):
    _require_engine()
    src_corpus, _ = build_source_corpus(tmp_path / "source")
    home, corpus_dir, dagster_home = tmp_path / "home", tmp_path / "corpus", tmp_path / "dagster_home"
    for directory in (home, corpus_dir, dagster_home):
        directory.mkdir()
    ingesting = dg.DagsterInstance.ephemeral()
    ingesting.add_dynamic_partitions("shards", list(SHARDS))
    for shard, source in SHARDS.items():
        write_slice(src_corpus / source, corpus_dir / shard, 0, DOCS_PER_SHARD)
        # Ingested here, on the orchestrating side, where the catalogue is.
        dg.materialize([corpus.documents], partition_key=shard, resources=small_resources(home, corpus_dir),
                       instance=ingesting)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    # Below a plain file: opening it, or creating it, fails for any user, root included.
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_text("", encoding="utf-8")
    unreachable = not_a_directory / "dselect.duckdb"
    run_config = tmp_path / "run_config.json"  # JSON is YAML, which `dagster job execute -c` reads
    run_config.write_text(json.dumps(_run_config(home, corpus_dir, unreachable)), encoding="utf-8")
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
        _assert_refused_without_the_password(engine)
        driver_env = {**env, BROKER_ENV: engine.broker_url}
        # Both shards at once, as two runs of shard_job: each run's orchestrator hands every
        # step to the broker and only waits; the workers do the work.
        drivers = {
            shard: subprocess.Popen(
                [sys.executable, "-m", "dagster", "job", "execute", "-m", "dselect_assets.definitions",
                 "-j", "shard_job", "-o", ",".join(sorted(SHARD_STEPS)),
                 "--tags", json.dumps({"dagster/partition": shard}), "-c", str(run_config)],
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
        intruder_log = _log_tail(engine.logs / "intruder.log", 100_000)
        assert " ready." not in intruder_log and "Received task" not in intruder_log, intruder_log[-3000:]
        assert "invalid username-password pair" in intruder_log
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
        _assert_password_not_in_instance(instance, dagster_home, engine.password)

    assert not unreachable.exists()
    # The catalogue takes in what the workers recorded beside their files when it is next opened.
    store = DuckDBStore(database=str(home / "dselect.duckdb"))
    n_docs = store.query("SELECT count(DISTINCT content_hash) FROM documents")[0][0]
    per_shard = dict(store.query("SELECT shard, count(*) FROM documents GROUP BY shard"))
    assert per_shard == {shard: DOCS_PER_SHARD for shard in SHARDS}
    producers = store.query("SELECT producer_id, kind FROM producers ORDER BY kind")
    assert sorted(kind for _, kind in producers) == ["ask_llm", "embedding", "perplexity"]
    for producer, kind in producers:
        files = attributes.producer_glob(store.attributes, producer)
        rows, distinct = store.query("SELECT count(*), count(DISTINCT hash) FROM read_parquet(?)", [files])[0]
        assert rows == distinct == n_docs, f"{kind}: {rows} rows for {distinct} documents, {n_docs} expected"
        unscored = store.query(
            f"SELECT d.shard, count(*) FROM documents d ANTI JOIN read_parquet(?) t"
            f" ON t.hash = {attributes.key_sql('d.content_hash')} GROUP BY d.shard", [files])
        assert unscored == [], f"{kind}: documents of these shards have no result: {unscored}"
        # each shard's results are one file under the shard's own directory
        assert sorted(p.parent.name for p in attributes.producer_dir(store.attributes, producer).rglob("*.parquet")) \
            == sorted(SHARDS)
    writers = {row[0] for row in store.query("SELECT DISTINCT run_id FROM runs WHERE producer_id IS NOT NULL")}
    assert writers == run_ids, f"lineage from runs other than the two cluster runs: {writers ^ run_ids}"
    lineage = store.query(
        "SELECT asset, partition_key, count(*) FROM runs WHERE asset IN ('ask_llm_scores', 'perplexity_scores')"
        " GROUP BY ALL ORDER BY ALL")
    assert lineage == [(asset, shard, 1) for asset in ("ask_llm_scores", "perplexity_scores") for shard in SHARDS]


def test_cluster_definitions_load_in_a_fresh_process(tmp_path):
    """`dagster definitions validate` loads the code location with the cluster configuration.

    Needs dagster-celery and redis (project dependencies) but no broker and no system package:
    loading only reads the URLs' variables, and nothing here installs anything.
    """
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    password = secrets.token_hex(16)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "DSELECT_DEPLOYMENT": "cluster",
           BROKER_ENV: f"redis://:{password}@dselect-redis:6379/0",
           BACKEND_ENV: f"redis://:{password}@dselect-redis:6379/1",
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
        "job = defs.resolve_job_def('shard_job')\n"
        "ex = job.executor_def\n"
        "print(json.dumps({'name': ex.name, 'base': ex.executor_creation_fn.__name__,\n"
        "                  'snapshot': dg.serialize_value(job.get_job_snapshot())}))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", inspect], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert password not in loaded.stderr
    described = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert (described["name"], described["base"]) == ("dselect_celery", "celery_executor")
    assert password not in described["snapshot"], "the broker password is in the job snapshot"

    # The same load without a password in the URL is refused, naming the variable, not the URL.
    refused = subprocess.run([sys.executable, "-c", inspect], cwd=REPO_ROOT, capture_output=True, text=True,
                             env={**env, BROKER_ENV: "redis://dselect-redis:6379/0"}, timeout=180)
    assert refused.returncode != 0
    assert f"{BROKER_ENV} has no password" in refused.stderr, refused.stderr[-3000:]


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


@pytest.mark.parametrize("variable", [BROKER_ENV, BACKEND_ENV])
@pytest.mark.parametrize("url", ["redis://broker:6379/0", "rediss://broker:6379/0?ssl_cert_reqs=required",
                                 "redis://dselect@broker:6379/0", "redis://:@broker:6379/0"])
def test_cluster_refuses_a_redis_url_without_password(monkeypatch, variable, url):
    monkeypatch.setenv(BROKER_ENV, "redis://:secret@broker:6379/0")
    monkeypatch.setenv(variable, url)
    with pytest.raises(DeploymentConfigError, match=f"{variable} has no password") as refused:
        celery_executor_config()
    assert "broker:6379" not in str(refused.value), "the message must not echo the URL"


def test_cluster_accepts_a_password_or_an_acl_user(monkeypatch):
    monkeypatch.setenv(BROKER_ENV, "rediss://dselect:secret@broker:6379/0?ssl_cert_reqs=required")
    monkeypatch.setenv(BACKEND_ENV, "redis://:secret@broker:6379/1")
    assert celery_executor_config()["broker"] == {"env": BROKER_ENV}


def test_worker_config_reads_the_urls_and_refuses_one_without_password(monkeypatch):
    """deploy/celery/dagster_celery_config.py: what `celery -A dagster_celery.app worker` imports."""
    module = str(WORKER_CONFIG_DIR / "dagster_celery_config.py")
    monkeypatch.setenv(BROKER_ENV, "redis://:secret@broker:6379/0")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    settings = runpy.run_path(module)
    assert settings["broker_url"] == settings["result_backend"] == "redis://:secret@broker:6379/0"
    assert settings["task_acks_late"] is True and settings["worker_prefetch_multiplier"] == 1
    monkeypatch.setenv(BACKEND_ENV, "redis://broker:6379/1")
    with pytest.raises(RuntimeError, match=f"{BACKEND_ENV} has no password"):
        runpy.run_path(module)
    monkeypatch.delenv(BROKER_ENV)
    with pytest.raises(RuntimeError, match=f"{BROKER_ENV} is not set"):
        runpy.run_path(module)


K8S_DIR = REPO_ROOT / "deploy" / "k8s"
BROKER_SECRET = "dselect-broker"
HELM_RELEASE = "dagster"  # the release name deploy/README.md and dagster-values.yaml install


def _yaml_docs(name: str) -> list[dict]:
    import yaml

    return [doc for doc in yaml.safe_load_all((K8S_DIR / name).read_text(encoding="utf-8")) if doc]


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_kubernetes_manifests_match_what_the_code_reads():
    """deploy/ names the variables, modules and versions that deployments.py and the workers use."""
    import importlib.metadata

    import yaml

    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert all((K8S_DIR / name).exists() for name in kustomization["resources"])
    assert "network-policy.yaml" in kustomization["resources"]

    (config_map,) = _yaml_docs("dselect-env.yaml")
    settings = config_map["data"]
    assert settings["DSELECT_DEPLOYMENT"] == "cluster"
    assert {"DSELECT_HOME", "DSELECT_CORPUS_DIR"} <= set(settings)
    # The URLs hold the password: a Secret carries them, never the ConfigMap.
    assert not {BROKER_ENV, BACKEND_ENV} & set(settings)
    for name in sorted(kustomization["resources"]) + ["dagster-values.yaml"]:
        for doc in _yaml_docs(name):
            assert doc.get("kind") != "Secret", f"{name} commits a Secret; it is created by hand (deploy/README.md)"
            leaked = [v for v in _strings(doc) if "redis://" in v or "rediss://" in v]
            assert not leaked, f"{name} holds a broker URL; it belongs in the {BROKER_SECRET} Secret: {leaked}"

    (workers,) = _yaml_docs("celery-workers.yaml")
    (container,) = workers["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "dagster_celery.app", "worker"]
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}},
                                    {"secretRef": {"name": BROKER_SECRET}}]

    redis_deployment, redis_service = _yaml_docs("redis.yaml")
    (redis,) = redis_deployment["spec"]["template"]["spec"]["containers"]
    password_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    assert password_env == {"REDIS_PASSWORD": {"name": BROKER_SECRET, "key": "REDIS_PASSWORD"}}
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert [p["containerPort"] for p in redis["ports"]] == [p["targetPort"] for p in redis_service["spec"]["ports"]]

    values = yaml.safe_load((K8S_DIR / "dagster-values.yaml").read_text())
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    assert code_location["dagsterApiGrpcArgs"] == ["-m", "dselect_assets.definitions"]
    assert code_location["envConfigMaps"] == [{"name": config_map["metadata"]["name"]}]
    assert code_location["envSecrets"] == [{"name": BROKER_SECRET}]
    assert code_location["includeConfigInLaunchedRuns"] == {"enabled": True}, "run pods need the secret too"
    helm_command = f"helm upgrade --install {HELM_RELEASE} dagster/dagster --version {dg.__version__}"
    assert helm_command in (K8S_DIR / "dagster-values.yaml").read_text()
    assert helm_command in (REPO_ROOT / "deploy" / "README.md").read_text()

    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    assert "PYTHONPATH=/opt/dselect/deploy/celery" in dockerfile
    assert (WORKER_CONFIG_DIR / "dagster_celery_config.py").exists()
    if importlib.util.find_spec("dagster_celery") is not None:
        assert f'"dagster-celery=={importlib.metadata.version("dagster-celery")}"' in dockerfile


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def _pods() -> dict[str, dict[str, str]]:
    """The labels of every pod dselect's namespace holds, from these manifests and the chart's templates.

    The chart's part is a model of what dagster/dagster 1.13.27 renders (selector labels
    app.kubernetes.io/name and /instance, a `component` label per deployment, the values' `labels`,
    and for run pods the code location's `labels` passed on as container context); it is not the
    output of `helm template`, which this test does not run.
    """
    values_text = (K8S_DIR / "dagster-values.yaml").read_text()
    import yaml

    values = yaml.safe_load(values_text)
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    (workers,) = _yaml_docs("celery-workers.yaml")
    redis_deployment, _ = _yaml_docs("redis.yaml")
    chart = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": HELM_RELEASE}
    return {
        "celery worker": workers["spec"]["template"]["metadata"]["labels"],
        "code location": {**chart, "component": "user-deployments", "deployment": code_location["name"],
                          **code_location["labels"]},
        "run pod": {"dagster/run-id": "0f0e", "dagster/job": "shard_job", **code_location["labels"]},
        "webserver": {**chart, "component": "dagster-webserver", **values["dagsterWebserver"]["labels"]},
        "daemon": {**chart, "component": "dagster-daemon", "deployment": "daemon"},
        "redis": redis_deployment["spec"]["template"]["metadata"]["labels"],
        "postgres": {"app": "postgresql", "release": HELM_RELEASE, "role": "master", "heritage": "Helm",
                     "chart": "postgresql-8.1.0"},
        # Pods that are not dselect's: nothing admits them.
        "unlabelled pod": {},
        "another app": {"app": "web", "app.kubernetes.io/part-of": "shop"},
        "another dagster release's daemon": {"app.kubernetes.io/name": "dagster",
                                             "app.kubernetes.io/instance": "other", "component": "dagster-daemon"},
        "a pod claiming to be dselect by name only": {"app.kubernetes.io/part-of": "dselect"},
    }


# policy name -> (the pod it protects, its port, exactly the pods it admits)
EXPECTED_POLICIES = {
    "dselect-redis-ingress": ("redis", 6379, {"celery worker", "run pod", "code location"}),
    "dagster-postgresql-ingress": ("postgres", 5432,
                                   {"celery worker", "run pod", "code location", "webserver", "daemon"}),
}


def test_network_policies_admit_only_dselect_pods_to_the_broker_and_postgres():
    pods = _pods()
    policies = {doc["metadata"]["name"]: doc for doc in _yaml_docs("network-policy.yaml")}
    assert set(policies) == set(EXPECTED_POLICIES)
    for name, (target, port, admitted) in EXPECTED_POLICIES.items():
        policy = policies[name]
        assert policy["kind"] == "NetworkPolicy" and policy["apiVersion"] == "networking.k8s.io/v1"
        spec = policy["spec"]
        assert "Ingress" in spec["policyTypes"]
        assert spec["podSelector"], f"{name}: an empty podSelector would isolate every pod"
        selected = {pod for pod, labels in pods.items() if _selects(spec["podSelector"], labels)}
        assert selected == {target}, f"{name} applies to {sorted(selected)}, not only {target}"
        let_in = set()
        for rule in spec["ingress"]:
            # An ingress rule without `from` (or with an empty peer) admits every source.
            assert rule.get("from"), f"{name}: a rule without `from` admits everyone"
            assert [p["port"] for p in rule["ports"]] == [port] and rule["ports"][0]["protocol"] == "TCP"
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{name}: only pods of this namespace, by label: {peer}"
                assert peer["podSelector"], f"{name}: an empty podSelector admits every pod of the namespace"
                let_in |= {pod for pod, labels in pods.items() if _selects(peer["podSelector"], labels)}
        assert let_in == admitted, (
            f"{name} admits {sorted(let_in)}; expected exactly {sorted(admitted)} "
            f"(extra: {sorted(let_in - admitted)}, missing: {sorted(admitted - let_in)})")


def test_without_the_variable_the_local_executor_is_unchanged(monkeypatch):
    from dselect_assets.deployments import current_deployment, executor_for

    monkeypatch.delenv("DSELECT_DEPLOYMENT", raising=False)
    assert current_deployment() == "local"
    assert executor_for("local").name == "multiprocess"
    monkeypatch.setenv("DSELECT_DEPLOYMENT", "ray")
    with pytest.raises(DeploymentConfigError, match="'ray'"):
        current_deployment()


def test_every_asset_but_the_per_shard_scorers_writes_the_catalogue_in_its_pool():
    from dselect_assets.assets import paper_scores, scoring, tiny_lm_scores
    from dselect_assets.assets.common import CATALOGUE_POOL
    from dselect_assets.definitions import defs

    # The scorers write only their own attribute files (the Celery test above runs them with the
    # DuckDB file out of reach), so a pool limit of 1 on the catalogue never holds them back.
    scorers = [scoring.embeddings, scoring.ask_llm_scores, scoring.perplexity_scores,
               *paper_scores.SCORE_ASSETS.values(), *tiny_lm_scores.SCORE_ASSETS.values()]
    scorer_keys = {key for asset in scorers for key in asset.keys}
    pools = {key: asset.op.pool for asset in defs.assets for key in asset.keys}
    assert {key for key, pool in pools.items() if pool is None} == scorer_keys
    assert {pool for key, pool in pools.items() if key not in scorer_keys} == {CATALOGUE_POOL}

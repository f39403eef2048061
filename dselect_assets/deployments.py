"""Which executor runs the assets, chosen by one environment variable: DSELECT_DEPLOYMENT.

- `local` (default): Dagster's multiprocess executor on this machine. Steps of
  one run go in parallel processes; DuckDB writes from them never collide
  because every write is a short transaction retried while another process
  holds the file (see dselect_assets/store/connection.py), so no step has to wait for another's
  whole model run.
- `cluster`: the Celery executor of `dagster-celery`. Every step is a Celery
  task that a worker process picks up from the broker, on this machine or any
  other that shares DAGSTER_HOME's storage, DSELECT_HOME and the corpus
  directory. Set DSELECT_CELERY_BROKER (e.g. redis://:PASSWORD@redis:6379/0)
  and, optionally, DSELECT_CELERY_BACKEND (defaults to the broker). Workers run
  `celery -A dagster_celery.app worker` with deploy/celery on PYTHONPATH, which
  reads the same two variables (see deploy/README.md).

Anyone who can put a message on the broker can make the workers run a step, so a
Redis URL without a password (or an ACL user and password) is refused: the broker
must be started with one (`--requirepass`, or an ACL file), and the URLs live in
environment variables only (a Kubernetes Secret in deploy/k8s). The executor keeps
them as `{"env": VAR}` references, so neither the URL nor the password is ever
part of a run's config, a job snapshot or the event log.

The asset code is the same in every deployment; only the executor changes.
"""

import os
from urllib.parse import urlsplit

import dagster as dg

DEPLOYMENTS = ("local", "cluster")
BROKER_ENV = "DSELECT_CELERY_BROKER"
BACKEND_ENV = "DSELECT_CELERY_BACKEND"

# Steps here run for minutes (model loading, scoring a shard): a worker takes one
# task at a time and acknowledges it only when done, so a queued step goes to an
# idle worker rather than waiting behind a busy one, and a step whose worker dies
# is handed out again (safe: scores are keyed by (content_hash, producer_id)).
CELERY_SETTINGS = {"worker_prefetch_multiplier": 1, "task_acks_late": True}


class DeploymentConfigError(ValueError):
    """A deployment was chosen without the settings it needs."""


def current_deployment() -> str:
    name = os.environ.get("DSELECT_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise DeploymentConfigError(f"DSELECT_DEPLOYMENT={name!r} is not one of {DEPLOYMENTS}")
    return name


def require_authenticated_url(variable: str, url: str) -> None:
    """Refuse a Redis URL that carries no password: that broker would take steps from anyone.

    The message names the variable, never the URL (which may hold a password).
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as exc:
        raise DeploymentConfigError(f"{variable} is not a valid URL ({exc})") from None
    if parts.scheme in ("redis", "rediss") and not password:
        raise DeploymentConfigError(
            f"{variable} has no password: the Celery broker must refuse clients without one, "
            "since anyone who can enqueue a message can make the workers run a step. Start Redis "
            "with --requirepass (or an ACL user) and use redis://:PASSWORD@HOST:6379/0, or "
            "rediss:// for TLS (see deploy/README.md)"
        )


def celery_executor_config() -> dict:
    """The Celery executor's config; URLs stay env references so no password lands in a snapshot."""
    if not os.environ.get(BROKER_ENV):
        raise DeploymentConfigError(
            f"DSELECT_DEPLOYMENT=cluster needs {BROKER_ENV}, the Celery broker URL with its "
            "password (e.g. redis://:PASSWORD@127.0.0.1:6379/0); the workers must read the same one"
        )
    backend_env = BACKEND_ENV if os.environ.get(BACKEND_ENV) else BROKER_ENV
    for variable in dict.fromkeys((BROKER_ENV, backend_env)):
        require_authenticated_url(variable, os.environ[variable])
    return {
        "broker": {"env": BROKER_ENV},
        "backend": {"env": backend_env},
        "config_source": dict(CELERY_SETTINGS),
    }


def executor_for(deployment: str) -> dg.ExecutorDefinition:
    if deployment == "local":
        return dg.multiprocess_executor.configured({"max_concurrent": os.cpu_count() or 2})
    if deployment == "cluster":
        # Imported here so the local deployment does not need dagster-celery installed.
        from dagster_celery import celery_executor

        return celery_executor.configured(celery_executor_config(), name="dselect_celery")
    raise DeploymentConfigError(f"no executor for deployment {deployment!r}")

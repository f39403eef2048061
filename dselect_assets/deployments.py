"""Which executor runs the assets, chosen by one environment variable: DSELECT_DEPLOYMENT.

- `local` (default): Dagster's multiprocess executor on this machine. Steps of
  one run go in parallel processes; DuckDB writes from them never collide
  because every write is a short transaction retried while another process
  holds the file (see core/store.py), so no step has to wait for another's
  whole model run.
- `cluster`: the Celery executor of `dagster-celery`. Every step is a Celery
  task that a worker process picks up from the broker, on this machine or any
  other that shares DAGSTER_HOME's storage, DSELECT_HOME and the corpus
  directory. Set DSELECT_CELERY_BROKER (e.g. redis://redis:6379/0) and,
  optionally, DSELECT_CELERY_BACKEND (defaults to the broker). Workers run
  `celery -A dagster_celery.app worker` with deploy/celery on PYTHONPATH, which
  reads the same two variables (see deploy/README.md).

The asset code is the same in every deployment; only the executor changes.
"""

import os

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


def celery_executor_config() -> dict:
    """The Celery executor's config; URLs stay env references so no password lands in a snapshot."""
    if not os.environ.get(BROKER_ENV):
        raise DeploymentConfigError(
            f"DSELECT_DEPLOYMENT=cluster needs {BROKER_ENV}, the Celery broker URL "
            "(e.g. redis://127.0.0.1:6379/0); the workers must read the same one"
        )
    backend_env = BACKEND_ENV if os.environ.get(BACKEND_ENV) else BROKER_ENV
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

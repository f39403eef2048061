"""Which executor runs the assets, chosen by one environment variable: DSELECT_DEPLOYMENT.

- `local` (default): Dagster's multiprocess executor on this machine. Steps of
  one run go in parallel processes; DuckDB writes from them never collide
  because every write is a short transaction retried while another process
  holds the file (see core/store.py), so no step has to wait for another's
  whole model run.

The asset code is the same in every deployment; only the executor changes.
"""

import os

import dagster as dg

DEPLOYMENTS = ("local",)


def current_deployment() -> str:
    name = os.environ.get("DSELECT_DEPLOYMENT", "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"DSELECT_DEPLOYMENT={name!r} is not one of {DEPLOYMENTS}")
    return name


def executor_for(deployment: str) -> dg.ExecutorDefinition:
    if deployment == "local":
        return dg.multiprocess_executor.configured({"max_concurrent": os.cpu_count() or 2})
    raise ValueError(f"no executor for deployment {deployment!r}")

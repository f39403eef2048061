"""Celery settings for dselect's workers, read by `celery -A dagster_celery.app worker`.

dagster_celery's app imports a module of this name when it is on PYTHONPATH; the
broker and result backend come from the same variables the executor reads
(dselect_assets/deployments.py), so the workers and the runs meet on one queue.

The URLs carry the broker's password (redis://:PASSWORD@HOST:6379/0, or rediss:// for
TLS) and come from the environment only: in Kubernetes from the `dselect-broker` Secret
(deploy/k8s). A Redis URL without a password is refused here too, so a worker is never
pointed at a broker that would take steps from anyone. This module is self-contained
(no dselect import) so that it loads before anything else in the worker.
"""

import os
from urllib.parse import urlsplit


def _url(variable: str, default: str | None = None) -> str:
    url = os.environ.get(variable) or default
    if not url:
        raise RuntimeError(
            f"{variable} is not set: a dselect Celery worker needs the broker URL with its password, "
            "e.g. redis://:PASSWORD@127.0.0.1:6379/0"
        )
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and not parts.password:
        # Never print the URL itself: the message would be the same with or without a password.
        raise RuntimeError(
            f"{variable} has no password: dselect's workers only use a broker that refuses "
            "unauthenticated clients (redis-server --requirepass, or an ACL user); see deploy/README.md"
        )
    return url


broker_url = _url("DSELECT_CELERY_BROKER")
result_backend = _url("DSELECT_CELERY_BACKEND", default=broker_url)

# Same as deployments.CELERY_SETTINGS: one long step at a time per worker process,
# acknowledged when done so a lost worker's step is handed out again.
worker_prefetch_multiplier = 1
task_acks_late = True
broker_connection_retry_on_startup = True

"""Celery settings for dselect's workers, read by `celery -A dagster_celery.app worker`.

dagster_celery's app imports a module of this name when it is on PYTHONPATH; the
broker and result backend come from the same variables the executor reads
(dselect_assets/deployments.py), so the workers and the runs meet on one queue.
"""

import os

try:
    broker_url = os.environ["DSELECT_CELERY_BROKER"]
except KeyError:
    raise RuntimeError(
        "DSELECT_CELERY_BROKER is not set: a dselect Celery worker needs the broker URL, "
        "e.g. redis://127.0.0.1:6379/0"
    ) from None
result_backend = os.environ.get("DSELECT_CELERY_BACKEND") or broker_url

# Same as deployments.CELERY_SETTINGS: one long step at a time per worker process,
# acknowledged when done so a lost worker's step is handed out again.
worker_prefetch_multiplier = 1
task_acks_late = True
broker_connection_retry_on_startup = True

#!/usr/bin/env bash
# Install what the `cluster` deployment needs on this machine: Debian's redis-server (the
# Celery broker and result backend) and dagster-celery + redis in .venv. Idempotent: when
# everything is present it touches nothing. .ci/run calls it before pytest; the tests never
# do (a test that finds redis-server missing fails and names this script).
set -euo pipefail
cd "$(dirname "$0")/.."

DAGSTER_CELERY_VERSION=${DAGSTER_CELERY_VERSION:-0.29.27}
REDIS_PY_VERSION=${REDIS_PY_VERSION:-8.1.0}
PYTHON=${PYTHON:-.venv/bin/python}

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi

if command -v redis-server >/dev/null; then
    echo "cluster engine: redis-server already installed ($(redis-server --version | cut -d' ' -f3))"
else
    echo "cluster engine: installing Debian redis-server"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends redis-server
    # Debian's package starts a system-wide server on 127.0.0.1:6379 with no password; the
    # tests start their own (with a password, on a free port), so stop it and keep it off.
    $SUDO service redis-server stop >/dev/null 2>&1 || true
    if command -v systemctl >/dev/null; then
        $SUDO systemctl disable redis-server >/dev/null 2>&1 || true
    fi
fi

if "$PYTHON" -c "import dagster_celery, redis" 2>/dev/null; then
    echo "cluster engine: dagster-celery already in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
else
    echo "cluster engine: installing dagster-celery==$DAGSTER_CELERY_VERSION redis==$REDIS_PY_VERSION"
    # dagster-celery is pinned to the dagster release in pyproject.toml; it never changes dagster or torch.
    "$PYTHON" -m pip install -q "dagster-celery==$DAGSTER_CELERY_VERSION" "redis==$REDIS_PY_VERSION"
fi

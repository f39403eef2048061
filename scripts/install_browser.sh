#!/usr/bin/env bash
# Install what the browser test of the Dagster UI needs: Debian's chromium and the Python
# `playwright` package in .venv. Idempotent: when both are present it touches nothing.
#
# Never runs `playwright install`: that downloads browser builds from a CDN, which these
# machines cannot reach. The test drives /usr/bin/chromium through playwright's bundled driver.
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=${PLAYWRIGHT_VERSION:-1.65.2}
PYTHON=${PYTHON:-.venv/bin/python}

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi

if [[ -x /usr/bin/chromium ]]; then
    echo "browser: chromium already installed ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
else
    echo "browser: installing Debian chromium"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation
    echo "browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
fi

if "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    echo "browser: playwright already in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
else
    echo "browser: installing playwright==$PLAYWRIGHT_VERSION"
    "$PYTHON" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"
fi

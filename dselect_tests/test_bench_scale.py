"""benchmarks/bench_scale.py runs its stages through the real assets at a small size."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy
REPO_ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"^(\w+) (\d+) peak_rss_mib=(\d+) seconds=(\d+\.\d)$")
RATIO_LINE = re.compile(r"^(\w+) time_ratio=\d+\.\d\d rss_ratio=\d+\.\d\d$")


def test_every_stage_asked_for_and_what_it_reads_runs_at_both_sizes(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_scale.py", "--sizes", "600", "1200", "--shard-docs", "400",
         "--stages", "select_semdedup", "select_ask_llm_density", "select_full", "export", "--workdir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    stages = {(m[1], int(m[2])) for m in map(STAGE_LINE.match, lines) if m}
    expected = ["baseline", "ingest", "inputs", "eval_sets", "density", "clusters", "select_semdedup",
                "select_ask_llm_topk", "select_ask_llm_density", "select_full", "export"]
    assert stages == {(stage, n) for stage in expected for n in (600, 1200)}
    assert [m[1] for m in map(RATIO_LINE.match, lines) if m] == expected
    assert not list(tmp_path.glob("home-*")), "each size's store is removed once measured"

"""Comparison report across samplers and sampling rates: tables, plots, and numbers relative to random.

Input: one row per (sampler, rate, eval_set) perplexity, repeated rows (seeds)
are averaged, plus full-data baseline rows with sampler="full", rate=1.0.

Two summary numbers per (sampler, rate, eval_set):

- ``rel_change_vs_random_pct`` = 100 * (ppl - ppl_random) / ppl_random, with
  ppl_random the random sampler's perplexity at the same rate. Negative = better
  than random.
- ``gap_closed_pct`` = 100 * (ppl_random - ppl) / (ppl_random - ppl_full): the
  share of the perplexity that random subsampling loses against the full data
  (same token budget) which this sampler wins back. 0 = no better than random,
  100 = as good as the full data, >100 = better than the full data, <0 = worse
  than random. It plays the role of the paper's "over-scaling" (share of the gap
  to the next model size closed by training on the sample): here the reference
  gap is random-sample-vs-full-data, because we train one model size. It is
  null where random loses less than `min_gap_fraction` of ppl_full (no gap to
  close, so the ratio would be noise) or where random/full rows are missing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

FULL_SAMPLER = "full"
RANDOM_SAMPLER = "random"
REQUIRED_COLUMNS = ("sampler", "rate", "eval_set", "ppl")


@dataclass
class Report:
    markdown: str
    markdown_path: Path
    summary: pl.DataFrame
    summary_path: Path
    plot_paths: dict[str, Path]


def _validate(results: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results frame lacks columns {missing}; has {results.columns}")
    frame = results.select(
        pl.col("sampler").cast(pl.Utf8),
        pl.col("rate").cast(pl.Float64),
        pl.col("eval_set").cast(pl.Utf8),
        pl.col("ppl").cast(pl.Float64),
    ).with_row_index("row")
    ppl = pl.col("ppl")
    bad_ppl = frame.filter(ppl.is_null() | ppl.is_nan() | ppl.is_infinite() | ~(ppl > 0))
    if bad_ppl.height:
        row, value = bad_ppl["row"][0], bad_ppl["ppl"][0]
        raise ValueError(f"results row {row}: ppl must be a finite positive number, got {value}")
    bad_rate = frame.filter(pl.col("rate").is_null() | ~((pl.col("rate") > 0) & (pl.col("rate") <= 1)))
    if bad_rate.height:
        raise ValueError(f"results row {bad_rate['row'][0]}: rate must be in (0, 1], got {bad_rate['rate'][0]}")
    return frame.drop("row")


def relative_to_random(results: pl.DataFrame, min_gap_fraction: float = 0.005) -> pl.DataFrame:
    """Mean ppl per (sampler, rate, eval_set) with the two numbers defined in the module docstring."""
    frame = _validate(results)
    mean = frame.group_by("sampler", "rate", "eval_set").agg(pl.col("ppl").mean(), pl.len().alias("n_runs"))
    random = mean.filter(pl.col("sampler") == RANDOM_SAMPLER).select(
        "rate", "eval_set", pl.col("ppl").alias("random_ppl")
    )
    full = (
        mean.filter(pl.col("sampler") == FULL_SAMPLER)
        .group_by("eval_set")
        .agg(pl.col("ppl").mean().alias("full_ppl"))
    )
    gap = pl.col("random_ppl") - pl.col("full_ppl")
    return (
        mean.filter(pl.col("sampler") != FULL_SAMPLER)
        .join(random, on=["rate", "eval_set"], how="left")
        .join(full, on="eval_set", how="left")
        .with_columns(
            (100.0 * (pl.col("ppl") - pl.col("random_ppl")) / pl.col("random_ppl")).alias(
                "rel_change_vs_random_pct"
            ),
            pl.when(gap > min_gap_fraction * pl.col("full_ppl"))
            .then(100.0 * (pl.col("random_ppl") - pl.col("ppl")) / gap)
            .otherwise(None)
            .alias("gap_closed_pct"),
        )
        .sort(pl.col("sampler") != RANDOM_SAMPLER, "sampler", "rate", "eval_set")
    )


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sampler_order(samplers: list[str]) -> list[str]:
    return sorted(set(samplers), key=lambda s: (s != RANDOM_SAMPLER, s))


def _plot(summary: pl.DataFrame, full_ppl: float | None, eval_set: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = summary.filter(pl.col("eval_set") == eval_set)
    for sampler in _sampler_order(rows["sampler"].to_list()):
        series = rows.filter(pl.col("sampler") == sampler).sort("rate")
        style = {"color": "black", "linestyle": "--"} if sampler == RANDOM_SAMPLER else {}
        ax.plot((series["rate"] * 100).to_list(), series["ppl"].to_list(), marker="o", label=sampler, **style)
    if full_ppl is not None:
        ax.axhline(full_ppl, color="gray", linestyle=":", label="full data")
    ax.set_xlabel("sampling rate (%)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"held-out perplexity: {eval_set}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_report(results: pl.DataFrame, out_dir: str | Path, title: str = "dselect: sampler comparison") -> Report:
    """Write report.md, summary.csv and one ppl_<eval_set>.png per eval set into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = relative_to_random(results)
    frame = _validate(results)
    full = frame.filter(pl.col("sampler") == FULL_SAMPLER).group_by("eval_set").agg(pl.col("ppl").mean())
    full_ppl = dict(zip(full["eval_set"].to_list(), full["ppl"].to_list()))
    eval_sets = sorted(set(frame["eval_set"].to_list()))

    def lookup(sampler: str, rate: float, eval_set: str, column: str) -> float | None:
        hit = summary.filter(
            (pl.col("sampler") == sampler) & (pl.col("rate") == rate) & (pl.col("eval_set") == eval_set)
        )
        return hit[column][0] if hit.height else None

    keys = summary.select("sampler", "rate").unique().sort(pl.col("sampler") != RANDOM_SAMPLER, "sampler", "rate")
    ppl_rows = [
        [s, f"{r:.0%}", *(_fmt(lookup(s, r, e, "ppl"), ".2f") for e in eval_sets)] for s, r in keys.iter_rows()
    ]
    if full_ppl:
        ppl_rows.append([FULL_SAMPLER, "100%", *(_fmt(full_ppl.get(e), ".2f") for e in eval_sets)])
    relative_rows = [
        [
            s,
            f"{r:.0%}",
            *(
                _fmt(lookup(s, r, e, column), "+.1f")
                for e in eval_sets
                for column in ("rel_change_vs_random_pct", "gap_closed_pct")
            ),
        ]
        for s, r in keys.iter_rows()
        if s != RANDOM_SAMPLER
    ]
    markdown = "\n\n".join(
        [
            f"# {title}",
            "## Held-out perplexity (lower is better)",
            _markdown_table(["sampler", "rate", *eval_sets], ppl_rows),
            "## Relative to random at the same rate",
            "Δ% = perplexity change vs random (negative = better). Gap closed % = share of the random-vs-full-data "
            "perplexity gap this sampler wins back (0 = random, 100 = full data; the paper's over-scaling analogue).",
            _markdown_table(
                ["sampler", "rate", *(f"{e} {kind}" for e in eval_sets for kind in ("Δ% vs random", "gap closed %"))],
                relative_rows,
            ),
        ]
    ) + "\n"
    plot_paths = {}
    for eval_set in eval_sets:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", eval_set)
        plot_paths[eval_set] = out_dir / f"ppl_{slug}.png"
        _plot(summary, full_ppl.get(eval_set), eval_set, plot_paths[eval_set])
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(markdown)
    summary_path = out_dir / "summary.csv"
    summary.write_csv(summary_path)
    return Report(markdown, markdown_path, summary, summary_path, plot_paths)

"""Comparison report across samplers, sampling rates and seeds: means with intervals, and
paired differences from random that say whether they stand out from seed noise.

Input: one row per (sampler, rate, seed, eval_set) perplexity, plus full-data rows with
sampler="full", rate=1.0. `seed` is optional (missing: every row is seed 0); `unigram_ppl`
(optional) is the add-one unigram baseline of the same checkpoint's training data, which the
full-data runs are measured against (ratio well below 1: the LM learned within its budget).

Per (sampler, rate, eval_set):

- ``ppl`` ± ``ppl_ci``: mean over seeds and the half-width of its 95% t-interval.
- ``rel_change_vs_random_pct`` ± ``rel_change_ci``: 100 * (ppl - ppl_random) / ppl_random,
  computed per seed against random at the same rate *and seed* (the same training seed, so
  the pair shares its initialisation and batch order), then averaged. Negative = better.
- ``gap_closed_pct`` ± ``gap_closed_ci``: 100 * (ppl_random - ppl) / (ppl_random - ppl_full)
  per seed: the share of what random subsampling loses against the full data (same token
  budget) that this sampler wins back; 0 = random, 100 = full data. It plays the role of the
  paper's over-scaling figure, with the random-vs-full gap as the reference because one model
  size is trained. Null where random loses less than `min_gap_fraction` of ppl_full.
- ``verdict``: "better than random" / "worse than random" when the paired interval excludes
  zero, otherwise "not distinguishable from random"; with one seed there is no interval and
  the verdict says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from scipy import stats

from dselect_assets.core.markdown import markdown_table
from dselect_assets.core.selection import paper

FULL_SAMPLER = "full"
RANDOM_SAMPLER = "random"
REQUIRED_COLUMNS = ("sampler", "rate", "eval_set", "ppl")
NO_INTERVAL = "one seed: no interval"


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
    seed = pl.col("seed").cast(pl.Int64) if "seed" in results.columns else pl.lit(0, dtype=pl.Int64).alias("seed")
    frame = results.select(
        pl.col("sampler").cast(pl.Utf8),
        pl.col("rate").cast(pl.Float64),
        seed,
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
    duplicated = frame.filter(~pl.struct("sampler", "rate", "seed", "eval_set").is_first_distinct())
    if duplicated.height:
        raise ValueError(f"results row {duplicated['row'][0]}: more than one row for the same (sampler, rate, seed, "
                         "eval_set)")
    return frame.drop("row")


def _t975(n: int) -> float | None:
    return float(stats.t.ppf(0.975, n - 1)) if n and n > 1 else None


def with_interval(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """From `{name}_sd` and `{name}_n`, the 95% t-interval half-width `{name}_ci` (null below two values)."""
    t = frame[f"{name}_n"].map_elements(_t975, return_dtype=pl.Float64)
    ci = t * frame[f"{name}_sd"] / frame[f"{name}_n"].cast(pl.Float64).sqrt()
    return frame.with_columns(ci.alias(f"{name}_ci")).drop(f"{name}_sd", f"{name}_n")


def _spread(column: str, name: str) -> list[pl.Expr]:
    values = pl.col(column).drop_nulls()
    return [values.std().alias(f"{name}_sd"), values.count().alias(f"{name}_n")]


def relative_to_random(results: pl.DataFrame, min_gap_fraction: float = 0.005) -> pl.DataFrame:
    """One row per (sampler, rate, eval_set) with the numbers defined in the module docstring."""
    frame = _validate(results)
    random = frame.filter(pl.col("sampler") == RANDOM_SAMPLER).select(
        "rate", "seed", "eval_set", pl.col("ppl").alias("random_ppl"))
    full = frame.filter(pl.col("sampler") == FULL_SAMPLER).select("seed", "eval_set", pl.col("ppl").alias("full_ppl"))
    gap = pl.col("random_ppl") - pl.col("full_ppl")
    paired = (
        frame.filter(pl.col("sampler") != FULL_SAMPLER)
        .join(random, on=["rate", "seed", "eval_set"], how="left")
        .join(full, on=["seed", "eval_set"], how="left")
        .with_columns(
            (100.0 * (pl.col("ppl") - pl.col("random_ppl")) / pl.col("random_ppl")).alias("rel"),
            pl.when(gap > min_gap_fraction * pl.col("full_ppl"))
            .then(100.0 * (pl.col("random_ppl") - pl.col("ppl")) / gap)
            .otherwise(None)
            .alias("gap_closed"),
        )
    )
    summary = paired.group_by("sampler", "rate", "eval_set").agg(
        pl.col("ppl").mean(),
        *_spread("ppl", "ppl"),
        pl.len().alias("n_runs"),
        pl.col("rel").mean().alias("rel_change_vs_random_pct"),
        *_spread("rel", "rel_change"),
        pl.col("rel").count().alias("n_paired"),
        pl.col("gap_closed").mean().alias("gap_closed_pct"),
        *_spread("gap_closed", "gap_closed"),
    )
    for name in ("ppl", "rel_change", "gap_closed"):
        summary = with_interval(summary, name)
    low = pl.col("rel_change_vs_random_pct") - pl.col("rel_change_ci")
    high = pl.col("rel_change_vs_random_pct") + pl.col("rel_change_ci")
    verdict = (
        pl.when(pl.col("sampler") == RANDOM_SAMPLER).then(pl.lit("the reference"))
        .when(pl.col("n_paired") == 0).then(pl.lit("no random run to compare with"))
        .when(pl.col("rel_change_ci").is_null()).then(pl.lit(NO_INTERVAL))
        .when(high < 0).then(pl.lit("better than random"))
        .when(low > 0).then(pl.lit("worse than random"))
        .otherwise(pl.lit("not distinguishable from random"))
    )
    return summary.with_columns(verdict.alias("verdict")).sort(
        pl.col("sampler") != RANDOM_SAMPLER, "sampler", "rate", "eval_set")


def full_data(results: pl.DataFrame) -> pl.DataFrame:
    """Mean and interval of the full-data runs per eval set."""
    frame = _validate(results).filter(pl.col("sampler") == FULL_SAMPLER)
    return with_interval(
        frame.group_by("eval_set").agg(pl.col("ppl").mean(), *_spread("ppl", "ppl"), pl.len().alias("n_runs")), "ppl")


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _with_ci(value: float | None, ci: float | None, fmt: str) -> str:
    text = _fmt(value, fmt)
    return text if ci is None or text == "n/a" else f"{text} ± {format(ci, fmt.lstrip('+'))}"


def _sampler_order(samplers: list[str]) -> list[str]:
    return sorted(set(samplers), key=lambda s: (s != RANDOM_SAMPLER, s))


def _plot(summary: pl.DataFrame, full: dict, eval_set: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rows = summary.filter(pl.col("eval_set") == eval_set)
    samplers = _sampler_order(rows["sampler"].to_list())
    for i, sampler in enumerate(samplers):
        series = rows.filter(pl.col("sampler") == sampler).sort("rate")
        style = {"color": "black", "linestyle": "--"} if sampler == RANDOM_SAMPLER else {}
        # Small horizontal offsets keep overlapping error bars readable.
        x = [(r * 100) + (i - len(samplers) / 2) * 0.4 for r in series["rate"].to_list()]
        ax.errorbar(x, series["ppl"].to_list(), yerr=series["ppl_ci"].fill_null(0).to_list(), marker="o",
                    capsize=3, label=sampler, **style)
    if eval_set in full:
        mean, ci = full[eval_set]
        ax.axhline(mean, color="gray", linestyle=":", label="full data")
        if ci:
            ax.axhspan(mean - ci, mean + ci, color="gray", alpha=0.15)
    ax.set_xlabel("sampling rate (%)")
    ax.set_ylabel("perplexity (mean, 95% interval over seeds)")
    ax.set_title(f"held-out perplexity: {eval_set}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def full_vs_unigram(results: pl.DataFrame) -> list[str]:
    """Per eval set, the full-data runs' mean perplexity over their unigram baseline's."""
    if "unigram_ppl" not in results.columns:
        return []
    full = results.filter((pl.col("sampler") == FULL_SAMPLER) & pl.col("unigram_ppl").is_not_null())
    rows = full.group_by("eval_set").agg(pl.col("ppl").mean(), pl.col("unigram_ppl").mean(), pl.len()).sort("eval_set")
    return [f"- {r['eval_set']}: full data {r['ppl']:.1f} vs unigram {r['unigram_ppl']:.1f}, ratio "
            f"{r['ppl'] / r['unigram_ppl']:.2f} ({r['len']} run(s))" for r in rows.iter_rows(named=True)]


def stand_in_rows(samplers: list[str]) -> list[list[str]]:
    """What each sampler of the report is: the paper configurations it stands in for, and what runs."""
    rows = []
    for sampler in _sampler_order(samplers):
        stand_in = paper.STAND_IN_BY_NAME.get(sampler)
        rows.append([sampler, "; ".join(stand_in.paper), stand_in.stand_in] if stand_in
                    else [sampler, "not one of the paper's 19", "dselect's own sampler"])
    return rows


def findings(summary: pl.DataFrame) -> list[str]:
    """One sentence per comparison whose paired interval excludes zero, then what did not."""
    lines, unclear = [], []
    for row in summary.filter(pl.col("sampler") != RANDOM_SAMPLER).iter_rows(named=True):
        where = f"{row['sampler']} at {row['rate']:.0%} on {row['eval_set']}"
        if row["verdict"] in ("better than random", "worse than random"):
            lines.append(f"- {where}: {row['verdict']}, "
                         f"{_with_ci(row['rel_change_vs_random_pct'], row['rel_change_ci'], '+.1f')}% perplexity "
                         f"({row['n_paired']} paired seeds).")
        else:
            unclear.append(where)
    if unclear:
        lines.append(f"- Not distinguishable from random (interval includes 0, or one seed): {', '.join(unclear)}.")
    return lines or ["- No comparison with random is possible yet."]


def build_report(results: pl.DataFrame, out_dir: str | Path, title: str = "dselect: sampler comparison",
                 notes: list[str] | None = None) -> Report:
    """Write report.md, summary.csv and one ppl_<eval_set>.png per eval set into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = relative_to_random(results)
    full_rows = full_data(results)
    full = {r["eval_set"]: (r["ppl"], r["ppl_ci"]) for r in full_rows.iter_rows(named=True)}
    frame = _validate(results)
    unigram = full_vs_unigram(results)
    eval_sets = sorted(set(frame["eval_set"].to_list()))
    seeds = sorted(set(frame["seed"].to_list()))
    by_key = {(r["sampler"], r["rate"], r["eval_set"]): r for r in summary.iter_rows(named=True)}
    keys = summary.select("sampler", "rate").unique().sort(pl.col("sampler") != RANDOM_SAMPLER, "sampler", "rate")

    def cell(s: str, r: float, e: str, value: str, ci: str, fmt: str) -> str:
        row = by_key.get((s, r, e))
        return _with_ci(row[value], row[ci], fmt) if row else "n/a"

    ppl_rows = [[s, f"{r:.0%}", *(cell(s, r, e, "ppl", "ppl_ci", ".2f") for e in eval_sets)]
                for s, r in keys.iter_rows()]
    if full:
        ppl_rows.append([FULL_SAMPLER, "100%", *(_with_ci(*full[e], ".2f") if e in full else "n/a"
                                                for e in eval_sets)])
    relative_rows = [
        [s, f"{r:.0%}", e, cell(s, r, e, "rel_change_vs_random_pct", "rel_change_ci", "+.1f"),
         cell(s, r, e, "gap_closed_pct", "gap_closed_ci", "+.1f"), by_key[(s, r, e)]["verdict"]]
        for s, r in keys.iter_rows() if s != RANDOM_SAMPLER for e in eval_sets if (s, r, e) in by_key
    ]
    markdown = "\n\n".join(
        [
            f"# {title}",
            f"{len(seeds)} seed(s) per configuration ({', '.join(map(str, seeds))}); ± is the half-width of a 95% "
            "t-interval over seeds.",
            "## Held-out perplexity (lower is better)",
            markdown_table(["sampler", "rate", *eval_sets], ppl_rows),
            "## Paired with random at the same rate and seed",
            "Δ% = perplexity change vs random (negative = better). Gap closed % = share of the random-vs-full-data "
            "perplexity gap this sampler wins back (0 = random, 100 = full data; the paper's over-scaling analogue).",
            markdown_table(["sampler", "rate", "eval set", "Δ% vs random", "gap closed %", "verdict"], relative_rows),
            "## What stands out from seed noise",
            "\n".join(findings(summary)),
            "## What each sampler is here",
            markdown_table(["sampler", "paper configuration(s)", "local stand-in"],
                           stand_in_rows([s for s in frame["sampler"].to_list() if s != FULL_SAMPLER])),
            *(["## Full data against the unigram baseline", "\n".join(unigram)] if unigram else []),
            *(["## Notes", "\n".join(f"- {n}" for n in notes)] if notes else []),
        ]
    ) + "\n"
    plot_paths = {}
    for eval_set in eval_sets:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", eval_set)
        plot_paths[eval_set] = out_dir / f"ppl_{slug}.png"
        _plot(summary, full, eval_set, plot_paths[eval_set])
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(markdown)
    summary_path = out_dir / "summary.csv"
    summary.write_csv(summary_path)
    return Report(markdown, markdown_path, summary, summary_path, plot_paths)

"""Metadata the UI can show: summary statistics, histograms as tables and inline PNGs."""

import base64
from pathlib import Path

import dagster as dg
import numpy as np


def summary(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"count": 0}
    p = np.percentile(finite, [5, 25, 50, 75, 95])
    return {
        "count": int(finite.size),
        "mean": round(float(finite.mean()), 4),
        **{f"p{q}": round(float(v), 4) for q, v in zip((5, 25, 50, 75, 95), p)},
    }


def histogram_markdown(values: np.ndarray, bins: int = 10) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "no finite values"
    counts, edges = np.histogram(finite, bins=bins)
    peak = max(int(counts.max()), 1)
    lines = ["| range | count | |", "|---|---|---|"]
    for count, lo, hi in zip(counts, edges[:-1], edges[1:]):
        lines.append(f"| {lo:.3g} – {hi:.3g} | {int(count)} | {'█' * round(20 * int(count) / peak)} |")
    return "\n".join(lines)


def histogram_png(values: np.ndarray, title: str, out_file: Path, bins: int = 30) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = values[np.isfinite(values)]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    ax.hist(finite, bins=bins, color="#4C72B0")
    ax.set_title(title)
    ax.set_ylabel("documents")
    fig.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file)
    plt.close(fig)
    return out_file


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """The PNG inline (data URI) so the UI shows it without serving files."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")

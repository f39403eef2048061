"""Markdown tables for asset metadata and the comparison report."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], limit: int | None = None) -> str:
    """A markdown table; with `limit`, rows past it are cut with a count of what was left out."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown]
    if len(rows) > len(shown):
        lines.append(f"\n… and {len(rows) - len(shown)} more rows")
    return "\n".join(lines)

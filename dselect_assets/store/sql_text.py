"""SQL text for values DuckDB cannot take as parameters: file lists written into a view, SET."""

from __future__ import annotations


def literal(value) -> str:
    """`value` as a quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"

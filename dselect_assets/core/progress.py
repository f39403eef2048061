"""Readable progress for long loops: "done/total, rate, time left".

The scorers (judge, perplexity LM, embedder) and the trainer accept an optional
`progress(done, total, elapsed_seconds)` callback, called after each batch or
checkpoint interval; `format_progress` turns those three numbers into one line
for a log, and `throttled` keeps a fast loop from writing a line per batch.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

Progress = Callable[[int, int, float], None]


def format_duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'; '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_progress(done: int, total: int, elapsed: float, unit: str = "docs",
                    work: Sequence[float] | None = None) -> str:
    """e.g. '320/5089 docs (6%), 4.1 docs/s, 19m24s left'.

    `work` (cumulative cost of the first i items, len total + 1) makes the time left the
    elapsed time scaled by the work still to do, for loops whose items differ in cost (documents
    taken shortest first would otherwise promise the long ones at the short ones' rate)."""
    if total < 0 or done < 0:
        raise ValueError(f"done and total must be >= 0, got {done}/{total}")
    share = f" ({100 * done / total:.0f}%)" if total else ""
    if done == 0 or elapsed <= 0:
        return f"{done}/{total} {unit}{share}, rate ?, time left ?"
    rate = done / elapsed
    left = (total - done) / rate
    if work is not None and work[done] > 0:
        left = elapsed * (work[total] - work[done]) / work[done]
    return f"{done}/{total} {unit}{share}, {rate:.3g} {unit}/s, {format_duration(left)} left"


def throttled(callback: Progress, every_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
              ) -> Progress:
    """`callback` at most once per `every_seconds`, but always on the first and the last call."""
    last = [-math.inf]

    def wrapped(done: int, total: int, elapsed: float) -> None:
        now = clock()
        if done >= total or now - last[0] >= every_seconds:
            last[0] = now
            callback(done, total, elapsed)

    return wrapped

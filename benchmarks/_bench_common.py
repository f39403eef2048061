"""Shared by the scorer benchmarks: real documents every machine has (CPython
stdlib docstrings) and interleaved best-of timing."""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from typing import Any, Callable

_MODULES = ("json", "argparse", "collections", "functools", "itertools", "pathlib", "re", "subprocess",
            "textwrap", "threading", "typing", "unittest", "urllib.parse", "zipfile", "tarfile", "shutil",
            "logging", "email.message", "csv", "decimal", "fractions", "statistics", "heapq", "bisect",
            "os", "inspect", "dataclasses", "enum", "datetime", "calendar", "random", "asyncio.tasks",
            "http.client", "xml.dom.minidom", "configparser", "difflib", "pprint", "sqlite3", "tempfile")


def stdlib_docstrings(n: int, min_chars: int = 150) -> list[str]:
    """The first `n` docstrings (modules, classes, functions) of at least `min_chars`
    characters from a fixed list of stdlib modules, in a fixed order."""
    docs: list[str] = []
    seen: set[str] = set()
    for name in _MODULES:
        module = importlib.import_module(name)
        objects = [module] + [obj for _, obj in sorted(vars(module).items()) if inspect.isclass(obj) or inspect.isfunction(obj)]
        for obj in objects:
            doc = inspect.getdoc(obj) or ""
            if len(doc) >= min_chars and doc not in seen:
                seen.add(doc)
                docs.append(doc)
                if len(docs) == n:
                    return docs
    return docs


def interleaved_best(repeats: int, n_items: int, chunk: int,
                     runs: dict[str, Callable[[list[int]], Any]],
                     progress: bool = False) -> dict[str, tuple[list[Any], float]]:
    """Time each run on the same chunks of item indices, interleaved chunk by chunk
    (A B C on chunk 1, A B C on chunk 2, ...), `repeats` times over.

    Each run's time is the sum over chunks of its fastest pass on that chunk: load
    from other processes on a shared box only ever adds time, and it drifts over
    minutes, so comparing runs on the same chunk seconds apart keeps the ratio fair.
    Returns {name: (per-chunk results of the last pass, seconds)}."""
    chunks = [list(range(i, min(i + chunk, n_items))) for i in range(0, n_items, chunk)]
    best = {name: [float("inf")] * len(chunks) for name in runs}
    results: dict[str, list[Any]] = {name: [None] * len(chunks) for name in runs}
    for _ in range(repeats):
        for c, indices in enumerate(chunks):
            for name, fn in runs.items():
                start = time.perf_counter()
                results[name][c] = fn(indices)
                best[name][c] = min(best[name][c], time.perf_counter() - start)
                if progress:
                    print(f"  chunk {c + 1}/{len(chunks)} {name}: {time.perf_counter() - start:.1f} s",
                          file=sys.stderr, flush=True)
    return {name: (results[name], sum(best[name])) for name in runs}


def best_of(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, tuple[Any, float]]:
    """Run each callable `repeats` times, interleaved (A B C A B C ...), and keep each
    one's last result and fastest time: other processes on a shared box only add time."""
    results: dict[str, Any] = {}
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (results[name], best[name]) for name in runs}

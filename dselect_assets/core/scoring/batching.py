"""Batching and padding shared by every model scorer (judge, perplexity LM, embedder).

A scorer turns each document into a list of token ids and hands them here with a
`forward(ids, mask)` that returns one row of results per sequence. This module:

  - drops empty sequences (their result rows stay NaN),
  - computes each distinct sequence once (exact duplicates share the forward pass),
  - batches sequences of similar length, longest first, so padding is small and a
    memory problem shows on the first batch,
  - pads right (encoders, perplexity) or left (decoder judges: the next-token slot
    is the last column of every row) and builds the attention mask,
  - writes every result back at its sequence's position in the input,
  - reports (done, total, elapsed seconds) after each batch to an optional
    `progress` callback (core/progress.py formats it).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np

from dselect_assets.core.progress import Progress

Side = Literal["left", "right"]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, longest first (ties keep input order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: Side = "right") -> tuple[Any, Any]:
    """(ids, mask) LongTensors [len(seqs), longest]; mask is 1 on real tokens."""
    import torch

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not len(seq):
            continue
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, cols] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def padded_batches(
    seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int, side: Side = "right"
) -> Iterator[tuple[np.ndarray, Any, Any]]:
    """(indices into seqs, ids, mask) per length-sorted batch of the non-empty sequences."""
    keep = np.array([i for i, s in enumerate(seqs) if len(s)], dtype=np.int64)
    for batch in length_sorted_batches([len(seqs[i]) for i in keep], batch_size):
        rows = keep[batch]
        ids, mask = pad([seqs[i] for i in rows], pad_id, side)
        yield rows, ids, mask


def map_padded(
    seqs: Sequence[Sequence[int]],
    forward: Callable[[Any, Any], Any],
    *,
    batch_size: int,
    pad_id: int,
    side: Side = "right",
    width: int | None = None,
    dtype: Any = np.float64,
    dedupe: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    """Results of `forward(ids, mask)` for every sequence, in input order.

    forward returns an array (or tensor) with one row per batch row: [b] or [b, width].
    Empty sequences get NaN rows (zeros for a non-float dtype). With `dedupe`, identical
    sequences are computed once and the result copied (exact duplicates are common in
    web crawls and cost a whole forward pass each). `progress(done, total, elapsed)` counts
    input sequences; empty ones and duplicates count as done from the start."""
    import torch

    shape: tuple[int, ...] = (len(seqs),) if width is None else (len(seqs), int(width))
    fill = np.nan if np.issubdtype(np.dtype(dtype), np.floating) else 0
    out = np.full(shape, fill, dtype=dtype)
    if not len(seqs):
        return out
    if dedupe:
        first: dict[tuple[int, ...], int] = {}
        source = np.empty(len(seqs), dtype=np.int64)
        for i, seq in enumerate(seqs):
            source[i] = first.setdefault(tuple(seq), i)
        unique = np.flatnonzero(source == np.arange(len(seqs)))
    else:
        source = np.arange(len(seqs))
        unique = source
    work = [seqs[i] for i in unique]
    done, started = len(seqs) - sum(1 for s in work if len(s)), time.perf_counter()
    with torch.inference_mode():
        for rows, ids, mask in padded_batches(work, batch_size, pad_id, side):
            result = forward(ids, mask)
            if isinstance(result, torch.Tensor):
                if result.dtype in (torch.bfloat16, torch.float16):
                    result = result.float()
                result = result.detach().cpu().numpy()
            out[unique[rows]] = np.asarray(result).reshape((len(rows),) + shape[1:])
            done += len(rows)
            if progress is not None:
                progress(done, len(seqs), time.perf_counter() - started)
    if dedupe:
        out[:] = out[source]
    return out

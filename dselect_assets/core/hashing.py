"""Stable identities: document content hashes and producer ids.

A document is identified by the hash of its *normalized* text, so the same text
arriving in two shards (or twice in one) is one document. A producer id names
everything that changes a per-document result (model identity, prompt, code
version), so a result row keyed by (content_hash, producer_id) can be reused
exactly when nothing that matters has changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC-normalize, collapse whitespace runs to one space, strip the ends."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def content_hash(text: str) -> str:
    """Hex sha256 of the normalized text (the document's identity)."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sorted_hashes(hashes: pa.Array) -> pa.Array:
    """`hashes` in ascending order; as given when already sorted (the eligible set comes sorted
    from the catalogue: checking costs a comparison per hash, a sort a copy of them all)."""
    if len(hashes) > 1 and not pc.all(pc.less_equal(hashes[:-1], hashes[1:])).as_py():
        return hashes.take(pc.sort_indices(hashes))
    return hashes


def hash_set_digest(hex_hashes) -> str:
    """sha256 naming a set of content hashes (given in any order), computed over the sorted Arrow
    string buffers rather than a Python object per hash."""
    hashes = hex_hashes if isinstance(hex_hashes, (pa.Array, pa.ChunkedArray)) else pa.array(hex_hashes, pa.string())
    hashes = hashes.cast(pa.string())
    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    if hashes.null_count:
        raise ValueError("a set of content hashes holds a null")
    hashes = sorted_hashes(hashes)
    if len(hashes) == 0:
        return hashlib.sha256(b"").hexdigest()
    offsets = np.frombuffer(hashes.buffers()[1], dtype=np.int32)[hashes.offset: hashes.offset + len(hashes) + 1]
    digest = hashlib.sha256((offsets - offsets[0]).astype("<i8").tobytes())  # where each hash ends
    digest.update(memoryview(hashes.buffers()[2])[offsets[0]: offsets[-1]])
    return digest.hexdigest()


def input_version(hex_hashes) -> str:
    """`input:<16 hex>` naming the set of documents a corpus-wide result was computed over."""
    return f"input:{hash_set_digest(hex_hashes)[:16]}"


def producer_id(name: str, **parts: object) -> str:
    """`name:<16 hex>` where the hex is a hash of every part that changes a result.

    Parts are JSON-serialized with sorted keys, so the id is stable across runs
    and machines, and changes whenever any part (model hash, prompt text, code
    version, hyperparameter) changes.
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return f"{name}:{hashlib.sha256(blob).hexdigest()[:16]}"

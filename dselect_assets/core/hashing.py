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


def producer_id(name: str, **parts: object) -> str:
    """`name:<16 hex>` where the hex is a hash of every part that changes a result.

    Parts are JSON-serialized with sorted keys, so the id is stable across runs
    and machines, and changes whenever any part (model hash, prompt text, code
    version, hyperparameter) changes.
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return f"{name}:{hashlib.sha256(blob).hexdigest()[:16]}"

"""Which documents file is a shard's current one, readable without the catalogue.

`documents/<shard>/CURRENT` names the file; the documents asset rewrites it (atomically) once the
shard's rows are committed, so a scoring worker finds the texts of its shard from the file system.
"""

from __future__ import annotations

import os
from pathlib import Path

CURRENT = "CURRENT"


def pointer(documents_dir: Path) -> Path:
    return Path(documents_dir) / CURRENT


def point_at(documents_file: Path) -> None:
    """Name `documents_file` as the current documents file of the shard whose directory holds it."""
    path = pointer(Path(documents_file).parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(Path(documents_file).name, encoding="utf-8")
    os.replace(tmp, path)


def current(documents_dir: Path) -> Path | None:
    """The shard's current documents file, or None when the shard was never ingested (or retired)."""
    path = pointer(documents_dir)
    return path.parent / path.read_text(encoding="utf-8").strip() if path.is_file() else None

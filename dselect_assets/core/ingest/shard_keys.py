"""A `shards` partition key is the plain name of one file in the corpus directory, nothing else.

Partition keys are joined to the corpus directory (to read the shard) and to dselect's home
(documents/<key>/, embeddings/.../<key>/, sketches/.../<key>.race, reports/<kind>/<key>.png).
The sensor only ever adds names it listed in the corpus directory, but anyone with the UI or
the GraphQL API can add a dynamic partition by hand; a key such as `../x.jsonl` or
`/etc/passwd` would then read or write outside those directories. Every asset that joins a
shard key to a path calls `validate_shard_key` first, before it touches any file or the store.
"""

from __future__ import annotations

import unicodedata

MAX_SHARD_KEY_BYTES = 255  # NAME_MAX on Linux filesystems


class InvalidShardKey(ValueError):
    """A shard partition key that is not a plain file name inside the corpus directory."""


def _refuse(key: object, why: str) -> InvalidShardKey:
    return InvalidShardKey(
        f"shard partition key {key!r} is refused: {why}. A shard key must be the plain name of a "
        "file directly inside the corpus directory (for example 'shard-000.jsonl'); nothing was "
        "read or written"
    )


def validate_shard_key(key: object) -> str:
    """Return `key` unchanged if it is a plain, visible file name; raise InvalidShardKey otherwise."""
    if not isinstance(key, str):
        raise _refuse(key, f"it is of type {type(key).__name__}, not a string")
    if key == "":
        raise _refuse(key, "it is empty")
    if "\x00" in key:
        raise _refuse(key, "it contains a NUL character")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise _refuse(key, "it contains a control character")
    if "/" in key or "\\" in key:
        raise _refuse(key, "it contains a path separator")
    if key in (".", ".."):
        raise _refuse(key, "it names a directory, not a file")
    if key.startswith("."):
        raise _refuse(key, "it names a hidden file (leading '.'), which the corpus sensor never picks up")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refuse(key, "it is not valid Unicode (lone surrogate)") from None
    if size > MAX_SHARD_KEY_BYTES:
        raise _refuse(key, f"it is {size} bytes long, more than a file name may be ({MAX_SHARD_KEY_BYTES})")
    return key

"""Read what ingestion stored for a shard, and the embeddings stored for a set of documents."""

from collections import defaultdict

import numpy as np
import polars as pl

from dselect_assets.resources import DuckDBStore


class MissingUpstream(RuntimeError):
    pass


class CorruptFile(MissingUpstream):
    """A file the store points at cannot be read; the message says how to rebuild it."""


def read_documents_file(path: str, columns: list[str], shard: str | None = None) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # polars raises several types for truncated or garbled Parquet
        which = f"documents[{shard}]" if shard else "documents for its shard"
        raise CorruptFile(
            f"{path}: unreadable documents file ({type(exc).__name__}: {exc}); "
            f"re-materialize {which} to rebuild it from the shard file"
        ) from exc


def load_vectors(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except Exception as exc:  # truncated header, bad magic, missing file
        raise CorruptFile(
            f"{path}: unreadable embedding file ({type(exc).__name__}: {exc}); delete it and "
            "re-materialize embeddings for its shard: the documents it held are then embedded again"
        ) from exc


def shard_texts(store: DuckDBStore, shard: str) -> pl.DataFrame:
    """Distinct (content_hash, text) of a shard's accepted documents, in file order."""
    rows = store.query("SELECT documents_file FROM shards WHERE shard = ?", [shard])
    if not rows:
        raise MissingUpstream(f"shard {shard!r} has not been ingested; materialize documents[{shard}] first")
    return (
        read_documents_file(rows[0][0], ["row_number", "content_hash", "text"], shard)
        .unique(subset="content_hash", keep="first", maintain_order=True)
        .select("content_hash", "text")
    )


def texts_for(store: DuckDBStore, content_hashes: list[str]) -> pl.DataFrame:
    """Text of each given content hash (first occurrence), in the order given."""
    wanted = pl.DataFrame({"content_hash": content_hashes}, schema={"content_hash": pl.String})
    with store.connect(read_only=True) as con:
        con.register("wanted", wanted.to_arrow())
        located = con.sql(
            "SELECT c.content_hash, c.shard, c.row_number, s.documents_file FROM contents c"
            " JOIN wanted w USING (content_hash) JOIN shards s USING (shard)"
        ).to_arrow_table()
        located = pl.from_arrow(located)
    parts = []
    for documents_file, group in located.group_by("documents_file"):
        texts = read_documents_file(documents_file[0], ["row_number", "text"])
        parts.append(group.join(texts, on="row_number").select("content_hash", "text"))
    found = pl.concat(parts) if parts else pl.DataFrame(schema={"content_hash": pl.String, "text": pl.String})
    return wanted.join(found, on="content_hash", how="left", maintain_order="left")


def load_embeddings(store: DuckDBStore, producer_id: str, content_hashes: list[str]) -> np.ndarray:
    """Embeddings of the given documents, row i for content_hashes[i]; every one must exist."""
    wanted = pl.DataFrame({"content_hash": content_hashes, "position": np.arange(len(content_hashes))})
    with store.connect(read_only=True) as con:
        con.register("wanted", wanted.to_arrow())
        located = con.execute(
            "SELECT w.position, e.file, e.row_in_file FROM wanted w"
            " LEFT JOIN embedding_index e ON e.content_hash = w.content_hash AND e.producer_id = ?",
            [producer_id],
        ).fetchall()
    missing = [content_hashes[pos] for pos, file, _ in located if file is None]
    if missing:
        raise MissingUpstream(
            f"{len(missing)} documents have no embedding from {producer_id} (e.g. {missing[0]}); "
            "materialize the embeddings asset for every shard first"
        )
    by_file: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for pos, file, row in located:
        by_file[file].append((pos, row))
    out: np.ndarray | None = None
    for file, pairs in by_file.items():
        block = load_vectors(file)
        if out is None:
            out = np.empty((len(content_hashes), block.shape[1]), dtype=np.float32)
        positions, rows = zip(*pairs)
        out[list(positions)] = block[list(rows)]
    return out if out is not None else np.empty((0, 0), dtype=np.float32)

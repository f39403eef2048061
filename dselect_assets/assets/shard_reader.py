"""Read what ingestion stored for a shard, and the embeddings stored for a set of documents.

A scoring worker finds the texts of its shard from the file system (store/documents.py) and
never opens the catalogue.
"""

import duckdb
import numpy as np
import polars as pl

from dselect_assets.store import attributes, documents
from dselect_assets.store import selections as selection_store
from dselect_assets.store.errors import CorruptFile, MissingUpstream
from dselect_assets.resources import DataPaths, DuckDBStore


def read_documents_file(path: str, columns: list[str], shard: str | None = None) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=columns)
    except Exception as exc:  # polars raises several types for truncated or garbled Parquet
        which = f"documents[{shard}]" if shard else "documents for its shard"
        raise CorruptFile(
            f"{path}: unreadable documents file ({type(exc).__name__}: {exc}); "
            f"re-materialize {which} to rebuild it from the shard file"
        ) from exc


def shard_texts(paths: DataPaths, shard: str) -> pl.DataFrame:
    """Distinct (content_hash, text) of a shard's accepted documents, in file order."""
    documents_file = documents.current(paths.root / "documents" / shard)
    if documents_file is None:
        raise MissingUpstream(f"shard {shard!r} has not been ingested; materialize documents[{shard}] first")
    return (
        read_documents_file(str(documents_file), ["row_number", "content_hash", "text"], shard)
        .unique(subset="content_hash", keep="first", maintain_order=True)
        .select("content_hash", "text")
    )


def texts_for(store: DuckDBStore, content_hashes) -> pl.DataFrame:
    """Text of each given content hash (first occurrence), in the order given."""
    wanted = pl.DataFrame({"content_hash": pl.Series(content_hashes, dtype=pl.String)})
    with store.connect(read_only=True) as con:
        located = pl.from_arrow(selection_store.locate_texts(con, wanted["content_hash"].to_arrow()))
    parts = []
    for documents_file, group in located.group_by("documents_file"):
        texts = read_documents_file(documents_file[0], ["row_number", "text"])
        parts.append(group.join(texts, on="row_number").select("content_hash", "text"))
    found = pl.concat(parts) if parts else pl.DataFrame(schema={"content_hash": pl.String, "text": pl.String})
    return wanted.join(found, on="content_hash", how="left", maintain_order="left")


def load_embeddings(store: DuckDBStore, producer_id: str, content_hashes, shard: str | None = None) -> np.ndarray:
    """Embeddings of the given documents (of `shard`, when given: found faster), row i for
    content_hashes[i]; every one must exist."""
    with duckdb.connect() as con:
        return attributes.read_vectors(con, store.attributes, producer_id, content_hashes, shard)


def embedding_rows(store: DuckDBStore, producer_id: str, content_hashes) -> attributes.VectorRows:
    """A reader of the given documents' embeddings (row i for content_hashes[i]), read when asked for."""
    with duckdb.connect() as con:
        return attributes.VectorRows(con, store.attributes, producer_id, content_hashes)

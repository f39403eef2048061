-- No index on content hashes. DuckDB answers every join on content_hash with a hash join and never
-- reads these indexes, while each insert and commit of a shard updates them at random places of
-- random 64-hex keys. Measured on a 10M-document catalogue, a 100k-document shard cost 3.0 s to
-- insert into `contents` and 1.7-3.1 s to commit (0.03 s and 0.04 s without the indexes): shard by
-- shard, ingest grew with the square of the corpus. `contents` keeps one row per text by
-- construction (store/corpus.py update_owners deletes each touched text's row and inserts its one
-- owner); a duplicate would fail density's blocking check `sketch_counts_every_document`.
DROP INDEX IF EXISTS documents_by_hash;

CREATE TABLE contents_unindexed (
    content_hash    VARCHAR NOT NULL,
    shard           VARCHAR NOT NULL,      -- owner: the shard whose sketch counts this text
    row_number      BIGINT NOT NULL,       -- the owner's first row holding it
    doc_id          VARCHAR NOT NULL,
    n_chars         BIGINT NOT NULL,
    occurrences     BIGINT NOT NULL        -- rows of `documents` with this text, all shards
);
INSERT INTO contents_unindexed SELECT content_hash, shard, row_number, doc_id, n_chars, occurrences FROM contents;
DROP TABLE contents;
ALTER TABLE contents_unindexed RENAME TO contents;

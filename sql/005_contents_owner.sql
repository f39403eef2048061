-- First occurrence is a fact recorded at ingest, not a view over `documents`.
--
-- `contents` lists each distinct text once, with the shard that owns it (the
-- one whose density sketch counts it) and how often it occurs. The owner of a
-- text is the shard that brought it first in arrival order; a re-ingested
-- shard keeps the texts it still holds, and a text its owner no longer holds
-- (edited or deleted file) moves to the earliest-arrived shard holding it, then
-- by name, or leaves `contents` when no shard has it. The `documents` asset
-- maintains this table in the transaction that replaces a shard's rows, and
-- `retire_shard` in the one that removes them (dselect_assets/assets/corpus.py).
--
-- An existing store keeps today's rule for the rows it has: the lexically
-- smallest (shard, row_number) owns a text, and shards "arrived" in name order,
-- so the filled table is exactly what the old view returned.

DROP VIEW IF EXISTS contents;

CREATE TABLE contents (
    content_hash    VARCHAR PRIMARY KEY,
    shard           VARCHAR NOT NULL,      -- owner: the shard whose sketch counts this text
    row_number      BIGINT NOT NULL,       -- the owner's first row holding it
    doc_id          VARCHAR NOT NULL,
    n_chars         BIGINT NOT NULL,
    occurrences     BIGINT NOT NULL        -- rows of `documents` with this text, all shards
);

INSERT INTO contents
SELECT
    content_hash,
    arg_min(shard, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')),
    arg_min(row_number, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')),
    arg_min(doc_id, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')),
    any_value(n_chars),
    count(*)
FROM documents
GROUP BY content_hash;

-- The order shards were first ingested in; decides which shard a text moves to.
CREATE TABLE shard_arrivals (
    shard           VARCHAR PRIMARY KEY,
    arrival         BIGINT NOT NULL,       -- 1, 2, ...: order of first ingest (re-ingest keeps it)
    first_ingested_at TIMESTAMP NOT NULL
);

INSERT INTO shard_arrivals
SELECT shard, row_number() OVER (ORDER BY shard), first_ingested_at
FROM (
    SELECT shard, min(ingested_at) AS first_ingested_at FROM (
        SELECT shard, ingested_at FROM shards
        UNION ALL
        SELECT DISTINCT shard, now()::TIMESTAMP FROM documents
    ) GROUP BY shard
);

-- Shards whose file left the corpus directory: their rows were removed, and why.
CREATE TABLE retired_shards (
    shard           VARCHAR NOT NULL,
    file_sha256     VARCHAR NOT NULL,      -- the bytes that had been ingested
    n_documents     BIGINT NOT NULL,       -- documents rows removed
    reason          VARCHAR NOT NULL,
    retired_at      TIMESTAMP NOT NULL
);

-- Which owned set each shard's density sketch counts, so `density` rebuilds only
-- the sketches whose shard's owned texts changed since they were written.
CREATE TABLE density_sketch_sets (
    producer_id     VARCHAR NOT NULL,      -- the density (sketch) producer
    shard           VARCHAR NOT NULL,
    owned_version   VARCHAR NOT NULL,      -- sha256 of the sorted content hashes the sketch counts
    n_docs          BIGINT NOT NULL,
    sketch_file     VARCHAR NOT NULL,
    sketch_sha256   VARCHAR NOT NULL,
    run_id          VARCHAR,
    built_at        TIMESTAMP NOT NULL,
    PRIMARY KEY (producer_id, shard)
);

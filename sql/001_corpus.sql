-- Corpus: shard files, the documents read from them, and what was rejected.
-- A document's identity is content_hash (sha256 of its normalized text); the
-- source id is kept beside it. Exact duplicates are separate rows in
-- `documents` that share a content_hash; `contents` (a view) lists each
-- distinct text once with its first occurrence and how often it occurs.

CREATE TABLE IF NOT EXISTS shards (
    shard           VARCHAR PRIMARY KEY,   -- partition key: the file name
    path            VARCHAR NOT NULL,
    format          VARCHAR NOT NULL,      -- jsonl | parquet | txt
    byte_size       BIGINT NOT NULL,
    file_sha256     VARCHAR NOT NULL,
    n_rows          BIGINT NOT NULL,       -- rows/lines/paragraphs read
    n_documents     BIGINT NOT NULL,       -- rows accepted
    n_rejected      BIGINT NOT NULL,       -- rows quarantined
    n_duplicates    BIGINT NOT NULL,       -- accepted rows whose text was already in the corpus
    documents_file  VARCHAR NOT NULL,      -- Parquet with the accepted rows' text
    documents_sha256 VARCHAR NOT NULL,
    ingested_at     TIMESTAMP NOT NULL,
    run_id          VARCHAR
);

CREATE TABLE IF NOT EXISTS documents (
    shard           VARCHAR NOT NULL,
    row_number      BIGINT NOT NULL,       -- 1-based line (JSONL/txt) or row (Parquet) in the shard file
    doc_id          VARCHAR NOT NULL,
    content_hash    VARCHAR NOT NULL,
    n_chars         BIGINT NOT NULL,
    n_bytes         BIGINT NOT NULL,
    PRIMARY KEY (shard, row_number)
);
CREATE INDEX IF NOT EXISTS documents_by_hash ON documents (content_hash);

CREATE TABLE IF NOT EXISTS quarantine (
    shard           VARCHAR NOT NULL,
    row_number      BIGINT NOT NULL,       -- 0 when the whole file was unreadable
    doc_id          VARCHAR,
    reason          VARCHAR NOT NULL,
    excerpt         VARCHAR,
    recorded_at     TIMESTAMP NOT NULL,
    run_id          VARCHAR,
    PRIMARY KEY (shard, row_number)
);

CREATE OR REPLACE VIEW contents AS
SELECT
    content_hash,
    arg_min(shard, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS shard,
    arg_min(row_number, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS row_number,
    arg_min(doc_id, shard || lpad(CAST(row_number AS VARCHAR), 20, '0')) AS doc_id,
    any_value(n_chars) AS n_chars,
    count(*) AS occurrences
FROM documents
GROUP BY content_hash;

-- Lineage: every asset materialization records which config produced what.
CREATE TABLE IF NOT EXISTS runs (
    run_id          VARCHAR NOT NULL,
    asset           VARCHAR NOT NULL,
    partition_key   VARCHAR NOT NULL DEFAULT '',
    config_json     VARCHAR,
    producer_id     VARCHAR,
    code_version    VARCHAR,
    started_at      TIMESTAMP,
    finished_at     TIMESTAMP,
    outputs_json    VARCHAR,
    PRIMARY KEY (run_id, asset, partition_key)
);

-- Files holding large arrays (embeddings, sketches, exports, checkpoints).
CREATE TABLE IF NOT EXISTS artifacts (
    path            VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,
    producer_id     VARCHAR,
    partition_key   VARCHAR,
    sha256          VARCHAR NOT NULL,
    n_rows          BIGINT,
    run_id          VARCHAR,
    created_at      TIMESTAMP NOT NULL
);

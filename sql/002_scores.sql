-- Per-document results keyed by (content_hash, producer_id). A producer id
-- names everything that changes a result (model file hash, prompt, code
-- version), so a re-run only computes the pairs that are missing.

CREATE TABLE IF NOT EXISTS producers (
    producer_id     VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,      -- embedding | ask_llm | perplexity
    identity_json   VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS scores (
    content_hash    VARCHAR NOT NULL,
    producer_id     VARCHAR NOT NULL,
    value           DOUBLE,                -- P(yes) for ask_llm, mean NLL for perplexity; NULL when unscorable
    value_norm      DOUBLE,                -- P(yes)/(P(yes)+P(no)) for ask_llm
    problem         VARCHAR,               -- why value is NULL
    run_id          VARCHAR,
    PRIMARY KEY (content_hash, producer_id)
);

-- Embedding vectors live in .npy chunk files; this says where each one is.
CREATE TABLE IF NOT EXISTS embedding_index (
    content_hash    VARCHAR NOT NULL,
    producer_id     VARCHAR NOT NULL,
    file            VARCHAR NOT NULL,
    row_in_file     INTEGER NOT NULL,
    PRIMARY KEY (content_hash, producer_id)
);

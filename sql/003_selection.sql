-- Corpus-wide results: density sketches, clusters, held-out evaluation sets, selections.

CREATE TABLE IF NOT EXISTS cluster_assignments (
    content_hash    VARCHAR NOT NULL,
    clustering_id   VARCHAR NOT NULL,
    cluster         INTEGER NOT NULL,
    distance        DOUBLE NOT NULL,       -- L2 distance to the centroid
    PRIMARY KEY (content_hash, clustering_id)
);

-- Documents that are never selectable: the in-distribution validation split of
-- the corpus and the external high-quality set.
CREATE TABLE IF NOT EXISTS eval_documents (
    eval_set        VARCHAR NOT NULL,      -- in_distribution | high_quality
    content_hash    VARCHAR NOT NULL,
    doc_id          VARCHAR,
    PRIMARY KEY (eval_set, content_hash)
);

CREATE TABLE IF NOT EXISTS selections (
    selection_id    VARCHAR PRIMARY KEY,   -- hash of sampler, rate, seed, producer ids, input set
    selection_key   VARCHAR NOT NULL,      -- partition key: sampler@rate
    sampler         VARCHAR NOT NULL,
    rate            DOUBLE NOT NULL,
    seed            BIGINT NOT NULL,
    config_json     VARCHAR NOT NULL,
    producer_ids_json VARCHAR NOT NULL,
    input_version   VARCHAR NOT NULL,      -- hash of the sorted eligible content hashes
    n_considered    BIGINT NOT NULL,
    n_kept          BIGINT NOT NULL,
    export_path     VARCHAR NOT NULL,
    export_sha256   VARCHAR NOT NULL,
    run_id          VARCHAR,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS selection_members (
    selection_id    VARCHAR NOT NULL,
    content_hash    VARCHAR NOT NULL,
    PRIMARY KEY (selection_id, content_hash)
);

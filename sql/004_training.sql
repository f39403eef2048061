-- Tiny LMs trained on each selection and their held-out metrics.

CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_id   VARCHAR PRIMARY KEY,   -- hash of selection id, training config, tokenizer, seed
    selection_id    VARCHAR NOT NULL,
    selection_key   VARCHAR NOT NULL,
    config_json     VARCHAR NOT NULL,
    path            VARCHAR NOT NULL,
    sha256          VARCHAR NOT NULL,
    steps           BIGINT NOT NULL,
    tokens_seen     BIGINT NOT NULL,
    first_loss      DOUBLE,
    final_loss      DOUBLE,
    seconds         DOUBLE,
    run_id          VARCHAR,
    created_at      TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS eval_metrics (
    checkpoint_id   VARCHAR NOT NULL,
    eval_set        VARCHAR NOT NULL,
    perplexity      DOUBLE NOT NULL,
    mean_nll        DOUBLE NOT NULL,
    n_tokens        BIGINT NOT NULL,
    unigram_perplexity DOUBLE,
    run_id          VARCHAR,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (checkpoint_id, eval_set)
);

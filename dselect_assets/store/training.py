"""What training, evaluation and the comparison report read from the catalogue and record:
the selection and tokenizer a checkpoint trains on, checkpoints, their eval metrics."""

from __future__ import annotations

import duckdb
import numpy as np


def current_selection(con: duckdb.DuckDBPyConnection, key: str) -> tuple[str, str] | None:
    """(selection id, export path) recorded last for a selection key, or None."""
    rows = con.execute(
        "SELECT selection_id, export_path FROM selections WHERE selection_key = ? ORDER BY created_at DESC LIMIT 1",
        [key],
    ).fetchall()
    return rows[0] if rows else None


def current_tokenizer(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """(path, sha256) of the tokenizer registered last, or None."""
    rows = con.execute(
        "SELECT path, sha256 FROM artifacts WHERE kind = 'tokenizer' ORDER BY created_at DESC LIMIT 1").fetchall()
    return rows[0] if rows else None


def insert_checkpoint(con: duckdb.DuckDBPyConnection, row: dict) -> None:
    """Upsert one checkpoint (`row` has a value for every column but created_at)."""
    columns = ("checkpoint_id", "selection_id", "selection_key", "config_json", "path", "sha256", "steps",
               "tokens_seen", "first_loss", "final_loss", "seconds", "run_id", "seed", "tokenizer_path",
               "tokenizer_sha256", "epochs", "documents")
    con.execute(
        f"INSERT OR REPLACE INTO checkpoints ({', '.join(columns)}, created_at)"
        f" VALUES ({', '.join('?' * len(columns))}, now())",
        [row[c] for c in columns],
    )


def checkpoint_lineage(con: duckdb.DuckDBPyConnection, key: str, seed: int) -> tuple[str, str, str, str] | None:
    """(checkpoint id, model directory, tokenizer path, export path) of the newest checkpoint of
    (selection key, seed), or None."""
    rows = con.execute(
        "SELECT c.checkpoint_id, c.path, c.tokenizer_path, s.export_path FROM checkpoints c"
        " JOIN selections s USING (selection_id) WHERE c.selection_key = ? AND c.seed = ?"
        " ORDER BY c.created_at DESC LIMIT 1",
        [key, seed],
    ).fetchall()
    return rows[0] if rows else None


def insert_eval_metrics(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """Upsert (checkpoint id, eval set, perplexity, mean NLL, tokens, unigram perplexity, run id) rows."""
    con.executemany("INSERT OR REPLACE INTO eval_metrics VALUES (?, ?, ?, ?, ?, ?, ?, now())", rows)


def newest_evaluated_checkpoints(con: duckdb.DuckDBPyConnection, config_json: str, tokenizer_sha256: str
                                 ) -> list[tuple]:
    """One row per eval set of the newest checkpoint of each (selection key, seed): (selection key,
    seed, checkpoint id, eval set, perplexity, epochs, documents, is_current, unigram perplexity),
    is_current when it trained on the current selection of its key with this config and tokenizer."""
    return con.execute(
        "WITH current_selection AS (SELECT selection_key, arg_max(selection_id, created_at) AS selection_id"
        "  FROM selections GROUP BY selection_key),"
        " newest AS (SELECT selection_key, seed, arg_max(checkpoint_id, created_at) AS checkpoint_id"
        "  FROM checkpoints GROUP BY selection_key, seed)"
        " SELECT c.selection_key, c.seed, c.checkpoint_id, m.eval_set, m.perplexity, c.epochs, c.documents,"
        "  c.selection_id = cs.selection_id AND c.config_json = ? AND c.tokenizer_sha256 = ? AS is_current,"
        "  m.unigram_perplexity"
        " FROM newest n JOIN checkpoints c USING (checkpoint_id) JOIN eval_metrics m USING (checkpoint_id)"
        " LEFT JOIN current_selection cs ON cs.selection_key = c.selection_key ORDER BY 1, 2, 4",
        [config_json, tokenizer_sha256],
    ).fetchall()


def paired_scores(con: duckdb.DuckDBPyConnection, resource_a: str, resource_b: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of the producers two resources registered, over the texts both have a value for."""
    table = con.sql(
        "SELECT a.value AS a, p.value AS b FROM scores a JOIN scores p USING (content_hash)"
        " WHERE a.producer_id = (SELECT producer_id FROM resource_producers WHERE resource = ?)"
        "  AND p.producer_id = (SELECT producer_id FROM resource_producers WHERE resource = ?)"
        "  AND a.value IS NOT NULL AND p.value IS NOT NULL",
        params=[resource_a, resource_b],
    ).to_arrow_table()
    return table["a"].to_numpy(), table["b"].to_numpy()

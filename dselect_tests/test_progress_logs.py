"""Long steps write "done/total, rate, time left" to the Dagster run's log."""

import re

import dagster as dg
import numpy as np
import polars as pl

from dselect_assets.assets import common, scoring

TOTAL, CHUNK = 5, 2


class BatchScorer:
    """Scores one document per batch and reports progress in chunk counts, as the real scorers do."""

    def score(self, texts, progress):
        for done in range(1, len(texts) + 1):
            progress(done, len(texts), 0.0)
        return np.zeros(len(texts))


@dg.asset
def scored_in_chunks(context: dg.AssetExecutionContext) -> None:
    todo = pl.DataFrame({"text": [f"document {i}" for i in range(TOTAL)]})
    scoring.run_in_chunks(context, todo, CHUNK, lambda chunk, progress: BatchScorer().score(
        chunk["text"].to_list(), progress))


def test_time_left_weighs_documents_by_length_up_to_the_cut():
    texts = pl.Series(["ab", "abcd", "x" * 100])
    fixed = scoring.FIXED_CHARS_PER_DOCUMENT
    assert scoring.document_work(texts, None).tolist() == [0, 2 + fixed, 6 + 2 * fixed, 106 + 3 * fixed]
    # A cut of 5 tokens caps a document's cost at 5 x CHARS_PER_TOKEN characters.
    assert scoring.document_work(texts, 5)[-1] == 6 + 5 * scoring.CHARS_PER_TOKEN + 3 * fixed


def progress_counts(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, int]]:
    """(done, total) of each progress line in the run's log, in order."""
    lines = [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None]
    return [(int(m[1]), int(m[2])) for m in (re.match(r"(\d+)/(\d+) docs \(\d+%\), ", line) for line in lines) if m]


def test_chunked_scoring_logs_whole_shard_progress(instance, monkeypatch):
    monkeypatch.setattr(common, "PROGRESS_EVERY_SECONDS", 0.0)
    result = dg.materialize([scored_in_chunks], instance=instance)
    assert result.success
    # Counted over all the documents to score, per batch, each document once, first and last included.
    assert progress_counts(instance, result.run_id) == [(done, TOTAL) for done in range(TOTAL + 1)]


def test_default_throttle_keeps_the_first_and_last_lines(instance):
    result = dg.materialize([scored_in_chunks], instance=instance)
    assert progress_counts(instance, result.run_id)[0] == (0, TOTAL)
    assert progress_counts(instance, result.run_id)[-1] == (TOTAL, TOTAL)

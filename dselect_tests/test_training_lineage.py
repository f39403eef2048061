"""A checkpoint is evaluated with its own selection and tokenizer, and the report compares only
checkpoints of the current selections, training config and tokenizer."""

import json
import re

import dagster as dg
import pytest

from dselect_assets.assets import corpus, selection, training

pytestmark = pytest.mark.heavy
WORDS = ("the", "river", "flows", "north", "past", "old", "mills", "and", "green", "fields", "where",
         "farmers", "grow", "wheat", "barley", "in", "summer", "rain")
BUDGET = {"token_budget": 40 * 8 * 128, "batch_size": 8}


def key(selection_key, seed=0):
    return training.training_partition(selection_key, seed)


def test_eval_and_report_never_mix_runs(workspace, resources, instance):
    _, corpus_dir = workspace
    lines = []
    for i in range(240):
        words = [WORDS[(i * 7 + j * 5) % len(WORDS)] for j in range(40)]
        lines.append(json.dumps({"id": f"d{i}", "text": f"Note {i}: " + " ".join(words) + "."}))
    (corpus_dir / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    run = lambda assets, **kw: dg.materialize(assets, instance=instance, resources=resources, **kw)  # noqa: E731
    run([corpus.documents], partition_key="s.jsonl")
    run([selection.eval_sets], run_config={"ops": {"eval_sets": {"config": {"validation_fraction": 0.2}}}})
    run([training.lm_tokenizer_file], run_config={"ops": {"lm_tokenizer_file": {"config": {"vocab_size": 400}}}})
    run([selection.selections], partition_key=selection.FULL_DATA_PARTITION)
    train_cfg = {"ops": {"checkpoints": {"config": BUDGET}}}
    trained = run([training.checkpoints, training.eval_metrics], partition_key=key(selection.FULL_DATA_KEY),
                  run_config=train_cfg)
    # Training logs its progress in steps, up to the last one.
    logged = [e.user_message for e in instance.all_logs(trained.run_id) if e.dagster_event is None]
    assert any(re.match(r"(\d+)/\1 steps \(100%\), ", m) for m in logged)
    store = resources["store"]
    first = dict(store.query("SELECT eval_set, perplexity FROM eval_metrics"))

    # Later: a new tokenizer and a new selection for the same key.
    run([training.lm_tokenizer_file], run_config={"ops": {"lm_tokenizer_file": {"config": {"vocab_size": 300}}}})
    run([selection.selections], partition_key=selection.FULL_DATA_PARTITION,
        run_config={"ops": {"selections": {"config": {"seed": 1}}}})
    assert len(store.query("SELECT path FROM artifacts WHERE kind = 'tokenizer'")) == 2  # the old one kept

    # Re-evaluating the old checkpoint uses its own tokenizer and selection: the same numbers.
    run([training.eval_metrics], partition_key=key(selection.FULL_DATA_KEY))
    assert dict(store.query("SELECT eval_set, perplexity FROM eval_metrics")) == pytest.approx(first)

    # The report will not compare a checkpoint of an older selection or tokenizer...
    report_cfg = {"ops": {"comparison_report": {"config": BUDGET}}}
    stale = run([training.comparison_report], run_config=report_cfg, raise_on_error=False)
    assert not stale.success
    # ...and once the current selection is trained, only that checkpoint is compared.
    run([training.checkpoints, training.eval_metrics], partition_key=key(selection.FULL_DATA_KEY), run_config=train_cfg)
    (event,) = run([training.comparison_report], run_config=report_cfg).asset_materializations_for_node(
        "comparison_report")
    assert event.metadata["checkpoints_compared"].value == 1
    assert store.query("SELECT count(DISTINCT tokenizer_sha256) FROM checkpoints")[0][0] == 2

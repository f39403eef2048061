"""A selection reads the scores of the scorer configured for it, never "the newest producer",
and its export shows the Ask-LLM value it ranked by."""

import json

import dagster as dg
import polars as pl
import pytest

from dselect_assets.assets import corpus, scoring, selection
from dselect_assets.resources import AskLLMJudgeResource

pytestmark = pytest.mark.heavy
JUDGE_A = AskLLMJudgeResource(max_doc_tokens=32, batch_size=8)
JUDGE_B = AskLLMJudgeResource(max_doc_tokens=16, batch_size=8)


def test_switching_judges_back_and_forth_reads_the_configured_one(workspace, resources, instance):
    _, corpus_dir = workspace
    texts = ["The Nile is the longest river in Africa and flows north into the Mediterranean.",
             "CLICK HERE to win $$$ now!!! limited offer",
             "Photosynthesis converts light energy into chemical energy stored in glucose.",
             "lol ok c u l8r", "The French Revolution began in 1789 with the storming of the Bastille.",
             "Buy cheap watches online best price free shipping"] * 2
    lines = [json.dumps({"id": f"d{i}", "text": f"{t} ({i})"}) for i, t in enumerate(texts)]
    (corpus_dir / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    dg.materialize([corpus.documents], partition_key="s.jsonl", instance=instance, resources=resources)
    dg.materialize([selection.eval_sets], instance=instance, resources=resources,
                   run_config={"ops": {"eval_sets": {"config": {"validation_fraction": 0.25}}}})

    def score_with(judge):
        result = dg.materialize([scoring.ask_llm_scores], partition_key="s.jsonl", instance=instance,
                                resources={**resources, "judge": judge})
        return result.asset_materializations_for_node("ask_llm_scores")[0].metadata["producer_id"].value

    producer_a, producer_b = score_with(JUDGE_A), score_with(JUDGE_B)
    assert producer_a != producer_b
    assert score_with(JUDGE_A) == producer_a  # back to A: served from the cache, B was scored last

    def select_with(judge):
        result = dg.materialize([selection.selections], partition_key=selection.selection_partition("ask_llm_topk@0.40"), instance=instance,
                                resources={**resources, "judge": judge})
        meta = result.asset_materializations_for_node("selections")[0].metadata
        return meta["producers"].value["ask_llm"], meta["export"].value

    read_a, _ = select_with(JUDGE_A)
    assert read_a == producer_a
    assert select_with(JUDGE_B)[0] == producer_b
    # Batch size changes speed, not scores: the same producer.
    assert select_with(JUDGE_A.model_copy(update={"batch_size": 2}))[0] == producer_a

    for column in ("value", "value_norm"):  # whichever Ask-LLM value the selection ranks by
        config = {"ops": {"selections": {"config": {"ask_llm_value": column}}}}
        result = dg.materialize([selection.selections], partition_key=selection.selection_partition("ask_llm_topk@0.40"), instance=instance,
                                resources={**resources, "judge": JUDGE_A}, run_config=config)
        export = pl.read_parquet(result.asset_materializations_for_node("selections")[0].metadata["export"].value)
        ranked = dict(resources["store"].query(f"SELECT content_hash, {column} FROM scores WHERE producer_id = ?",
                                               [producer_a]))
        assert export["ask_llm"].to_list() == [ranked[h] for h in export["content_hash"]]

"""Selections over documents some scorer could not score: they are left out and counted, never a crash."""

import json

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from dselect_assets.assets import corpus, selection
from dselect_assets.assets.scoring import register_producer
from dselect_assets.core.selection.samplers import scorable_rows, target_size
from dselect_assets.store import attributes
from dselect_assets.store import selections as selection_store


def test_scorable_rows_keeps_rows_with_every_score_finite():
    quality = np.array([0.1, np.nan, 0.3, 0.4])
    density = np.array([1.0, 2.0, np.inf, 3.0])
    assert scorable_rows(4, quality=quality, density=density, perplexity=None).tolist() == [0, 3]
    assert scorable_rows(3).tolist() == [0, 1, 2]


@pytest.mark.parametrize("key", ["ask_llm_topk@0.20", "perplexity_filter@0.40"])
def test_unscorable_documents_are_left_out_and_counted(workspace, resources, instance, key):
    _, corpus_dir = workspace
    lines = [json.dumps({"id": f"d{i}", "text": f"document number {i} about topic {i % 7}"}) for i in range(120)]
    (corpus_dir / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    dg.materialize([corpus.documents], partition_key="s.jsonl", instance=instance, resources=resources)
    dg.materialize([selection.eval_sets], instance=instance, resources=resources)
    store = resources["store"]
    eligible = [h for (h,) in store.query(
        "SELECT content_hash FROM contents ANTI JOIN eval_documents USING (content_hash) ORDER BY 1")]
    unscorable = set(eligible[::10])  # e.g. texts too short for the LM: NaN scores
    kind = "ask_llm" if key.startswith("ask_llm") else "perplexity"
    register_producer(store, f"{kind}:test-scorer", kind, {"model": "scores written by this test"})
    values = np.array([np.nan if h in unscorable else (i % 13) / 13 for i, h in enumerate(eligible)])
    attributes.write_chunk(store.attributes, f"{kind}:test-scorer", "s.jsonl",
                           attributes.score_table(f"{kind}:test-scorer", eligible, values, values))

    producer_config = {f"{kind}_producer": f"{kind}:test-scorer"}
    result = dg.materialize([selection.selections], partition_key=selection.selection_partition(key),
                            instance=instance, resources=resources,
                            run_config={"ops": {"selections": {"config": producer_config}}})

    (event,) = result.asset_materializations_for_node("selections")
    meta = {k: v.value for k, v in event.metadata.items()}
    rate = float(key.split("@")[1])
    assert meta["unscorable_left_out"] == len(unscorable)
    assert meta["kept"] == target_size(len(eligible) - len(unscorable), rate)
    checks_passed = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks_passed["size_matches_rate"]
    with store.connect(read_only=True) as con:
        members = set(pq.read_table(selection_store.members_file(con, meta["selection_id"]))["content_hash"]
                      .to_pylist())
    assert members and not members & unscorable

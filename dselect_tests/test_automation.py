"""Declarative automation and the re-selection schedule: what runs when the corpus grows."""

import datetime

import dagster as dg

from dselect_assets.assets.selection import selection_partitions
from dselect_assets.definitions import defs

SHARD_ASSETS = ["documents", "embeddings", "ask_llm_scores", "perplexity_scores", "density_sketch"]


def report(instance, asset, partition=None):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def requested(result, asset):
    return result.get_requested_partitions(dg.AssetKey(asset)) if result.get_num_requested(dg.AssetKey(asset)) else set()


def test_new_shard_triggers_density_then_selections(instance):
    instance.add_dynamic_partitions("shards", ["a.jsonl", "b.jsonl"])
    start = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert start.total_requested == 0  # nothing ingested yet: nothing to do
    for shard in ("a.jsonl", "b.jsonl"):
        for asset in SHARD_ASSETS:
            report(instance, asset, shard)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)
    for asset in ("density", "clusters", "eval_sets"):
        assert first.get_num_requested(dg.AssetKey(asset)) == 1, asset
    assert first.get_num_requested(dg.AssetKey("selections")) == 0  # upstream not done yet
    assert first.get_num_requested(dg.AssetKey("checkpoints")) == 0  # training is never automatic

    for asset in ("density", "clusters", "eval_sets"):
        report(instance, asset)
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert requested(second, "selections") == set(selection_partitions.get_partition_keys())

    for key in selection_partitions.get_partition_keys():
        report(instance, "selections", key)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert settled.total_requested == 0

    # The corpus grows: only the new shard's sketch changes, and density is requested again.
    instance.add_dynamic_partitions("shards", ["c.jsonl"])
    for asset in SHARD_ASSETS:
        report(instance, asset, "c.jsonl")
    grown = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=settled.cursor)
    assert grown.get_num_requested(dg.AssetKey("density")) == 1
    assert grown.get_num_requested(dg.AssetKey("ask_llm_scores")) == 0


def test_reselect_schedule_requests_every_selection_once_per_tick(instance):
    schedule = defs.resolve_schedule_def("reselect_schedule")
    when = datetime.datetime(2026, 11, 25, 3, 0, tzinfo=datetime.timezone.utc)
    requests = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def())).run_requests
    keys = [r.partition_key for r in requests]
    assert sorted(keys) == sorted(selection_partitions.get_partition_keys())
    assert len({r.run_key for r in requests}) == len(requests)
    later = schedule.evaluate_tick(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when + datetime.timedelta(days=1),
        repository_def=defs.get_repository_def())).run_requests
    assert not {r.run_key for r in requests} & {r.run_key for r in later}

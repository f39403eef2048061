"""Declarative automation and the re-selection schedule: what runs when the corpus grows."""

import datetime

import dagster as dg

from dselect_assets.assets.selection import selection_partition, selection_partitions
from dselect_assets.definitions import DEFAULT_SELECTION_KEYS, defs

SHARD_ASSETS = ["documents", "embeddings", "ask_llm_scores", "perplexity_scores", "density_sketch"]


_reported_checks: dict[int, set] = {}


def report(instance, asset, partition=None):
    """A materialization, with its checks passing as a real run evaluates them alongside it."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))
    for spec in defs.resolve_assets_def(asset).check_specs:
        # Dagster keeps one runless evaluation per partition; a later passing one changes nothing.
        if (asset, spec.name, partition) not in _reported_checks.setdefault(id(instance), set()):
            report_check(instance, asset, spec.name, True, partition)


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
    assert sorted(keys) == sorted(selection_partition(k) for k in DEFAULT_SELECTION_KEYS)
    assert len({r.run_key for r in requests}) == len(requests)
    later = schedule.evaluate_tick(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when + datetime.timedelta(days=1),
        repository_def=defs.get_repository_def())).run_requests
    assert not {r.run_key for r in requests} & {r.run_key for r in later}


def _settle(instance):
    """Every shard asset, density, clusters, eval_sets and every selection reported as done."""
    for shard in instance.get_dynamic_partitions("shards"):
        for asset in SHARD_ASSETS:
            report(instance, asset, shard)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    for asset in ("density", "clusters", "eval_sets"):
        report(instance, asset)
    for key in selection_partitions.get_partition_keys():
        report(instance, "selections", key)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return settled.cursor


def report_check(instance, asset, check, passed, partition=None):
    if partition is not None:
        _reported_checks.setdefault(id(instance), set()).add((asset, check, partition))
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey(asset), check_name=check, passed=passed, partition=partition)
    )


def test_a_failed_blocking_check_holds_back_everything_downstream(instance):
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    cursor = _settle(instance)
    instance.add_dynamic_partitions("shards", ["b.jsonl"])
    for asset in SHARD_ASSETS:
        report(instance, asset, "b.jsonl")
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    # density is re-materialized but counts the corpus wrong: its blocking check fails.
    report(instance, "density")
    report_check(instance, "density", "sketch_counts_every_document", passed=False)
    for asset in ("clusters", "eval_sets"):
        report(instance, asset)
    held = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert held.get_num_requested(dg.AssetKey("selections")) == 0

    # Repaired: density runs again and passes; now every selection follows.
    report(instance, "density")
    report_check(instance, "density", "sketch_counts_every_document", passed=True)
    repaired = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=held.cursor)
    assert requested(repaired, "selections") == set(selection_partitions.get_partition_keys())


def test_a_failed_score_check_on_one_shard_holds_back_the_selections(instance):
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    cursor = _settle(instance)
    instance.add_dynamic_partitions("shards", ["b.jsonl"])
    for asset in SHARD_ASSETS:
        if asset != "ask_llm_scores":
            report(instance, asset, "b.jsonl")
    # The judge's scores of b are out of range: their blocking check fails.
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="ask_llm_scores", partition="b.jsonl"))
    report_check(instance, "ask_llm_scores", "score_range", passed=False, partition="b.jsonl")
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor).cursor
    for asset in ("density", "clusters", "eval_sets"):
        report(instance, asset)
    held = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert held.get_num_requested(dg.AssetKey("selections")) == 0


def test_a_burst_of_shards_is_selected_once(instance):
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    cursor = _settle(instance)
    burst = ["c.jsonl", "d.jsonl", "e.jsonl"]
    instance.add_dynamic_partitions("shards", burst)  # the sensor registers a burst in one tick
    density_requests, selection_requests = 0, []
    for shard in burst:  # the shards finish one after another, a tick between each
        for asset in SHARD_ASSETS:
            report(instance, asset, shard)
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = tick.cursor
        density_requests += tick.get_num_requested(dg.AssetKey("density"))
        selection_requests += sorted(requested(tick, "selections"))
    # The tick that sees the last shard requests density and every selection together (one
    # run, density first); nothing was requested while part of the burst was still missing.
    assert density_requests == 1
    assert sorted(selection_requests) == sorted(selection_partitions.get_partition_keys())
    for asset in ("density", "clusters", "eval_sets"):
        report(instance, asset)
    for key in selection_partitions.get_partition_keys():
        report(instance, "selections", key)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert after.get_num_requested(dg.AssetKey("selections")) == 0

"""The corpus sensor registers a partition per new shard file and re-runs changed ones."""

import json
import os

import dagster as dg

from dselect_assets.definitions import defs


def tick(instance, resources, cursor=None):
    sensor = defs.resolve_sensor_def("corpus_sensor")
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_adds_partitions_for_new_files_only(workspace, resources, instance):
    _, corpus = workspace
    (corpus / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (corpus / "notes.md").write_text("not a shard")
    (corpus / ".hidden.jsonl").write_text("")
    first = tick(instance, resources)
    assert [r.partition_key for r in first.run_requests] == ["a.jsonl"]
    assert instance.get_dynamic_partitions("shards") == ["a.jsonl"]

    second = tick(instance, resources, first.cursor)
    assert second.run_requests == [] and not second.dynamic_partitions_requests

    (corpus / "b.parquet").write_bytes(b"")
    (corpus / "c.txt").write_text("para\n")
    third = tick(instance, resources, second.cursor)
    assert sorted(r.partition_key for r in third.run_requests) == ["b.parquet", "c.txt"]
    assert sorted(instance.get_dynamic_partitions("shards")) == ["a.jsonl", "b.parquet", "c.txt"]


def test_sensor_reruns_a_shard_whose_file_changed(workspace, resources, instance):
    _, corpus = workspace
    shard = corpus / "a.jsonl"
    shard.write_text(json.dumps({"text": "a"}) + "\n")
    first = tick(instance, resources)
    shard.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    second = tick(instance, resources, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["a.jsonl"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert instance.get_dynamic_partitions("shards") == ["a.jsonl"]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("shard_job") is not None


def test_sensor_skips_files_already_ingested_with_the_same_bytes(workspace, resources, instance):
    from dselect_assets.assets.corpus import documents

    _, corpus = workspace
    (corpus / "a.jsonl").write_text(json.dumps({"text": "already ingested"}) + "\n")
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    dg.materialize([documents], partition_key="a.jsonl", instance=instance, resources=resources)
    (corpus / "b.jsonl").write_text(json.dumps({"text": "new"}) + "\n")
    first = tick(instance, resources)  # a fresh sensor, e.g. the first `dagster dev` after `dselect run`
    assert [r.partition_key for r in first.run_requests] == ["b.jsonl"]
    (corpus / "a.jsonl").write_text(json.dumps({"text": "already ingested"}) + "\n" + json.dumps({"text": "more"}) + "\n")
    assert [r.partition_key for r in tick(instance, resources).run_requests] == ["a.jsonl", "b.jsonl"]

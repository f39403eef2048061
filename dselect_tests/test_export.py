"""Selection exports for trainers: Parquet and dolma-style jsonl.zst / jsonl.gz, cut by size,
with a manifest; every format re-reads to the selection's documents and carried metadata."""

import hashlib
import json

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dselect_assets.assets.corpus import documents
from dselect_assets.assets.exports import selection_exports
from dselect_assets.assets.selection import FULL_DATA_KEY, FULL_DATA_PARTITION, eval_sets, selections
from dselect_assets.cli import main as cli_main
from dselect_assets.core.ingest.ingest import read_shard
from dselect_assets.core.selection.export import ExportError, read_export, write_export
from dselect_tests.test_formats import gz, jsonl_bytes, make_records


@pytest.fixture
def selected(workspace, resources, instance):
    """A C4-style .json.gz shard and a FineWeb-style Parquet shard, ingested with metadata,
    held-out sets and the full selection; returns the records by id."""
    home, corpus = workspace
    c4 = make_records(60, seed=21, prefix="c4-")
    for r in c4:
        del r["id"]  # C4 has no id column; its url is unique
    (corpus / "c4-train.00000-of-01024.json.gz").write_bytes(gz(jsonl_bytes(c4)))
    fineweb = make_records(40, seed=22, prefix="fw-")
    pq.write_table(pa.table({
        "text": [r["text"] for r in fineweb], "id": [r["id"] for r in fineweb],
        "dump": ["CC-MAIN-2024-10"] * 40, "url": [r["url"] for r in fineweb],
    }), corpus / "fineweb-000.parquet", compression="snappy")
    (home / "eval").mkdir(parents=True)
    (home / "eval" / "high_quality.jsonl").write_text(
        "".join(json.dumps({"text": f"Held-out prose number {i}."}) + "\n" for i in range(3)), encoding="utf-8"
    )
    configs = {
        "c4-train.00000-of-01024.json.gz": {"id_field": "url", "metadata_fields": ["url", "timestamp"]},
        "fineweb-000.parquet": {"metadata_fields": ["url", "dump"]},
    }
    for shard, config in configs.items():
        instance.add_dynamic_partitions("shards", [shard])
        assert dg.materialize([documents], partition_key=shard, instance=instance, resources=resources,
                              run_config={"ops": {"documents": {"config": config}}}).success
    assert dg.materialize([eval_sets], instance=instance, resources=resources).success
    assert dg.materialize([selections], partition_key=FULL_DATA_PARTITION, instance=instance, resources=resources).success
    expected = {r["url"]: {"text": r["text"], "source": "c4-train.00000-of-01024.json.gz",
                           "carried": {"url": r["url"], "timestamp": r["timestamp"]}} for r in c4}
    expected |= {r["id"]: {"text": r["text"], "source": "fineweb-000.parquet",
                           "carried": {"url": r["url"], "dump": "CC-MAIN-2024-10"}} for r in fineweb}
    return expected


def export(instance, resources, config, raise_on_error=True):
    return dg.materialize([selection_exports], partition_key=FULL_DATA_PARTITION, instance=instance,
                          resources=resources, run_config={"ops": {"selection_exports": {"config": config}}},
                          raise_on_error=raise_on_error)


def selection_frame(resources):
    (path,) = resources["store"].query("SELECT export_path FROM selections WHERE selection_key = ?", [FULL_DATA_KEY])[0]
    return pl.read_parquet(path)


@pytest.mark.parametrize("fmt", ["jsonl.zst", "jsonl.gz", "parquet"])
def test_every_export_format_rereads_to_the_selection(selected, resources, instance, tmp_path, fmt):
    out = tmp_path / "train_job_reads_here" / "{selection}-{format}"
    result = export(instance, resources, {"format": fmt, "max_bytes_per_file": 6000, "out_dir": str(out)})
    assert result.success
    out_dir = tmp_path / "train_job_reads_here" / f"{FULL_DATA_KEY}-{fmt}"
    manifest = json.loads((out_dir / "manifest.json").read_text())
    selection = selection_frame(resources)
    records = list(read_export(out_dir))
    # Same documents, same order, same ids and texts as the selection's own Parquet export.
    assert [r["id"] for r in records] == selection["id"].to_list()
    assert [r["text"] for r in records] == selection["text"].to_list()
    assert len(records) == manifest["n_documents"] > 0
    for r in records:
        want = selected[r["id"]]
        assert r["text"] == want["text"] and r["source"] == want["source"]
        assert {k: v for k, v in r["metadata"].items() if k != "dselect"} == want["carried"]
        assert r["metadata"]["dselect"]["content_hash"] == selection.filter(pl.col("id") == r["id"])["content_hash"][0]
    # Cut by size, and the manifest tells the truth about every file.
    assert manifest["n_files"] == len(manifest["files"]) > 1
    assert sorted(p.name for p in (out_dir / "documents").iterdir()) == [
        f"part-{i:05d}.{fmt}" for i in range(manifest["n_files"])
    ]
    for entry in manifest["files"]:
        data = (out_dir / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["n_bytes"]
        assert entry["record_bytes"] <= 6000 or entry["n_documents"] == 1
    assert manifest["n_bytes"] == sum(f["n_bytes"] for f in manifest["files"])
    assert sum(f["n_documents"] for f in manifest["files"]) == selection.height
    # Lineage: the run and each file are recorded against the selection id.
    (selection_id,) = resources["store"].query("SELECT selection_id FROM selections")[0]
    assert manifest["selection_id"] == selection_id
    files = resources["store"].query(
        "SELECT count(*) FROM artifacts WHERE kind = 'selection_export_file' AND producer_id = ?", [selection_id]
    )[0][0]
    assert files == manifest["n_files"]
    (config_json,) = resources["store"].query("SELECT config_json FROM runs WHERE asset = 'selection_exports'")[0]
    assert json.loads(config_json)["format"] == fmt


def test_a_jsonl_export_is_itself_a_corpus_dselect_reads(selected, resources, instance, tmp_path):
    out_dir = tmp_path / "dolma"
    assert export(instance, resources, {"format": "jsonl.zst", "out_dir": str(out_dir)}).success
    (part,) = sorted((out_dir / "documents").iterdir())
    docs = list(read_shard(part))
    assert [d.doc_id for d in docs] == selection_frame(resources)["id"].to_list()


def test_re_exporting_is_byte_identical_and_removes_files_it_no_longer_needs(selected, resources, instance, tmp_path):
    out_dir = tmp_path / "job"
    config = {"format": "jsonl.gz", "max_bytes_per_file": 3000, "out_dir": str(out_dir)}
    assert export(instance, resources, config).success
    first = (out_dir / "manifest.json").read_bytes()
    many = json.loads(first)["n_files"]
    assert export(instance, resources, config).success
    assert (out_dir / "manifest.json").read_bytes() == first
    assert export(instance, resources, config | {"max_bytes_per_file": 10**9}).success
    assert [p.name for p in (out_dir / "documents").iterdir()] == ["part-00000.jsonl.gz"] and many > 1


def test_an_export_refuses_a_directory_holding_other_files(selected, resources, instance, tmp_path):
    out_dir = tmp_path / "busy"
    (out_dir / "documents").mkdir(parents=True)
    (out_dir / "documents" / "someone-elses.jsonl.gz").write_bytes(b"")
    result = export(instance, resources, {"format": "jsonl.gz", "out_dir": str(out_dir)}, raise_on_error=False)
    assert not result.success
    assert "holds files no dselect export there wrote" in result.failure_data_for_node("selection_exports").error.message
    assert (out_dir / "documents" / "someone-elses.jsonl.gz").exists()


def test_exporting_a_selection_not_yet_made_says_so(workspace, resources, instance):
    result = export(instance, resources, {"format": "parquet"}, raise_on_error=False)
    assert not result.success
    assert f"materialize selections[{FULL_DATA_KEY}] first" in result.failure_data_for_node("selection_exports").error.message


def test_cli_export_subcommand(selected, resources, workspace, tmp_path, monkeypatch, capsys):
    home, _ = workspace
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    out_dir = tmp_path / "cli-out"
    cli_main(["export", FULL_DATA_KEY, "--format", "jsonl.zst", "--out", str(out_dir), "--max-bytes", "5000"])
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["format"] == "jsonl.zst" and manifest["n_documents"] == selection_frame(resources).height
    assert str(out_dir / "manifest.json") in capsys.readouterr().out


def test_write_export_cuts_by_size_and_gives_a_big_document_its_own_file(tmp_path):
    texts = ["short one", "x" * 500, "short two", "short three"]
    batch = pa.record_batch({"id": [f"i{i}" for i in range(4)], "text": texts, "score": [0.5, float("nan"), 1.0, None]})
    manifest = write_export([batch], tmp_path / "out", "jsonl.zst", max_bytes_per_file=200)
    assert [f["n_documents"] for f in manifest["files"]] == [1, 1, 2]
    records = list(read_export(tmp_path / "out"))
    assert [r["text"] for r in records] == texts
    assert [r["metadata"]["dselect"]["score"] for r in records] == [0.5, None, 1.0, None]  # NaN is not JSON
    with pytest.raises(ExportError, match="unknown export format 'csv'"):
        write_export([batch], tmp_path / "other", "csv")


def test_a_changed_export_file_fails_verification(tmp_path):
    batch = pa.record_batch({"id": ["a"], "text": ["alpha"]})
    manifest = write_export([batch], tmp_path / "out", "jsonl.gz")
    (tmp_path / "out" / manifest["files"][0]["path"]).write_bytes(gz(b'{"id": "a", "text": "beta"}\n'))
    with pytest.raises(ExportError, match="sha256 differs from the manifest"):
        list(read_export(tmp_path / "out"))


def test_the_selection_export_is_assembled_the_same_from_shards_a_range_at_a_time(
        selected, resources, instance, monkeypatch):
    from dselect_assets.store import selections as selection_store

    whole = selection_frame(resources)
    # ranges of 7 rows: each draws from both shards' parts, the last one short
    monkeypatch.setattr(selection_store, "EXPORT_RANGE_ROWS", 7)
    assert dg.materialize([selections], partition_key=FULL_DATA_PARTITION, instance=instance, resources=resources).success
    assert selection_frame(resources).equals(whole)
    assert whole["content_hash"].is_sorted() and whole["content_hash"].n_unique() == whole.height > 7 * 2
    assert {i: t for i, t in zip(whole["id"], whole["text"])} == {i: selected[i]["text"] for i in whole["id"]}


def test_the_export_reads_the_selection_a_range_at_a_time_to_the_same_records(
        selected, resources, instance, tmp_path, monkeypatch):
    from dselect_assets.store import selections as selection_store

    whole_dir, ranged_dir = tmp_path / "whole", tmp_path / "ranged"
    assert export(instance, resources, {"format": "parquet", "out_dir": str(whole_dir)}).success
    monkeypatch.setattr(selection_store, "EXPORT_RANGE_ROWS", 7)  # each range the small side of its joins
    assert export(instance, resources, {"format": "parquet", "out_dir": str(ranged_dir)}).success
    whole, ranged = list(read_export(whole_dir)), list(read_export(ranged_dir))
    assert ranged == whole and len(whole) > 2 * 7
    assert all(r["source"] == selected[r["id"]]["source"] for r in ranged)

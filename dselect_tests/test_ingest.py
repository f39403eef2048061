"""Shard ingestion: formats, every bad-input case, idempotence, lossless failure."""

import json

import dagster as dg
import polars as pl
import pytest

from dselect_assets.assets.corpus import documents
from dselect_assets.core.hashing import content_hash, hash_order, normalize_text
from dselect_assets.core.ingest.ingest import Document, Rejection, read_shard


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ingest(instance, resources, shard, config=None, raise_on_error=True):
    instance.add_dynamic_partitions("shards", [shard])
    run_config = {"ops": {"documents": {"config": config}}} if config else None
    return dg.materialize(
        [documents],
        partition_key=shard,
        instance=instance,
        resources=resources,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def db_rows(resources, sql, params=None):
    return resources["store"].query(sql, params)


def metadata(result):
    return {k: v.value for k, v in result.asset_materializations_for_node("documents")[0].metadata.items()}


def test_normalized_hash_ignores_whitespace_differences():
    assert content_hash("a  b\n c ") == content_hash("a b c")
    assert normalize_text(" x\t\ty ") == "x y"
    assert content_hash("a b") != content_hash("a c")


def test_jsonl_shard_loads_ids_text_and_hashes(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "a.jsonl", [{"id": "d1", "text": "First document."}, {"text": "Second one."}])
    result = ingest(instance, resources, "a.jsonl")
    assert result.success
    rows = db_rows(resources, "SELECT row_number, doc_id, content_hash FROM documents ORDER BY row_number")
    assert rows == [
        (1, "d1", content_hash("First document.")),
        (2, "a.jsonl:2", content_hash("Second one.")),
    ]
    shard = db_rows(resources, "SELECT format, n_rows, n_documents, n_rejected FROM shards")
    assert shard == [("jsonl", 2, 2, 0)]
    stored = pl.read_parquet(db_rows(resources, "SELECT documents_file FROM shards")[0][0])
    assert stored["text"].to_list() == ["First document.", "Second one."]


def test_parquet_and_txt_shards(workspace, resources, instance):
    _, corpus = workspace
    pl.DataFrame({"id": ["p1", "p2", "p3"], "text": ["alpha text", None, "gamma text"]}).write_parquet(
        corpus / "b.parquet"
    )
    (corpus / "c.txt").write_text("Para one\nstill one.\n\n\n  \nPara two.\n\nPara three.\n", encoding="utf-8")
    assert ingest(instance, resources, "b.parquet").success
    assert ingest(instance, resources, "c.txt").success
    parquet_docs = db_rows(resources, "SELECT doc_id FROM documents WHERE shard='b.parquet' ORDER BY 1")
    assert parquet_docs == [("p1",), ("p3",)]
    assert db_rows(resources, "SELECT row_number, reason FROM quarantine WHERE shard='b.parquet'") == [
        (2, "'text' is null")
    ]
    txt = db_rows(resources, "SELECT row_number, n_chars FROM documents WHERE shard='c.txt' ORDER BY 1")
    assert txt == [(1, len("Para one\nstill one.")), (6, len("Para two.")), (8, len("Para three."))]


def test_every_bad_row_is_quarantined_with_its_reason_and_good_rows_load(workspace, resources, instance):
    _, corpus = workspace
    big = "x" * (10 * 1024 * 1024)
    lines = [
        json.dumps({"id": "ok1", "text": "A good document."}).encode(),
        b'{"id": "broken", "text": "unterminated',
        json.dumps({"id": "notext", "body": "no text field"}).encode(),
        '{"id": "latin1", "text": "caf\xe9"}'.encode("latin-1"),
        json.dumps({"id": "blank", "text": "   \n\t "}).encode(),
        json.dumps({"id": "ok1", "text": "Same id again."}).encode(),
        json.dumps({"id": "huge", "text": big}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"id": "ok2", "text": "Another good document."}).encode(),
    ]
    (corpus / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = ingest(instance, resources, "bad.jsonl")
    assert result.success
    assert db_rows(resources, "SELECT doc_id FROM documents ORDER BY row_number") == [("ok1",), ("ok2",)]
    reasons = dict(db_rows(resources, "SELECT row_number, reason FROM quarantine ORDER BY 1"))
    assert reasons[2].startswith("malformed JSON")
    assert reasons[3] == "missing 'text' field"
    assert reasons[4].startswith("line is not valid UTF-8: byte 0xe9")
    assert reasons[5] == "empty or whitespace-only text"
    assert reasons[6] == "duplicate id 'ok1' (first seen at row 1)"
    assert reasons[7].startswith("document is 10,485,7") and "byte limit" in reasons[7]
    assert reasons[8] == "expected a JSON object, got list"
    md = metadata(result)
    assert md["quarantined"] == 7 and md["documents"] == 2
    assert "missing 'text' field" in md["quarantined_rows"]


def test_the_size_limit_is_configurable(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "s.jsonl", [{"text": "y" * 5000}])
    ingest(instance, resources, "s.jsonl", config={"max_document_bytes": 1000})
    assert db_rows(resources, "SELECT count(*) FROM documents")[0][0] == 0
    ingest(instance, resources, "s.jsonl", config={"max_document_bytes": 10_000})
    assert db_rows(resources, "SELECT count(*) FROM documents")[0][0] == 1
    assert db_rows(resources, "SELECT count(*) FROM quarantine")[0][0] == 0


def test_exact_duplicates_are_recorded_once_and_counted(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "a.jsonl", [{"text": "Same text."}, {"text": "Other text."}, {"text": "Same   text. "}])
    write_jsonl(corpus / "b.jsonl", [{"text": "Other text."}, {"text": "New text."}])
    ingest(instance, resources, "a.jsonl")
    result = ingest(instance, resources, "b.jsonl")
    assert db_rows(resources, "SELECT count(*) FROM documents")[0][0] == 5
    contents = dict(db_rows(resources, "SELECT doc_id, occurrences FROM contents"))
    assert contents == {"a.jsonl:1": 2, "a.jsonl:2": 2, "b.jsonl:2": 1}
    assert db_rows(resources, "SELECT shard, n_duplicates FROM shards ORDER BY 1") == [("a.jsonl", 1), ("b.jsonl", 1)]
    assert metadata(result)["distinct_texts_in_corpus"] == 3


def test_id_already_used_by_another_shard_is_quarantined(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "a.jsonl", [{"id": "x", "text": "From a."}])
    write_jsonl(corpus / "b.jsonl", [{"id": "x", "text": "From b."}, {"id": "y", "text": "Fine."}])
    ingest(instance, resources, "a.jsonl")
    ingest(instance, resources, "b.jsonl")
    assert db_rows(resources, "SELECT shard, doc_id FROM documents ORDER BY 1, 2") == [("a.jsonl", "x"), ("b.jsonl", "y")]
    (reason,) = db_rows(resources, "SELECT reason FROM quarantine WHERE shard = 'b.jsonl'")[0]
    assert reason == "duplicate id 'x': already used by shard a.jsonl row 1"
    stored = pl.read_parquet(db_rows(resources, "SELECT documents_file FROM shards WHERE shard='b.jsonl'")[0][0])
    assert stored["doc_id"].to_list() == ["y"]


def test_a_documents_file_deleted_by_hand_is_written_again_by_ingest(workspace, resources, instance):
    from pathlib import Path

    _, corpus = workspace
    write_jsonl(corpus / "a.jsonl", [{"id": "a1", "text": "Shared."}, {"id": "a2", "text": "Only in a."}])
    write_jsonl(corpus / "b.jsonl", [{"id": "b1", "text": "Shared."}])
    ingest(instance, resources, "a.jsonl")
    ingest(instance, resources, "b.jsonl")
    (a_file,) = db_rows(resources, "SELECT documents_file FROM shards WHERE shard = 'a.jsonl'")[0]
    Path(a_file).unlink()
    # another shard still ingests (and still finds a clashing id in a file that is there)
    write_jsonl(corpus / "c.jsonl", [{"id": "b1", "text": "Taken id."}, {"id": "c1", "text": "Only in c."}])
    ingest(instance, resources, "c.jsonl")
    assert db_rows(resources, "SELECT doc_id FROM quarantine WHERE shard = 'c.jsonl'") == [("b1",)]
    # re-ingesting a writes its file again, and its rows and texts are as before
    ingest(instance, resources, "a.jsonl")
    assert db_rows(resources, "SELECT shard, doc_id FROM documents ORDER BY 1, 2") == [
        ("a.jsonl", "a1"), ("a.jsonl", "a2"), ("b.jsonl", "b1"), ("c.jsonl", "c1")]
    assert db_rows(resources, "SELECT doc_id, occurrences FROM contents ORDER BY 1") == [
        ("a1", 2), ("a2", 1), ("c1", 1)]


def test_rematerializing_is_idempotent(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "a.jsonl", [{"text": f"doc {i}"} for i in range(50)] + [{"text": ""}])
    for _ in range(3):
        assert ingest(instance, resources, "a.jsonl").success
    assert db_rows(resources, "SELECT count(*), count(DISTINCT content_hash) FROM documents") == [(50, 50)]
    assert db_rows(resources, "SELECT count(*) FROM quarantine") == [(1,)]
    assert db_rows(resources, "SELECT count(*) FROM shards") == [(1,)]
    # One documents file on disk for the shard, not one per run.
    home, _ = workspace
    assert len(list((home / "documents" / "a.jsonl").glob("*.parquet"))) == 1


def test_unreadable_file_fails_clearly_and_loses_nothing(workspace, resources, instance):
    _, corpus = workspace
    write_jsonl(corpus / "good.jsonl", [{"text": "kept"}])
    pl.DataFrame({"text": ["one", "two"]}).write_parquet(corpus / "p.parquet")
    ingest(instance, resources, "good.jsonl")
    ingest(instance, resources, "p.parquet")
    (corpus / "p.parquet").write_bytes(b"PAR1 this is not parquet at all")
    result = ingest(instance, resources, "p.parquet", raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("documents").error
    assert "p.parquet" in failure.message and "not a readable Parquet file" in failure.message
    (row, reason) = db_rows(resources, "SELECT row_number, reason FROM quarantine WHERE shard='p.parquet'")[0]
    assert row == 0 and "not a readable Parquet file" in reason
    # The earlier good ingest of both shards is still there.
    assert db_rows(resources, "SELECT shard, count(*) FROM documents GROUP BY 1 ORDER BY 1") == [
        ("good.jsonl", 1),
        ("p.parquet", 2),
    ]


def test_parquet_without_text_column_names_the_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pl.DataFrame({"body": ["a"]}).write_parquet(path)
    with pytest.raises(ValueError, match=r"x.parquet: Parquet file has no 'text' column \(columns: \['body'\]\)"):
        list(read_shard(path))


def test_read_shard_streams_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "o.jsonl", [{"text": "a"}, {"text": ""}, {"text": "c"}])
    items = list(read_shard(path))
    assert [type(i) for i in items] == [Document, Rejection, Document]
    assert [i.row_number for i in items] == [1, 2, 3]


def test_hash_order_sorts_content_hashes_like_a_string_sort():
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    hashes = [content_hash(f"text {i}") for i in range(2000)]
    # two hashes sharing their first 16 hex digits: the integer keys tie, the strings do not
    hashes += ["0123456789abcdef" + "f" * 48, "0123456789abcdef" + "0" * 48]
    # not lowercase hex: sorted as strings ("A" < "a")
    hashes += ["A" * 64, "Z" * 64]
    array = pa.array(hashes)
    # all of it; the 64-bit tie alone; an offset slice with neither
    for part in (array, array.slice(0, 2002), array.slice(7, 1500)):
        np.testing.assert_array_equal(hash_order(part), pc.sort_indices(part).to_numpy())

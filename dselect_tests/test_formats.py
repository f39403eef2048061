"""Corpus formats people have: compressed JSON lines, Parquet of any codec, Hugging Face
datasets saved to disk; field mapping from the launchpad or a fields file; broken input."""

import gzip
import json
import random

import dagster as dg
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dselect_assets.assets.corpus import documents, is_shard_file, list_shard_files, list_shards, shard_source
from dselect_assets.core.ingest.ingest import Document, FieldMap, Rejection, ShardReadError, read_shard, write_documents

WORDS = (
    "river stone harbour lantern meadow copper signal archive orbit quarry willow ledger "
    "beacon thistle canyon glacier mosaic pylon saffron tundra"
).split()


def make_records(n, seed=0, prefix="d"):
    """C4-like records (text, url, timestamp) from a fixed seed; every text distinct."""
    rng = random.Random(seed)
    return [
        {
            "id": f"{prefix}{i}",
            "text": f"{prefix} document {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))),
            "url": f"https://example.org/{prefix}/{i}",
            "timestamp": f"2019-04-{1 + i % 28:02d}T10:00:00Z",
        }
        for i in range(n)
    ]


def jsonl_bytes(records):
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def gz(data):
    return gzip.compress(data, mtime=0)


def zst(data):
    return pa.compress(data, codec="zstd", asbytes=True)


def ingest(instance, resources, shard, config=None, raise_on_error=True):
    instance.add_dynamic_partitions("shards", [shard])
    run_config = {"ops": {"documents": {"config": config}}} if config else None
    return dg.materialize(
        [documents], partition_key=shard, instance=instance, resources=resources,
        run_config=run_config, raise_on_error=raise_on_error,
    )


def stored(resources, shard):
    (path,) = resources["store"].query("SELECT documents_file FROM shards WHERE shard = ?", [shard])[0]
    return pl.read_parquet(path)


def quarantine(resources, shard):
    return resources["store"].query(
        "SELECT row_number, reason FROM quarantine WHERE shard = ? ORDER BY row_number", [shard]
    )


def failure_message(result):
    return result.failure_data_for_node("documents").error.message


# ------------------------------------------------------------------ every format through the asset


@pytest.mark.parametrize(
    "name, encode, fmt",
    [
        ("c4-train.00000-of-01024.json.gz", gz, "jsonl.gz"),
        ("part-0.jsonl.gz", gz, "jsonl.gz"),
        ("redpajama-0.jsonl.zst", zst, "jsonl.zst"),
        ("dolma-0.json.zst", zst, "jsonl.zst"),
        ("plain.ndjson", lambda b: b, "jsonl"),
    ],
)
def test_compressed_json_lines_ingest_through_the_asset(workspace, resources, instance, name, encode, fmt):
    _, corpus = workspace
    records = make_records(300, seed=len(name))
    (corpus / name).write_bytes(encode(jsonl_bytes(records)))
    assert is_shard_file(corpus / name) and [p.name for p in list_shard_files(corpus)] == [name]
    result = ingest(instance, resources, name, config={"metadata_fields": ["url", "timestamp"]})
    assert result.success
    docs = stored(resources, name)
    assert docs["doc_id"].to_list() == [r["id"] for r in records]
    assert docs["text"].to_list() == [r["text"] for r in records]
    assert [json.loads(m) for m in docs["metadata"]] == [{"url": r["url"], "timestamp": r["timestamp"]} for r in records]
    assert resources["store"].query("SELECT format, n_rows, n_documents, n_rejected FROM shards") == [
        (fmt, 300, 300, 0)
    ]
    # Nothing decompressed was left beside the shard.
    assert sorted(p.name for p in corpus.iterdir()) == [name]


@pytest.mark.parametrize("codec", ["none", "snappy", "gzip", "brotli", "zstd", "lz4"])
def test_fineweb_style_parquet_of_every_codec(workspace, resources, instance, codec):
    _, corpus = workspace
    records = make_records(120, seed=7, prefix="fw")
    table = pa.table({
        "text": [r["text"] for r in records],
        "id": [f"<urn:uuid:{i:08d}>" for i in range(len(records))],
        "dump": ["CC-MAIN-2024-10"] * len(records),
        "url": [r["url"] for r in records],
        "language_score": [0.5 + i / 1000 for i in range(len(records))],
    })
    name = f"fineweb-{codec}.parquet"
    pq.write_table(table, corpus / name, compression=codec, row_group_size=50)
    result = ingest(instance, resources, name, config={"metadata_fields": ["url", "dump", "language_score"]})
    assert result.success
    docs = stored(resources, name)
    assert docs["doc_id"].to_list() == table["id"].to_pylist()
    assert docs["text"].to_list() == table["text"].to_pylist()
    assert json.loads(docs["metadata"][3]) == {"url": records[3]["url"], "dump": "CC-MAIN-2024-10", "language_score": 0.503}


# ------------------------------------------------------------------ broken compressed input


def _prefix_loaded(resources, shard, records):
    """The documents loaded are exactly the first k records, k > 0; returns k."""
    ids = stored(resources, shard)["doc_id"].to_list()
    assert 0 < len(ids) < len(records)
    assert ids == [r["id"] for r in records[: len(ids)]]
    assert stored(resources, shard)["text"].to_list() == [r["text"] for r in records[: len(ids)]]
    return len(ids)


@pytest.mark.parametrize("name, encode, codec", [("t.jsonl.gz", gz, "gzip"), ("t.jsonl.zst", zst, "zstd")])
def test_a_truncated_stream_keeps_the_lines_before_and_names_the_line(workspace, resources, instance, name, encode, codec):
    _, corpus = workspace
    records = make_records(2000, seed=3)
    data = encode(jsonl_bytes(records))
    (corpus / name).write_bytes(data[: len(data) // 2])  # a download cut off half way
    result = ingest(instance, resources, name)
    assert result.success
    k = _prefix_loaded(resources, name, records)
    rows = quarantine(resources, name)
    # The last quarantined row is the break; a line cut in half before it is malformed JSON.
    (row, reason) = rows[-1]
    assert row == k + len(rows)
    assert reason.startswith(f"{codec} stream is truncated after line {row - 1} (")
    assert f"line {row} onwards could not be read" in reason
    assert all(r.startswith("malformed JSON") for _, r in rows[:-1]) and len(rows) <= 2


@pytest.mark.parametrize("name, encode, codec", [("c.json.gz", gz, "gzip"), ("c.json.zst", zst, "zstd")])
def test_a_corrupt_stream_fails_the_shard_naming_the_line_and_keeps_the_last_good_ingest(
    workspace, resources, instance, name, encode, codec
):
    """A checksum catches damage after the fact: the lines decoded before it are not trusted."""
    _, corpus = workspace
    records = make_records(2000, seed=4)
    good = encode(jsonl_bytes(records))
    (corpus / name).write_bytes(good)
    assert ingest(instance, resources, name).success
    data = bytearray(good)
    data[len(data) * 9 // 10] ^= 0xFF  # one flipped byte late in the stream, past the first lines
    (corpus / name).write_bytes(bytes(data))
    result = ingest(instance, resources, name, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert f"{name}: {codec} stream is corrupt, detected after line " in message
    assert "nothing of this file was stored" in message
    # The earlier ingest of the intact file is untouched.
    assert stored(resources, name)["doc_id"].to_list() == [r["id"] for r in records]
    assert resources["store"].query("SELECT count(*) FROM documents")[0][0] == 2000


def test_gzip_members_before_trailing_garbage_are_kept(workspace, resources, instance):
    _, corpus = workspace
    a, b = make_records(30, seed=1, prefix="a"), make_records(30, seed=2, prefix="b")
    (corpus / "g.jsonl.gz").write_bytes(gz(jsonl_bytes(a)) + gz(jsonl_bytes(b)) + b"not gzip at all")
    assert ingest(instance, resources, "g.jsonl.gz").success
    assert stored(resources, "g.jsonl.gz")["doc_id"].to_list() == [r["id"] for r in a + b]
    ((row, reason),) = quarantine(resources, "g.jsonl.gz")
    assert row == 61 and reason.startswith("gzip stream is truncated after line 60")


def test_a_file_that_is_not_gzip_fails_the_shard_naming_it(workspace, resources, instance):
    _, corpus = workspace
    (corpus / "fake.json.gz").write_bytes(jsonl_bytes(make_records(3)))  # never compressed
    result = ingest(instance, resources, "fake.json.gz", raise_on_error=False)
    assert not result.success
    assert "fake.json.gz: not a readable gzip stream" in failure_message(result)
    assert quarantine(resources, "fake.json.gz")[0][0] == 0


def test_bad_lines_inside_a_compressed_shard_are_quarantined_by_line(workspace, resources, instance):
    _, corpus = workspace
    records = make_records(5, seed=5)
    lines = [json.dumps(r).encode() for r in records]
    lines.insert(2, b'{"id": "broken", "text": "unterminated')
    lines.insert(4, "caf\xe9".encode("latin-1"))
    (corpus / "bad.jsonl.zst").write_bytes(zst(b"\n".join(lines) + b"\n"))
    assert ingest(instance, resources, "bad.jsonl.zst").success
    assert stored(resources, "bad.jsonl.zst")["doc_id"].to_list() == [r["id"] for r in records]
    reasons = quarantine(resources, "bad.jsonl.zst")
    assert [row for row, _ in reasons] == [3, 5]
    assert reasons[0][1].startswith("malformed JSON") and reasons[1][1].startswith("line is not valid UTF-8")


def test_concatenated_gzip_members_and_zstd_frames_read_as_one_stream(tmp_path):
    a, b = make_records(10, seed=1, prefix="a"), make_records(10, seed=2, prefix="b")
    for name, encode in (("m.jsonl.gz", gz), ("m.jsonl.zst", zst)):
        path = tmp_path / name
        path.write_bytes(encode(jsonl_bytes(a)) + encode(jsonl_bytes(b)))
        assert [d.doc_id for d in read_shard(path)] == [r["id"] for r in a + b]


# ------------------------------------------------------------------ field mapping


def test_nested_fields_are_mapped_from_the_launchpad_and_recorded_in_lineage(workspace, resources, instance):
    _, corpus = workspace
    rows = [
        {"uid": 10 + i, "doc": {"body": f"Body of document {i}.", "meta": {"url": f"https://e.org/{i}"}},
         "source": "crawl-a" if i % 2 else "crawl-b"}
        for i in range(6)
    ]
    rows[3]["doc"]["meta"] = {}  # a row without the metadata field: null, not an error
    (corpus / "nested.jsonl.gz").write_bytes(gz(jsonl_bytes(rows)))
    config = {"text_field": "doc.body", "id_field": "uid", "metadata_fields": ["doc.meta.url", "source"]}
    assert ingest(instance, resources, "nested.jsonl.gz", config=config).success
    docs = stored(resources, "nested.jsonl.gz")
    assert docs["doc_id"].to_list() == [str(10 + i) for i in range(6)]
    assert docs["text"].to_list() == [f"Body of document {i}." for i in range(6)]
    assert json.loads(docs["metadata"][1]) == {"doc.meta.url": "https://e.org/1", "source": "crawl-a"}
    assert json.loads(docs["metadata"][3]) == {"doc.meta.url": None, "source": "crawl-a"}
    (config_json,) = resources["store"].query(
        "SELECT config_json FROM runs WHERE asset = 'documents' AND partition_key = 'nested.jsonl.gz'"
    )[0]
    recorded = json.loads(config_json)
    assert {k: recorded[k] for k in config} == config
    # The documents file says how it was read, too.
    (path,) = resources["store"].query("SELECT documents_file FROM shards")[0]
    assert json.loads(pq.read_schema(path).metadata[b"dselect.fields"]) == {
        "text_field": "doc.body", "id_field": "uid", "metadata_fields": ["doc.meta.url", "source"]
    }


def test_a_wrong_text_field_fails_naming_the_file_and_its_fields(workspace, resources, instance):
    _, corpus = workspace
    (corpus / "c4.json.gz").write_bytes(gz(jsonl_bytes(make_records(20))))
    result = ingest(instance, resources, "c4.json.gz", config={"text_field": "content"}, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "c4.json.gz: no row among the first 20 has 'content' (text field)" in message
    assert "line 1 has the fields ['id', 'text', 'url', 'timestamp']" in message
    assert resources["store"].query("SELECT count(*) FROM documents")[0][0] == 0


def test_a_wrong_metadata_column_fails_naming_the_parquet_columns(workspace, resources, instance):
    _, corpus = workspace
    pl.DataFrame({"text": ["a doc", "b doc"], "url": ["u1", "u2"]}).write_parquet(corpus / "f.parquet")
    result = ingest(instance, resources, "f.parquet", config={"metadata_fields": ["dump"]}, raise_on_error=False)
    assert not result.success
    assert "f.parquet: Parquet file has no 'dump' column (metadata field) (columns: ['text', 'url'])" in (
        failure_message(result)
    )


def test_a_wrong_id_field_is_an_error_only_when_configured(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gz(jsonl_bytes([{"text": "one"}, {"text": "two"}])))
    assert [d.doc_id for d in read_shard(path)] == ["x.jsonl.gz:1", "x.jsonl.gz:2"]
    with pytest.raises(ShardReadError, match=r"x.jsonl.gz: no row among the first 2 has 'uid' \(id field\)"):
        list(read_shard(path, fields=FieldMap(id="uid", strict=frozenset({"uid"}))))


def test_a_fields_file_maps_shards_the_sensor_launches(workspace, resources, instance):
    home, corpus = workspace
    home.mkdir(parents=True, exist_ok=True)
    (home / "fields.toml").write_text(
        '[[shard]]\nmatch = "c4-*.json.gz"\nid_field = "url"\nmetadata_fields = ["timestamp"]\n\n'
        '[[shard]]\nmatch = "*.parquet"\ntext_field = "content"\n',
        encoding="utf-8",
    )
    records = make_records(4)
    for r in records:
        del r["id"]  # C4 has no id; its url is unique
    (corpus / "c4-train.00001-of-01024.json.gz").write_bytes(gz(jsonl_bytes(records)))
    pl.DataFrame({"content": ["parquet text one", "parquet text two"]}).write_parquet(corpus / "p.parquet")
    assert ingest(instance, resources, "c4-train.00001-of-01024.json.gz").success  # no run config at all
    assert ingest(instance, resources, "p.parquet").success
    c4 = stored(resources, "c4-train.00001-of-01024.json.gz")
    assert c4["doc_id"].to_list() == [r["url"] for r in records]
    assert json.loads(c4["metadata"][0]) == {"timestamp": records[0]["timestamp"]}
    assert stored(resources, "p.parquet")["text"].to_list() == ["parquet text one", "parquet text two"]
    # The launchpad wins over the file.
    assert ingest(instance, resources, "p.parquet", config={"text_field": "missing"}, raise_on_error=False).success is False


# ------------------------------------------------------------------ Hugging Face datasets on disk


def save_to_disk_layout(directory, records, n_files, batch_rows=7):
    """What `datasets.Dataset.save_to_disk` writes: Arrow IPC *stream* files data-0000i-of-0000N.arrow
    (record batches of writer_batch_size rows), dataset_info.json and state.json naming them."""
    directory.mkdir(parents=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()),
                        ("meta", pa.struct([("url", pa.string()), ("lang", pa.string())]))])
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": {}}})})
    names, per_file = [], -(-len(records) // n_files)
    for i in range(n_files):
        name = f"data-{i:05d}-of-{n_files:05d}.arrow"
        names.append(name)
        chunk = records[i * per_file:(i + 1) * per_file]
        table = pa.table({
            "id": [r["id"] for r in chunk], "text": [r["text"] for r in chunk],
            "meta": [{"url": r["url"], "lang": "en"} for r in chunk],
        }, schema=schema)
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    (directory / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": {
        "id": {"dtype": "string", "_type": "Value"}, "text": {"dtype": "string", "_type": "Value"}}}))
    (directory / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": n} for n in names], "_fingerprint": "0123456789abcdef",
        "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
        "_split": None,
    }))
    return names


def test_a_saved_hugging_face_dataset_is_one_shard_per_arrow_file(workspace, resources, instance):
    _, corpus = workspace
    records = make_records(40, seed=9, prefix="hf")
    names = save_to_disk_layout(corpus / "wiki_hf", records, n_files=3)
    shards = list_shards(corpus)
    assert list(shards) == [f"wiki_hf@{n}" for n in names]
    assert list_shard_files(corpus) == []  # the directory is not a shard file itself
    loaded = []
    for key in shards:
        assert shard_source(corpus, key) == corpus / "wiki_hf" / key.split("@")[1]
        result = ingest(instance, resources, key, config={"metadata_fields": ["meta.url"]})
        assert result.success
        docs = stored(resources, key)
        loaded += list(zip(docs["doc_id"], docs["text"], docs["metadata"].map_elements(lambda m: json.loads(m)["meta.url"], return_dtype=pl.String)))
    assert loaded == [(r["id"], r["text"], r["url"]) for r in records]
    assert resources["store"].query("SELECT DISTINCT format FROM shards") == [("arrow",)]


def test_dataset_dict_splits_and_rows_without_ids(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "ds").mkdir()
    (root / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    records = [{k: v for k, v in r.items() if k != "id"} | {"id": None} for r in make_records(6)]
    save_to_disk_layout(root / "ds" / "train", records[:4], n_files=1)
    save_to_disk_layout(root / "ds" / "test", records[4:], n_files=1)
    shards = list_shards(root)
    assert list(shards) == ["ds@train@data-00000-of-00001.arrow", "ds@test@data-00000-of-00001.arrow"]
    key, path = next(iter(shards.items()))
    # Made-up ids carry the whole key, so two datasets' data-00000 files cannot clash.
    assert [d.doc_id for d in read_shard(path, shard_name=key)] == [f"{key}:{i}" for i in range(1, 5)]


def test_a_truncated_arrow_file_keeps_the_batches_before_it(tmp_path):
    records = make_records(50, seed=11)
    (name,) = save_to_disk_layout(tmp_path / "ds", records, n_files=1, batch_rows=10)
    path = tmp_path / "ds" / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    summary = write_documents(path, tmp_path / "out.parquet")
    docs = pl.read_parquet(tmp_path / "out.parquet")
    assert docs["doc_id"].to_list() == [r["id"] for r in records[: summary.n_documents]]
    assert summary.n_documents in (20, 30)
    (rejection,) = summary.rejections
    assert rejection.row_number == summary.n_documents + 1
    assert rejection.reason.startswith(f"Arrow data is truncated or corrupt after row {summary.n_documents}")


def test_an_arrow_ipc_file_format_shard_reads_too(tmp_path):
    table = pa.table({"text": ["first", "second"], "id": ["a", "b"]})
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    items = list(read_shard(tmp_path / "f.arrow"))
    assert all(isinstance(i, Document) for i in items) and [i.text for i in items] == ["first", "second"]


def test_unknown_double_suffix_is_not_a_shard(tmp_path):
    (tmp_path / "x.json.bz2").write_bytes(b"")
    (tmp_path / ".hidden.jsonl.gz").write_bytes(gz(b""))
    assert list_shard_files(tmp_path) == []
    with pytest.raises(ShardReadError, match=r"unsupported shard format '\.json\.bz2'"):
        list(read_shard(tmp_path / "x.json.bz2"))
    assert not any(isinstance(i, Rejection) for i in read_shard(_empty_gz(tmp_path)))


def _empty_gz(tmp_path):
    path = tmp_path / "empty.jsonl.gz"
    path.write_bytes(gz(b""))
    return path


@pytest.mark.parametrize("suffix", ["jsonl.gz", "jsonl.zst"])
def test_a_compressed_shard_is_read_in_memory_bounded_by_the_batch_not_the_file(tmp_path, suffix):
    """20 MB of decompressed lines read with under 8 MB of Python allocations at the peak."""
    import tracemalloc

    path = tmp_path / f"big.{suffix}"
    rng = random.Random(13)
    line_words = [" ".join(rng.choice(WORDS) for _ in range(300)) for _ in range(50)]
    n_lines, written = 0, 0
    sink = gzip.open(path, "wb", compresslevel=1) if suffix == "jsonl.gz" else pa.CompressedOutputStream(str(path), "zstd")
    with sink:
        while written < 20_000_000:
            line = json.dumps({"id": f"b{n_lines}", "text": f"{n_lines} {line_words[n_lines % 50]}"}).encode() + b"\n"
            sink.write(line)
            n_lines, written = n_lines + 1, written + len(line)
    tracemalloc.start()
    try:
        count = sum(isinstance(item, Document) for item in read_shard(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n_lines
    assert peak < 8_000_000, f"peak {peak:,} bytes for {written:,} decompressed bytes"

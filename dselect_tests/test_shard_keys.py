"""A shard partition key added by hand cannot make `documents` read or write outside its directories.

Each escaping key is set up so that, without the check, it would point at a readable shard file
outside the corpus directory (or in a sub-directory of it) and ingestion would succeed and write
documents/<key>/ outside dselect's home. With the check the step fails naming the key, and not a
single file appears or changes anywhere under the test's directory, the DuckDB store included.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from dselect_assets.assets.corpus import documents
from dselect_assets.core.ingest.shard_keys import InvalidShardKey, validate_shard_key
from dselect_assets.resources import DataPaths, DuckDBStore

RECORDS = [{"id": "d1", "text": "A perfectly ordinary document."}, {"id": "d2", "text": "Another one."}]


def _write_shard(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for directories)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """tmp/{corpus,home,outside}: shard files inside, under, and outside the corpus directory."""
    corpus, home, outside = tmp_path / "corpus", tmp_path / "home", tmp_path / "outside"
    corpus.mkdir()
    outside.mkdir()
    monkeypatch.setenv("DSELECT_HOME", str(home))
    monkeypatch.setenv("DSELECT_CORPUS_DIR", str(corpus))
    monkeypatch.delenv("DSELECT_DB", raising=False)
    _write_shard(corpus / "good.jsonl")
    _write_shard(corpus / "a" / "b.jsonl")  # a sub-directory is not the corpus directory
    _write_shard(corpus / ".hidden.jsonl")  # the sensor never lists hidden files
    _write_shard(tmp_path / "x.jsonl")  # what corpus/../x.jsonl reaches
    _write_shard(outside / "abs.jsonl")
    resources = {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
    }
    return tmp_path, resources


def _materialize(resources: dict, key: str) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", [key])  # as a user could from the UI
        return dg.materialize([documents], partition_key=key, instance=instance, resources=resources,
                              raise_on_error=False)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.error.message + "".join(
        cause.message for cause in _causes(failure.step_failure_data.error))


def _causes(error):
    while error is not None:
        yield error
        error = error.cause


ESCAPING_KEYS = {
    "../x.jsonl": "path separator",
    "a/b.jsonl": "path separator",
    "/etc/passwd": "path separator",
    "..": "directory",
    ".": "directory",
    ".hidden.jsonl": "hidden",
    "x\x00.jsonl": "NUL",
    "good.jsonl\x00/../../x.jsonl": "NUL",
    "a\\b.jsonl": "path separator",
    "x\n.jsonl": "control character",
}


@pytest.mark.parametrize("key", [*ESCAPING_KEYS, "<absolute path to outside/abs.jsonl>"])
def test_escaping_key_is_refused_before_any_file_or_row_is_written(layout, key):
    root, resources = layout
    if key.startswith("<absolute"):
        key, why = str(root / "outside" / "abs.jsonl"), "path separator"
    else:
        why = ESCAPING_KEYS[key]
    before = _tree(root)

    result = _materialize(resources, key)

    assert not result.success
    message = _failure_message(result)
    assert f"shard partition key {key!r} is refused" in message and why in message, message
    assert _tree(root) == before, "a refused key must not create or change any file (the store included)"
    assert not (root / "home").exists()


def test_a_plain_name_in_the_corpus_is_ingested(layout):
    """The same set-up with a valid key writes documents and store rows: the checks above can fail."""
    root, resources = layout
    before = _tree(root)
    result = _materialize(resources, "good.jsonl")
    assert result.success
    assert resources["store"].query("SELECT shard, n_documents FROM shards") == [("good.jsonl", 2)]
    written = set(_tree(root)) - set(before)
    assert any(p.startswith("home/documents/good.jsonl/") for p in written), sorted(written)
    assert all(p.startswith("home") for p in written), sorted(written)


@pytest.mark.parametrize("key", ["shard-000.jsonl", "b.parquet", "notes.txt", "ü-日本.jsonl", "a..b.jsonl",
                                 "with space.jsonl", "x" * 250 + ".txt"])
def test_plain_file_names_pass(key):
    assert validate_shard_key(key) == key


@pytest.mark.parametrize("key", ["", "..", "../", "x/", "/", "\udc80.jsonl", "x" * 252 + ".jsonl", 7, None])
def test_other_bad_keys_are_refused(key):
    with pytest.raises(InvalidShardKey, match="is refused"):
        validate_shard_key(key)

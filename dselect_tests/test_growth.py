"""Growth that stays right: an earlier-named shard arriving, a shard edited, a shard deleted.

First occurrence is recorded at ingest (table `contents`, sql/005_contents_owner.sql): the owner
of a text is the shard that brought it first in arrival order. After each change only the
sketches whose shard's owned texts changed are rewritten, `density` passes its blocking check,
and every document's density equals a from-scratch build over the same files. A file deleted
from the corpus directory has its partition deleted and its rows retired with a record of why.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from dselect_assets.assets import corpus, density, scoring
from dselect_assets.resources import DataPaths, DuckDBStore, EmbedderResource

WORDS = ("amber", "basalt", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper",
         "kelp", "lagoon", "meadow", "nectar", "onyx", "prairie", "quartz", "reef", "sierra", "tundra")
# A small sketch keeps the test fast; both builds use the same one.
SKETCH = {"rows": 64, "buckets": 1024, "bandwidth": 1.6, "hashes_per_row": 4, "pool": 16, "seed": 3}
SKETCH_RUN = {"ops": {"density_sketch": {"config": SKETCH}}}
DENSITY_RUN = {"ops": {"density": {"config": SKETCH}}}


def texts(prefix: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{prefix} {i}: " + " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), size=9)) + "."
            for i in range(n)]


def write_shard(path: Path, lines: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": f"{path.stem}-{i}", "text": t}) + "\n" for i, t in enumerate(lines)),
                    encoding="utf-8")


def make_resources(home: Path, corpus_dir: Path) -> dict:
    # batch_size=1: a text's vector does not depend on which shard (batch) embedded it, so the
    # incremental and the from-scratch store hold bitwise-equal embeddings of every text.
    return {"paths": DataPaths(home=str(home), corpus_dir=str(corpus_dir)),
            "store": DuckDBStore(database=str(home / "dselect.duckdb")),
            "embedder": EmbedderResource(max_length=64, batch_size=1)}


def shard_assets(instance, resources, shard: str) -> None:
    instance.add_dynamic_partitions("shards", [shard])
    dg.materialize([corpus.documents, scoring.embeddings, density.density_sketch], partition_key=shard,
                   instance=instance, resources=resources, run_config=SKETCH_RUN)


def run_density(instance, resources) -> tuple[dict[str, float], list[str] | None]:
    """density, asserting its blocking check passed; (value by content hash, shards it rebuilt)."""
    result = dg.materialize([density.density], instance=instance, resources=resources, run_config=DENSITY_RUN)
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "sketch_counts_every_document"
    assert check.passed, f"density's blocking check failed: {check.metadata}"
    rebuilt = result.asset_materializations_for_node("density")[0].metadata.get("sketches_rebuilt")
    return density_values(resources["store"]), None if rebuilt is None else list(rebuilt.value)


def density_values(store: DuckDBStore) -> dict[str, float]:
    return dict(store.query(
        "SELECT s.content_hash, s.value FROM scores s JOIN producers p USING (producer_id) WHERE p.kind = 'density'"))


def from_scratch(tmp_path: Path, corpus_dir: Path, name: str) -> dict[str, float]:
    """Every shard file now in the corpus, ingested into a fresh store in name order."""
    home = tmp_path / f"scratch-{name}"
    resources = make_resources(home, corpus_dir)
    with dg.DagsterInstance.ephemeral() as instance:
        for shard in sorted(p.name for p in corpus_dir.iterdir()):
            shard_assets(instance, resources, shard)
        values, _ = run_density(instance, resources)
    assert values.keys() == {h for (h,) in resources["store"].query("SELECT DISTINCT content_hash FROM documents")}
    return values


def sketch_stamps(home: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each shard's sketch file: a rewrite (temp file + rename) changes the inode."""
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (home / "sketches").rglob("*.race") if p.stem != "merged"}


def rewritten(before: dict, after: dict) -> set[str]:
    return {shard for shard, stamp in after.items() if before.get(shard) != stamp}


def owners(store: DuckDBStore) -> dict[str, str]:
    return dict(store.query("SELECT content_hash, shard FROM contents"))


@pytest.mark.heavy
def test_density_after_growth_equals_a_from_scratch_build(tmp_path, instance):
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    resources = make_resources(home, corpus_dir)
    store = resources["store"]
    shared_ab = texts("shared by a and b", 3, seed=1)   # a (arriving later) also holds these
    shared_ac = texts("shared by a and c", 2, seed=2)
    only_b, only_c, only_a = texts("b", 5, seed=3), texts("c", 5, seed=4), texts("a", 4, seed=5)

    # 1. b and c
    write_shard(corpus_dir / "b.jsonl", only_b + shared_ab)
    write_shard(corpus_dir / "c.jsonl", only_c + shared_ac)
    for shard in ("b.jsonl", "c.jsonl"):
        shard_assets(instance, resources, shard)
    values, rebuilt = run_density(instance, resources)
    assert values == from_scratch(tmp_path, corpus_dir, "1")
    assert rebuilt == []
    stamps = sketch_stamps(home)
    assert stamps.keys() == {"b.jsonl", "c.jsonl"}

    # 2. an earlier-named shard arrives holding texts of b and c: they keep their owners
    write_shard(corpus_dir / "a.jsonl", only_a + shared_ab + shared_ac)
    shard_assets(instance, resources, "a.jsonl")
    owner = owners(store)
    assert {owner[h] for h, in store.query("SELECT content_hash FROM documents WHERE shard = 'b.jsonl'")} == {"b.jsonl"}
    values, rebuilt = run_density(instance, resources)
    assert values == from_scratch(tmp_path, corpus_dir, "2")
    assert rewritten(stamps, sketch_stamps(home)) == {"a.jsonl"}  # only the new shard's sketch was written
    assert rebuilt == []
    stamps = sketch_stamps(home)

    # 3. c is edited: a text a also holds is removed (it moves to a), a new text is added
    write_shard(corpus_dir / "c.jsonl", only_c + shared_ac[1:] + texts("c added", 1, seed=6))
    shard_assets(instance, resources, "c.jsonl")
    values, rebuilt = run_density(instance, resources)
    assert values == from_scratch(tmp_path, corpus_dir, "3")
    assert rewritten(stamps, sketch_stamps(home)) == {"a.jsonl", "c.jsonl"}  # c by density_sketch[c], a by density
    assert rebuilt == ["a.jsonl"]
    stamps = sketch_stamps(home)

    # 4. b is deleted: the sensor deletes its partition and retires its rows; b's texts move to a
    (corpus_dir / "b.jsonl").unlink()
    sensor = corpus.build_corpus_sensor(dg.define_asset_job("growth_job", selection=[corpus.documents]))
    tick = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    deletes = [r for r in tick.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert [list(r.partition_keys) for r in deletes] == [["b.jsonl"]]
    assert tick.run_requests == []
    assert store.query("SELECT count(*) FROM documents WHERE shard = 'b.jsonl'") == [(0,)]
    assert store.query("SELECT shard, n_documents, reason FROM retired_shards") == [
        ("b.jsonl", len(only_b) + len(shared_ab), "file deleted from the corpus directory")]
    values, rebuilt = run_density(instance, resources)
    assert values == from_scratch(tmp_path, corpus_dir, "4")
    assert rewritten(stamps, sketch_stamps(home)) == {"a.jsonl"}
    assert rebuilt == ["a.jsonl"]
    assert set(owners(store).values()) == {"a.jsonl", "c.jsonl"}


def ingest(instance, resources, shard: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions("shards", [shard])
    return dg.materialize([corpus.documents], partition_key=shard, instance=instance, resources=resources)


def test_owner_is_the_first_shard_to_arrive_and_moves_when_it_lets_go(workspace, resources, instance):
    _, corpus_dir = workspace
    store = resources["store"]
    write_shard(corpus_dir / "m.jsonl", ["kept", "moves", "only m"])
    write_shard(corpus_dir / "z.jsonl", ["moves", "kept"])
    write_shard(corpus_dir / "a.jsonl", ["moves", "kept", "only a"])
    for shard in ("m.jsonl", "z.jsonl", "a.jsonl"):
        ingest(instance, resources, shard)
    # arrival order, not names: m came first
    assert owners_by_text(store) == {"kept": "m.jsonl", "moves": "m.jsonl", "only m": "m.jsonl", "only a": "a.jsonl"}
    assert dict(store.query("SELECT shard, n_duplicates FROM shards")) == {"m.jsonl": 0, "z.jsonl": 2, "a.jsonl": 2}

    # re-ingested with its rows reordered, m keeps "kept" (at its new row); "moves" goes to the
    # earliest-arrived shard still holding it (z, before a); "only m" leaves the corpus
    write_shard(corpus_dir / "m.jsonl", ["new in m", "kept"])
    ingest(instance, resources, "m.jsonl")
    assert owners_by_text(store) == {"kept": "m.jsonl", "moves": "z.jsonl", "new in m": "m.jsonl", "only a": "a.jsonl"}
    assert store.query("SELECT row_number, doc_id FROM contents WHERE shard = 'm.jsonl' AND n_chars = 4") == [
        (2, "m-1")]
    assert dict(store.query("SELECT doc_id, occurrences FROM contents")) == {"m-1": 3, "z-0": 2, "m-0": 1, "a-2": 1}

    # z retired: its texts move to a (the only other holder of "moves"), m keeps "kept"
    retired = corpus.retire_shard(store, "z.jsonl", "test: removed")
    assert retired["n_documents"] == 2
    assert owners_by_text(store) == {"kept": "m.jsonl", "moves": "a.jsonl", "new in m": "m.jsonl", "only a": "a.jsonl"}
    # contents is exactly the distinct texts of documents, each counted once
    assert store.query("SELECT count(*), sum(occurrences) FROM contents") == store.query(
        "SELECT count(DISTINCT content_hash), count(*) FROM documents")


def owners_by_text(store: DuckDBStore) -> dict[str, str]:
    """Owner shard of each text in `contents`, read back from the owner's documents file."""
    rows = store.query("SELECT c.shard, c.row_number, s.documents_file FROM contents c JOIN shards s USING (shard)")
    return {pl.read_parquet(path).filter(pl.col("row_number") == row)["text"][0]: shard for shard, row, path in rows}


def test_a_deleted_file_is_retired_with_a_record_of_why(workspace, resources, instance):
    _, corpus_dir = workspace
    store = resources["store"]
    write_shard(corpus_dir / "a.jsonl", ["one", "shared"])
    write_shard(corpus_dir / "b.jsonl", ["shared", "two", "three"])
    sensor = corpus.build_corpus_sensor(dg.define_asset_job("retire_job", selection=[corpus.documents]))

    def tick(cursor=None):
        result = sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.DeleteDynamicPartitionsRequest):
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
            else:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    first = tick()
    for request in first.run_requests:
        ingest(instance, resources, request.partition_key)
    (sha_a,) = store.query("SELECT file_sha256 FROM shards WHERE shard = 'a.jsonl'")[0]
    (documents_file,) = store.query("SELECT documents_file FROM shards WHERE shard = 'a.jsonl'")[0]

    # a corpus directory that is missing (unmounted, renamed) is not every file deleted
    corpus_dir.rename(corpus_dir.with_name("away"))
    assert not tick(first.cursor).dynamic_partitions_requests
    corpus_dir.with_name("away").rename(corpus_dir)
    assert store.query("SELECT count(*) FROM documents") == [(5,)]

    (corpus_dir / "a.jsonl").unlink()
    second = tick(first.cursor)
    assert second.run_requests == []
    assert instance.get_dynamic_partitions("shards") == ["b.jsonl"]
    rows = store.query("SELECT shard, file_sha256, n_documents, reason FROM retired_shards")
    assert rows == [("a.jsonl", sha_a, 2, "file deleted from the corpus directory")]
    assert store.query("SELECT DISTINCT shard FROM documents") == [("b.jsonl",)]
    assert store.query("SELECT shard FROM shards") == [("b.jsonl",)]
    assert store.query("SELECT DISTINCT shard FROM contents") == [("b.jsonl",)]  # "shared" moved to b
    assert store.query("SELECT count(*) FROM contents") == [(3,)]
    assert not Path(documents_file).exists()
    # nothing more to retire on the next tick; the file coming back is a new shard again
    third = tick(second.cursor)
    assert not third.dynamic_partitions_requests and third.run_requests == []
    write_shard(corpus_dir / "a.jsonl", ["one", "shared"])
    assert [r.partition_key for r in tick(third.cursor).run_requests] == ["a.jsonl"]
    assert len(store.query("SELECT * FROM retired_shards")) == 1


def test_retiring_a_shard_the_store_never_ingested_changes_nothing(resources):
    assert corpus.retire_shard(resources["store"], "nothing.jsonl", "never ingested") is None
    assert resources["store"].query("SELECT count(*) FROM retired_shards") == [(0,)]

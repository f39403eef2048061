"""The clusters asset leaves, beside each document's cluster and part of it, a copy of the embeddings
ordered by cluster in each shard's file; SemDeDup reads it and selects exactly what it selects
without it."""

import json
import shutil

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq

from dselect_assets.assets import corpus, density, scoring, selection
from dselect_assets.assets.scoring import embedder_producer
from dselect_assets.store import attributes, coverage
from dselect_assets.store import selections as selection_store

TOPICS = ("tides and the moon", "volcanic islands", "bread and yeast", "chess openings", "river deltas")


def write_corpus(corpus_dir) -> list[str]:
    shards = []
    for s in range(2):
        name = f"s{s}.jsonl"
        rows = [{"id": f"{name}-{i}", "text": f"Note {i % 9} on {TOPICS[(i + s) % len(TOPICS)]}, part {i // 9}."}
                for i in range(45)]
        (corpus_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        shards.append(name)
    return shards


def select_semdedup(instance, resources) -> tuple[str, str]:
    result = dg.materialize([selection.selections], partition_key=selection.selection_partition("semdedup@0.40"),
                            instance=instance, resources=resources)
    meta = result.asset_materializations_for_node("selections")[0].metadata
    return meta["selection_id"].value, meta["export_sha256"].value


def test_clusters_copy_the_embeddings_in_cluster_order_and_semdedup_selects_the_same(workspace, resources, instance,
                                                                                      monkeypatch):
    from dselect_assets.core.selection import samplers

    # clusters of ~22 documents count as large here, so each gets parts of ~5
    monkeypatch.setattr(samplers, "PAIRWISE_ROWS", 10)
    monkeypatch.setattr(samplers, "PAIRWISE_PART_ROWS", 5)
    _, corpus_dir = workspace
    shards = write_corpus(corpus_dir)
    instance.add_dynamic_partitions("shards", shards)
    for shard in shards:
        dg.materialize([corpus.documents, scoring.embeddings], partition_key=shard, instance=instance,
                       resources=resources)
    dg.materialize([selection.eval_sets, density.clusters], instance=instance, resources=resources,
                   run_config={"ops": {"clusters": {"config": {"n_clusters": 4}}}})
    store, root = resources["store"], resources["store"].attributes
    embedding = embedder_producer(resources["embedder"])
    with store.connect(read_only=True) as con:
        clustering, _ = selection_store.current_clustering(con)
        owned = {shard: coverage.owned_hashes(con, shard) for shard in shards}
    ordered = density.cluster_ordered_embeddings(clustering)

    units = []  # (cluster, part) of every document
    for shard in shards:
        (hash_file,) = attributes.producer_dir(root, ordered).joinpath(shard).glob("*.parquet")
        keys = pq.read_table(hash_file)["hash"].to_pylist()
        # the shard's owned texts, each once, ordered by cluster
        assert sorted(keys) == sorted(attributes.hash_keys(owned[shard]).to_pylist())
        by_key = {k: h for k, h in zip(attributes.hash_keys(owned[shard]).to_pylist(), owned[shard].to_pylist())}
        in_file = [by_key[k] for k in keys]
        with attributes.DocumentSignals(root, in_file) as signals:
            cluster, part, assigned = selection_store.clusters_of(signals, clustering, with_parts=True)
        assert assigned.all() and (np.diff(cluster) >= 0).all() and len(set(cluster)) > 1
        units += list(zip(cluster.tolist(), part.tolist()))
        # with the vectors the embedder wrote, bit for bit
        with duckdb.connect() as con:
            np.testing.assert_array_equal(attributes.read_vectors(con, root, ordered, in_file),
                                          attributes.read_vectors(con, root, embedding, in_file))

    # every cluster over PAIRWISE_ROWS is split, across the shards, into parts of at most that many
    sizes = np.unique(np.array(units), axis=0, return_counts=True)[1]
    assert len(sizes) > len({c for c, _ in units}) and sizes.max() <= 10

    with_copy = select_semdedup(instance, resources)
    shutil.rmtree(attributes.producer_dir(root, ordered))
    assert select_semdedup(instance, resources) == with_copy

    # a new clustering replaces the old one's copy
    dg.materialize([density.clusters], instance=instance, resources=resources,
                   run_config={"ops": {"clusters": {"config": {"n_clusters": 3}}}})
    with store.connect(read_only=True) as con:
        newer, _ = selection_store.current_clustering(con)
    assert attributes.producer_glob(root, density.cluster_ordered_embeddings(newer)) is not None
    assert not attributes.producer_dir(root, ordered).exists()

"""Coverage signals: per-shard RACE sketches, their merged density, and k-means clusters.

Each shard's sketch counts the texts that shard owns in `contents` (their first
occurrence, recorded at ingest), so the merged sketch counts every distinct text
once. Sketches are additive: a new shard adds one file, and `density` merges
files rather than re-reading old embeddings to build the sketch.

Ownership moves when a shard is edited or removed, so each sketch is recorded
(table density_sketch_sets) with the owned set it counts; `density` compares every
shard's record with the shard's owned set now and rebuilds only the stale ones from
the stored embeddings before merging, which keeps it equal to a from-scratch build.
"""


import hashlib
import shutil

import dagster as dg
import numpy as np
import pyarrow as pa

from dselect_assets.assets import checks
from dselect_assets.assets.common import CATALOGUE_POOL, eager_after_checks, record_run, register_artifact, shards
from dselect_assets.assets.plots import histogram_markdown, histogram_png, png_markdown, summary
from dselect_assets.assets.scoring import embedder_producer, load_model, register_producer
from dselect_assets.assets.shard_reader import load_embeddings
from dselect_assets.core.density import clustering, race_sketch
from dselect_assets.core.hashing import hash_set_digest, input_version
from dselect_assets.core.hashing import producer_id as make_producer_id
from dselect_assets.core.ingest.shard_keys import validate_shard_key
from dselect_assets.core.selection import samplers
from dselect_assets.resources import DataPaths, DuckDBStore, EmbedderResource
from dselect_assets.store import attributes, catalogue, coverage
from dselect_assets.store import selections as selection_store


COVERAGE_VERSION = "1"


class SketchConfig(dg.Config):
    rows: int = race_sketch.DEFAULT_ROWS
    buckets: int = race_sketch.DEFAULT_BUCKETS
    bandwidth: float = race_sketch.DEFAULT_BANDWIDTH
    hashes_per_row: int = race_sketch.DEFAULT_HASHES_PER_ROW
    pool: int = race_sketch.DEFAULT_POOL or 0  # 0: fresh projections for every row
    seed: int = race_sketch.DEFAULT_SEED


def sketch_producer(config: SketchConfig, embedding_producer: str) -> str:
    return make_producer_id("density", embedder=embedding_producer, **config.model_dump())


def first_occurrences(store: DuckDBStore, shard: str) -> pa.Array:
    with store.connect(read_only=True) as con:
        return coverage.owned_hashes(con, shard)


def owned_version(hashes) -> str:
    """Names the set of texts a sketch counts."""
    return hash_set_digest(hashes)


def sketch_path(paths: DataPaths, producer: str, shard: str):
    return paths.dir("sketches", producer.replace(":", "-")) / f"{validate_shard_key(shard)}.race"


def build_shard_sketch(
    config: SketchConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
    shard: str,
    run_id: str,
    hashes: pa.Array | None = None,
) -> tuple[race_sketch.RaceSketch, str]:
    """Sketch the texts `shard` owns from their stored embeddings, write it, and record the owned
    set it counts; returns the sketch and its file's sha256. Used by density_sketch and density."""
    embedding_producer = embedder_producer(embedder)
    producer = sketch_producer(config, embedding_producer)
    if hashes is None:
        hashes = first_occurrences(store, shard)
    sketch = race_sketch.RaceSketch.empty(
        dim=load_model(embedder).dim,
        rows=config.rows,
        buckets=config.buckets,
        bandwidth=config.bandwidth,
        seed=config.seed,
        embedder_id=embedding_producer,
        hashes_per_row=config.hashes_per_row,
        pool=config.pool or None,
    )
    if len(hashes):
        sketch.add(load_embeddings(store, embedding_producer, hashes, shard))
    out_file = sketch.save(sketch_path(paths, producer, shard))
    with store.transaction() as con:
        sketch_sha = register_artifact(con, out_file, "density_sketch", run_id, producer, shard, sketch.n_docs)
        coverage.record_sketch(con, producer, shard, owned_version(hashes), sketch.n_docs, str(out_file),
                               sketch_sha, run_id)
    return sketch, sketch_sha


def current_shard_sketch(
    config: SketchConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
    shard: str,
    run_id: str,
) -> tuple[race_sketch.RaceSketch, bool]:
    """The shard's sketch of the texts it owns now: the stored one when it was recorded for this
    owned set, else rebuilt. Returns (sketch, rebuilt). A corrupt file of a current sketch fails."""
    embedding_producer = embedder_producer(embedder)
    producer = sketch_producer(config, embedding_producer)
    hashes = first_occurrences(store, shard)
    with store.connect(read_only=True) as con:
        record = coverage.sketch_record(con, producer, shard)
    path = sketch_path(paths, producer, shard)
    fresh = record is not None and record == (owned_version(hashes), len(hashes), str(path))
    if fresh and path.exists():
        try:
            part = race_sketch.RaceSketch.load(path, expected={"embedder_id": embedding_producer})
        except race_sketch.SketchFileError as exc:
            raise dg.Failure(
                f"density sketch of shard {shard} is unusable: {exc}; delete it and re-materialize "
                f"density_sketch[{shard}] to rebuild it from the shard's embeddings"
            ) from exc
        if part.n_docs == len(hashes):
            return part, False
    return build_shard_sketch(config, embedder, store, paths, shard, run_id, hashes)[0], True


@dg.asset(
    pool=CATALOGUE_POOL,
    partitions_def=shards,
    deps=["embeddings"],
    group_name="coverage",
    code_version=COVERAGE_VERSION,
    kinds={"numpy"},
    description="RACE sketch (R x B p-stable LSH counts) of the texts this shard owns (their first "
    "occurrence, recorded at ingest), with the owned set it counts (table density_sketch_sets).",
)
def density_sketch(
    context: dg.AssetExecutionContext,
    config: SketchConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    shard = validate_shard_key(context.partition_key)
    producer = sketch_producer(config, embedder_producer(embedder))
    sketch, sketch_sha = build_shard_sketch(config, embedder, store, paths, shard, context.run.run_id)
    out_file = sketch_path(paths, producer, shard)
    with store.transaction() as con:
        record_run(con, context, config.model_dump(), producer, outputs={"n_docs": sketch.n_docs})
    return dg.MaterializeResult(
        metadata={
            "documents_sketched": sketch.n_docs,
            "sketch_file": dg.MetadataValue.path(str(out_file)),
            "rows_x_buckets": f"{config.rows} x {config.buckets}",
            "producer_id": producer,
        },
        data_version=dg.DataVersion(sketch_sha),
    )


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["density_sketch"],
    group_name="coverage",
    code_version=COVERAGE_VERSION,
    automation_condition=eager_after_checks(),
    kinds={"duckdb"},
    check_specs=[checks.spec("sketch_counts_every_document", "density", "merged sketch count == distinct documents")],
    description="Kernel density of every document from the merged shard sketches (paper Algorithm 2, pass 2).",
)
def density(
    context: dg.AssetExecutionContext,
    config: SketchConfig,
    embedder: EmbedderResource,
    store: DuckDBStore,
    paths: DataPaths,
) -> dg.MaterializeResult:
    embedding_producer = embedder_producer(embedder)
    producer = sketch_producer(config, embedding_producer)
    sketch_dir = paths.dir("sketches", producer.replace(":", "-"))
    with store.connect(read_only=True) as con:
        shard_names = coverage.owner_shards(con)
    merged, rebuilt = None, []
    for shard in shard_names:
        # a shard whose owned texts changed since its sketch was written (a shard before it in
        # arrival order edited or removed, a sketch never built) is rebuilt from its embeddings
        part, was_rebuilt = current_shard_sketch(config, embedder, store, paths, shard, context.run.run_id)
        if was_rebuilt:
            rebuilt.append(shard)
        merged = part if merged is None else merged.merge(part)
    if rebuilt:
        context.log.info(f"rebuilt the density sketches of {len(rebuilt)} shards whose owned texts changed: {rebuilt}")
    with store.connect(read_only=True) as con:
        n_contents = coverage.count_contents(con)
    if merged is None:
        raise dg.Failure("the corpus has no documents to estimate density over")
    merged_file = merged.save(sketch_dir / "merged.race")
    register_producer(store, producer, "density", {"embedder": embedding_producer, **config.model_dump()},
                      f"density:{embedding_producer}")
    # Query shard by shard (memory bounded by the largest shard's embeddings) into one file that
    # replaces the previous densities whole: a crash leaves the previous file as it was.
    parts: list[np.ndarray] = []

    def shard_tables():
        for shard in shard_names:
            hashes = first_occurrences(store, shard)
            values = merged.query(load_embeddings(store, embedding_producer, hashes, shard))
            parts.append(np.asarray(values, dtype=np.float64))
            yield attributes.score_table(producer, hashes, parts[-1])

    attributes.replace_corpus_wide(store.attributes, producer, shard_tables())
    values = np.concatenate(parts)
    with store.transaction() as con:
        register_artifact(con, merged_file, "density_sketch_merged", context.run.run_id, producer, None, merged.n_docs)
        record_run(con, context, config.model_dump(), producer, outputs={"n_docs": merged.n_docs})
    png = histogram_png(values, "density (RACE sketch)", paths.dir("reports", "density") / "density.png")
    return dg.MaterializeResult(
        metadata={
            "documents": int(values.size),
            "shards_merged": len(shard_names),
            "sketches_rebuilt": dg.MetadataValue.json(rebuilt),
            "producer_id": producer,
            "summary": dg.MetadataValue.json(summary(values)),
            "histogram": dg.MetadataValue.md(histogram_markdown(values)),
            "histogram_plot": png_markdown(png, "density histogram"),
        },
        data_version=dg.DataVersion(f"{producer}:{hashlib.sha256(values.tobytes()).hexdigest()}"),
        check_results=[checks.sketch_counts_corpus(merged.n_docs, n_contents)],
    )


def cluster_ordered_embeddings(clustering_id: str) -> str:
    """The producer id of a clustering's copy of the embeddings: each shard's vectors in one file,
    ordered by cluster. SemDeDup reads whole clusters a few at a time; in the embedder's files a
    cluster's members lie a row here and a row there (at 10M documents one read per row, about
    100 s), in the copy they lie together in each shard's file."""
    return make_producer_id("embedding", ordered_by=clustering_id)


class ClusterConfig(dg.Config):
    n_clusters: int = 0  # 0: chosen from the corpus size
    seed: int = 0


@dg.asset(
    pool=CATALOGUE_POOL,
    deps=["embeddings"],
    group_name="coverage",
    code_version=COVERAGE_VERSION,
    automation_condition=eager_after_checks(),
    kinds={"parquet"},
    description="faiss k-means (trained on a seeded sample, assigned shard by shard) over the embeddings; "
    "each document's cluster, its part of a large cluster (a second k-means within it, which SemDeDup "
    "compares within) and distance to its centroid, one attribute file per clustering "
    "(used by SemDeDup and SSL Prototypes).",
)
def clusters(
    context: dg.AssetExecutionContext, config: ClusterConfig, embedder: EmbedderResource, store: DuckDBStore
) -> dg.MaterializeResult:
    embedding_producer = embedder_producer(embedder)
    with store.connect(read_only=True) as con:
        hashes = coverage.corpus_hashes(con)
        owners = coverage.owner_shards(con)
    n, version = len(hashes), input_version(hashes)
    k = config.n_clusters or clustering.default_k(n)
    if not 1 <= k <= n:
        raise dg.Failure(description=f"cannot make {k} clusters of {n} documents")
    # Train on a seeded sample, then assign shard by shard: memory holds the sample and one
    # shard's embeddings, never the corpus's (of every document only its hash, cluster and
    # distance, 28 bytes, kept until the large clusters' parts are known).
    sample = load_embeddings(store, embedding_producer,
                             hashes.take(pa.array(clustering.training_sample(n, k, config.seed))))
    # k == n: every document is its own centroid (faiss would refuse to train).
    centroids = sample if k == n else clustering.fit_centroids(sample, k, seed=config.seed)
    del sample, hashes  # the shards' owned sets below cover the corpus again
    clustering_id = make_producer_id(
        "kmeans", embedder=embedding_producer, k=k, seed=config.seed,
        input_version=version, parts_over=samplers.PAIRWISE_ROWS, part_rows=samplers.PAIRWISE_PART_ROWS,
    )
    sizes = np.zeros(k, dtype=np.int64)
    ordered = cluster_ordered_embeddings(clustering_id)
    shutil.rmtree(attributes.producer_dir(store.attributes, ordered), ignore_errors=True)  # a killed run's part

    copies = []  # per shard: its copy and where each cluster's rows start in it
    tables = []  # per shard: hash, cluster and distance of its rows, in the copy's order
    for shard in owners:
        owned = first_occurrences(store, shard)
        vectors = load_embeddings(store, embedding_producer, owned, shard)
        assignment, distance = clustering.assign(centroids, vectors)
        counts = np.bincount(assignment, minlength=k)
        sizes += counts
        by_cluster = np.argsort(assignment, kind="stable")
        # as exact as the embedder's files: float32 vectors of a migrated store stay unrounded
        dtype = attributes.VECTOR_DTYPE if np.array_equal(vectors, vectors.astype(attributes.VECTOR_DTYPE)) \
            else np.float32
        copy = attributes.write_vectors(store.attributes, ordered, shard, owned.take(pa.array(by_cluster)),
                                        vectors[by_cluster], dtype)
        copies.append((attributes.VectorChunk(copy), np.r_[0, np.cumsum(counts)]))
        tables.append(pa.table({"hash": attributes.hash_keys(owned).take(pa.array(by_cluster)),
                                "cluster": pa.array(assignment[by_cluster].astype(np.int32)),
                                "distance": pa.array(distance[by_cluster].astype(np.float64))}))
    # Clusters grow with the corpus once k stops growing, and SemDeDup compares every pair within
    # a part of a cluster: each large one is split here, once, from the copy, where its members
    # lie together in each shard (on unit rows, as SemDeDup compares them).
    parts = clustering.split_large_clusters(
        [starts for _, starts in copies], lambda s, start, stop: samplers.unit_rows(copies[s][0].rows(start, stop)),
        max_rows=samplers.PAIRWISE_ROWS, part_rows=samplers.PAIRWISE_PART_ROWS)

    with store.connect(read_only=True) as con:
        previous = selection_store.current_clustering(con)
    # One corpus-wide attribute file, written a shard at a time, then named the current clustering
    # (resource "clusters"), so a selection checks the clusters match the embeddings it reads.
    attributes.replace_corpus_wide(store.attributes, clustering_id,
                                   (table.append_column("part", pa.array(part)) for table, part in zip(tables, parts)))
    register_producer(store, clustering_id, "clusters", {"embedder": embedding_producer, "k": k, "seed": config.seed},
                      resource_as=catalogue.CLUSTERS_RESOURCE)
    with store.transaction() as con:
        record_run(con, context, config.model_dump(), clustering_id, outputs={"k": k, "n": n})
    if previous is not None and previous[0] != clustering_id:
        # One clustering at a time, as before; selections (same pool) read only the current one.
        for gone in (previous[0], cluster_ordered_embeddings(previous[0])):
            shutil.rmtree(attributes.producer_dir(store.attributes, gone), ignore_errors=True)
    return dg.MaterializeResult(
        metadata={
            "documents": n,
            "clusters": k,
            "clusters_split": int(np.count_nonzero(sizes > samplers.PAIRWISE_ROWS)),
            "clustering_id": clustering_id,
            "cluster_size": dg.MetadataValue.json(summary(sizes.astype(float))),
            "largest_clusters": dg.MetadataValue.md(
                histogram_markdown(sizes.astype(float))
            ),
        },
        data_version=dg.DataVersion(clustering_id),  # hashes the embedder, k, seed and input set
    )

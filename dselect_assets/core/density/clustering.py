"""faiss k-means over embeddings, for SemDeDup and SSL Prototypes.

Seeded and single-machine deterministic: the training sample (at most
POINTS_PER_CENTROID points per centroid) and faiss's initial centroids come from
the seed, assignment is an exact search, and the centroid update is partitioned by
centroid, not by thread. Training on a sample and assigning in pieces is what lets
the `clusters` asset hold one shard's embeddings at a time, not the corpus's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # float32 [k, dim]
    assignment: np.ndarray  # int64 [n]: cluster of each point
    distance: np.ndarray  # float32 [n]: L2 distance of each point to its centroid

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


# Above a million documents sqrt(n) clusters would make assignment cost grow as n^1.5; at
# 1,024 a cluster of a 10M corpus holds ~10k documents (SemDeDup compares a large one within
# parts of it: core/selection/samplers.py PAIRWISE_ROWS).
MAX_DEFAULT_K = 1024
# faiss trains on at most this many points per centroid (its own default): the sample the
# caller loads, so training memory is bounded by k, not by the corpus.
POINTS_PER_CENTROID = 256


def default_k(n: int) -> int:
    """~sqrt(n) clusters (enough for local structure, ~sqrt(n) points each), at most MAX_DEFAULT_K."""
    if n < 1:
        raise ValueError(f"cannot cluster {n} points")
    return max(1, min(n, round(math.sqrt(n)), MAX_DEFAULT_K))


def training_sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of the points k-means trains on: all of them up to POINTS_PER_CENTROID * k,
    else a seeded sample of that many."""
    if n <= POINTS_PER_CENTROID * k:
        return np.arange(n)
    rng = np.random.default_rng([seed, k])
    return np.sort(rng.choice(n, size=POINTS_PER_CENTROID * k, replace=False))


def _checked(embeddings: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, dim] array, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
        raise ValueError(f"embedding row {bad} has a non-finite value")
    return x


def fit_centroids(sample: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, spherical: bool = False) -> np.ndarray:
    """float32 [k, dim] centroids of faiss k-means over `sample` (k < len(sample))."""
    x = _checked(sample)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0] - 1}] for {x.shape[0]} training points, got {k}")
    model = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        verbose=False,
        # faiss warns below 39 points per centroid; sqrt(n) clusters are intended
        min_points_per_centroid=1,
        max_points_per_centroid=POINTS_PER_CENTROID,
    )
    model.train(x)
    return np.ascontiguousarray(model.centroids, dtype=np.float32)


def assign(centroids: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid, L2 distance to it) of each embedding: an exact search, so a point's
    cluster does not depend on which other points are assigned with it."""
    x = _checked(embeddings)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sq_dist, nearest = index.search(x, 1)
    return nearest[:, 0].astype(np.int64), np.sqrt(np.maximum(sq_dist[:, 0], 0.0)).astype(np.float32)


def split_cluster(vectors: np.ndarray, *, max_rows: int, part_rows: int, seed: int = 0) -> np.ndarray:
    """int32 part of each row of one cluster: none over `max_rows` rows if k-means can split it.

    A cluster over max_rows is split by a seeded k-means over its own rows into parts of about
    `part_rows`, and a part still over max_rows is split again; one k-means cannot split stays
    whole.
    """
    part = np.zeros(len(vectors), dtype=np.int32)
    if len(vectors) <= max_rows:
        return part
    k = math.ceil(len(vectors) / part_rows)
    assignment, _ = assign(fit_centroids(vectors[training_sample(len(vectors), k, seed)], k, seed=seed), vectors)
    if np.all(assignment == assignment[0]):
        return part
    parts = 0
    for label in np.unique(assignment):
        rows = np.flatnonzero(assignment == label)
        within = split_cluster(vectors[rows], max_rows=max_rows, part_rows=part_rows, seed=seed + 1)
        part[rows] = parts + within
        parts += int(within.max()) + 1
    return part


def split_large_clusters(cluster_starts: list[np.ndarray], read: Callable[[int, int, int], np.ndarray], *,
                         max_rows: int, part_rows: int, group_rows: int = 65536) -> list[np.ndarray]:
    """split_cluster's parts of every cluster over `max_rows`, its members gathered from every shard.

    Shard s's rows are sorted by cluster, cluster c's being rows cluster_starts[s][c] to
    cluster_starts[s][c + 1]; read(s, start, stop) gives those rows' vectors. Consecutive large
    clusters are read together, about `group_rows` rows at a time, one read per shard. Returns
    the part of each row of each shard (0 in a cluster left whole); cluster c is split with seed c.
    """
    sizes = np.sum([np.diff(starts) for starts in cluster_starts], axis=0)
    parts = [np.zeros(int(starts[-1]), dtype=np.int32) for starts in cluster_starts]
    large = np.flatnonzero(sizes > max_rows)
    first = 0
    while first < len(large):
        last = first + 1  # the group: large clusters large[first:last], consecutive ids
        while last < len(large) and large[last] == large[last - 1] + 1 and \
                sizes[large[first]:large[last] + 1].sum() <= group_rows:
            last += 1
        lo, hi = int(large[first]), int(large[last - 1]) + 1
        pieces = [(s, read(s, int(starts[lo]), int(starts[hi]))) for s, starts in enumerate(cluster_starts)
                  if starts[hi] > starts[lo]]
        for c in range(lo, hi):
            spans = [(s, cluster_starts[s][c], cluster_starts[s][c + 1]) for s, _ in pieces]
            members = np.concatenate([piece[start - cluster_starts[s][lo]:stop - cluster_starts[s][lo]]
                                      for (s, start, stop), (_, piece) in zip(spans, pieces)])
            part = split_cluster(members, max_rows=max_rows, part_rows=part_rows, seed=c)
            at = 0
            for s, start, stop in spans:
                parts[s][start:stop] = part[at:at + stop - start]
                at += stop - start
        first = last
    return parts


def kmeans(
    embeddings: np.ndarray,
    k: int | None = None,
    *,
    seed: int = 0,
    niter: int = 20,
    spherical: bool = False,
) -> KMeansResult:
    """Cluster `embeddings` [n, dim] into k groups (k defaults to `default_k(n)`), all in memory;
    the `clusters` asset does the same with the sample and the assignment read shard by shard.

    ``spherical`` renormalizes centroids to unit length after each step
    (cosine k-means), which suits L2-normalized sentence embeddings.
    """
    x = _checked(embeddings)
    n = x.shape[0]
    k = default_k(n) if k is None else int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if k == n:
        # every point is its own cluster; faiss would refuse to train
        return KMeansResult(x.copy(), np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float32))
    centroids = fit_centroids(x[training_sample(n, k, seed)], k, seed=seed, niter=niter, spherical=spherical)
    assignment, distance = assign(centroids, x)
    return KMeansResult(centroids=centroids, assignment=assignment, distance=distance)

"""faiss k-means over embeddings, for SemDeDup and SSL Prototypes.

Seeded and single-machine deterministic: faiss's CPU k-means picks its initial
centroids (and any training subsample) from the seed, assignment is an exact
search, and the centroid update is partitioned by centroid, not by thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def default_k(n: int) -> int:
    """~sqrt(n) clusters: enough for local structure, ~sqrt(n) points each."""
    if n < 1:
        raise ValueError(f"cannot cluster {n} points")
    return max(1, min(n, round(math.sqrt(n))))


def kmeans(
    embeddings: np.ndarray,
    k: int | None = None,
    *,
    seed: int = 0,
    niter: int = 20,
    spherical: bool = False,
) -> KMeansResult:
    """Cluster `embeddings` [n, dim] into k groups (k defaults to `default_k(n)`).

    ``spherical`` renormalizes centroids to unit length after each step
    (cosine k-means), which suits L2-normalized sentence embeddings.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, dim] array, got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
        raise ValueError(f"embedding row {bad} has a non-finite value")
    n, dim = x.shape
    k = default_k(n) if k is None else int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if k == n:
        # every point is its own cluster; faiss would refuse to train
        return KMeansResult(x.copy(), np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float32))
    model = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        seed=seed,
        spherical=spherical,
        verbose=False,
        # faiss warns below 39 points per centroid; sqrt(n) clusters are intended
        min_points_per_centroid=1,
    )
    model.train(x)
    centroids = np.ascontiguousarray(model.centroids, dtype=np.float32)
    index = faiss.IndexFlatL2(dim)
    index.add(centroids)
    sq_dist, nearest = index.search(x, 1)
    return KMeansResult(
        centroids=centroids,
        assignment=nearest[:, 0].astype(np.int64),
        distance=np.sqrt(np.maximum(sq_dist[:, 0], 0.0)).astype(np.float32),
    )

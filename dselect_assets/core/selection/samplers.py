"""The paper's data samplers as plain functions over per-document signals.

Every sampler is ``(inputs: SamplerInputs, rate: float, seed: int) -> indices``:
sorted, unique row indices into the corpus, exactly ``target_size(n, rate)`` of
them (every sampler here honours the rate exactly; SemDeDup does so by choosing
its eps, see `semdedup`). Randomness comes only from
``numpy.random.Generator(PCG64(seed))``, so a (sampler, inputs, rate, seed)
always gives the same selection; deterministic rankings break ties with it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from dselect_assets.core.selection import paper

Sampler = Callable[["SamplerInputs", float, int], np.ndarray]


class EmbeddingRows(Protocol):
    """Embeddings read on demand, so a sampler never needs the whole corpus's vectors at once
    (at 10M documents of 384 floats they are 15 GB). The store's reader is
    store.attributes.VectorRows; an array in memory is wrapped in ArrayRows."""

    n: int
    dim: int

    def read(self, positions: np.ndarray) -> np.ndarray: ...  # [len(positions), dim] float32, in that order
    def storage_order(self) -> np.ndarray: ...  # every position, in the order cheapest to read
    def take(self, rows: np.ndarray) -> EmbeddingRows: ...  # position i is position rows[i] of this


class ArrayRows:
    """EmbeddingRows over an array already in memory."""

    def __init__(self, embeddings: np.ndarray):
        self.array = embeddings
        self.n, self.dim = embeddings.shape

    def read(self, positions: np.ndarray) -> np.ndarray:
        return self.array[positions]

    def storage_order(self) -> np.ndarray:
        return np.arange(self.n)

    def take(self, rows: np.ndarray) -> ArrayRows:
        return ArrayRows(self.array[rows])


@dataclass
class SamplerInputs:
    """Per-document signals, row i of each array describing document i.

    density: kernel density score (> 0; e.g. the RACE sketch, which counts a
    document itself, so it is >= 1). quality: higher is better (Ask-LLM
    P(yes)). perplexity: lower is more likely. clusters: k-means assignment;
    centroids: [k, dim] (recomputed as cluster means of `embeddings` if absent);
    parts: the part of its cluster each document lies in (the clustering's split of
    large clusters, which SemDeDup compares within; split here if absent).
    """

    n: int
    embeddings: np.ndarray | None = None
    density: np.ndarray | None = None
    quality: np.ndarray | None = None
    perplexity: np.ndarray | None = None
    clusters: np.ndarray | None = None
    centroids: np.ndarray | None = None
    parts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if int(self.n) < 1:
            raise ValueError(f"a corpus to sample from needs n >= 1 documents, got n={self.n}")
        self.n = int(self.n)
        for name in ("density", "quality", "perplexity"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (self.n,):
                raise ValueError(f"{name} must have shape [{self.n}], got {list(value.shape)}")
            bad = np.flatnonzero(~np.isfinite(value))
            if bad.size:
                raise ValueError(f"{name} of row {int(bad[0])} is not finite ({value[bad[0]]}); {bad.size} such rows")
            setattr(self, name, value)
        if self.embeddings is not None and not hasattr(self.embeddings, "read"):
            emb = np.asarray(self.embeddings, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != self.n:
                raise ValueError(f"embeddings must have shape [{self.n}, dim], got {list(emb.shape)}")
            self.embeddings = ArrayRows(emb)
        if self.embeddings is not None and self.embeddings.n != self.n:
            raise ValueError(f"embeddings must have {self.n} rows, got {self.embeddings.n}")
        if self.clusters is not None:
            clusters = np.asarray(self.clusters)
            if clusters.shape != (self.n,) or not np.issubdtype(clusters.dtype, np.integer):
                raise ValueError(
                    f"clusters must be integer with shape [{self.n}], got {clusters.dtype} {list(clusters.shape)}"
                )
            if clusters.min() < 0:
                raise ValueError(f"cluster id of row {int(np.argmin(clusters))} is negative")
            self.clusters = clusters.astype(np.int64)
        if self.parts is not None:
            parts = np.asarray(self.parts)
            if self.clusters is None or parts.shape != (self.n,) or not np.issubdtype(parts.dtype, np.integer):
                raise ValueError(f"parts must be integer with shape [{self.n}], beside clusters; "
                                 f"got {parts.dtype} {list(parts.shape)}")
            if parts.min() < 0:
                raise ValueError(f"part id of row {int(np.argmin(parts))} is negative")
            self.parts = parts.astype(np.int64)
        if self.centroids is not None:
            self.centroids = np.asarray(self.centroids, dtype=np.float32)

    def need(self, sampler: str, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"sampler {sampler!r} needs {', '.join(missing)}, which the inputs lack")


def target_size(n: int, rate: float) -> int:
    """round(rate * n) (halves up), at least 1; rate must lie in (0, 1]."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"rate must be a number in (0, 1], got {rate!r}")
    if not (0.0 < float(rate) <= 1.0):
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    return max(1, min(n, math.floor(float(rate) * n + 0.5)))


def scorable_rows(n: int, **scores: np.ndarray | None) -> np.ndarray:
    """Indices of the rows whose given scores are all finite.

    A document the judge or LM could not score (NaN: too short to tokenize, say)
    has no rank, so score-based samplers choose among the others; the caller
    counts the ones left out.
    """
    ok = np.ones(n, dtype=bool)
    for value in scores.values():
        if value is not None:
            ok &= np.isfinite(np.asarray(value, dtype=np.float64))
    return np.flatnonzero(ok)


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _top(keys: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the k largest keys; exact ties broken at random (by a uniform draw per
    key, the smaller draw first): the first k of np.lexsort((draws, -keys)).

    Found by partition rather than by that sort, which cost 5.5 s at 10M keys against 0.27 s
    at 1M; only the keys tied at the k-th largest are sorted, by their draws.
    """
    n = keys.shape[0]
    draws = rng.random(n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    kth = np.partition(keys, n - k)[n - k]
    above = np.flatnonzero(keys > kth)
    tied = np.flatnonzero(keys == kth)
    chosen = tied[np.argsort(draws[tied], kind="stable")[: k - above.size]]
    return np.sort(np.concatenate([above, chosen]))


def _gumbel_top(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices sampled without replacement with probability proportional to exp(log_weights).

    Gumbel-top-k: the k largest log w_i + G_i (G_i iid standard Gumbel) are
    distributed as k successive draws without replacement, each ∝ w_i among the
    rest (Plackett-Luce), the same as Efraimidis-Spirakis keys u^(1/w).
    """
    return _top(log_weights + rng.gumbel(size=log_weights.shape[0]), k, rng)


# ---------------------------------------------------------------- samplers


def random_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Uniform without replacement."""
    k = target_size(inputs.n, rate)
    return np.sort(_rng(seed).choice(inputs.n, size=k, replace=False))


def _positive_density(inputs: SamplerInputs, sampler: str) -> np.ndarray:
    inputs.need(sampler, "density")
    density = inputs.density
    bad = np.flatnonzero(density <= 0)
    if bad.size:
        raise ValueError(f"{sampler}: density of row {int(bad[0])} is {density[bad[0]]}; densities must be > 0")
    return density


def density_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Inverse propensity sampling (paper Algorithm 2): keep x with probability ∝ 1/density(x).

    Without replacement (Gumbel-top-k on -log density), so sparse regions are
    kept and dense regions thinned, flattening the sample toward uniform over
    the embedding space. Weighting by density itself would do the opposite.
    """
    density = _positive_density(inputs, "density")
    return _gumbel_top(-np.log(density), target_size(inputs.n, rate), _rng(seed))


def density_topk_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Keep the densest documents (the paper's losing 'top-k' ablation)."""
    density = _positive_density(inputs, "density_topk")
    return _top(density, target_size(inputs.n, rate), _rng(seed))


def density_bottomk_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Keep the sparsest documents (the paper's losing 'bottom-k' ablation)."""
    density = _positive_density(inputs, "density_bottomk")
    return _top(-density, target_size(inputs.n, rate), _rng(seed))


def perplexity_filter_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Keep the documents the LM finds most likely (lowest perplexity)."""
    inputs.need("perplexity_filter", "perplexity")
    return _top(-inputs.perplexity, target_size(inputs.n, rate), _rng(seed))


def ask_llm_topk_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Keep the documents the judge scores highest (paper Algorithm 1)."""
    inputs.need("ask_llm_topk", "quality")
    return _top(inputs.quality, target_size(inputs.n, rate), _rng(seed))


def ask_llm_density_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """Quality gate, then coverage: Ask-LLM top sqrt(rate) of the corpus, then IPS inside it.

    Rule: keep the top m = round(sqrt(rate) * n) documents by quality (at least
    k), then draw k = round(rate * n) of them without replacement with
    probability ∝ 1/density (as `density_sampler`). Each step keeps a
    sqrt(rate) share, so the rejection is split evenly (in log terms) between
    "is it informative" and "is it redundant": at rate 0.2 the gate keeps the
    best 45% and IPS thins that to 20%, dropping near-duplicate good text
    rather than unique good text; at rate 1 everything is kept.
    """
    inputs.need("ask_llm_density", "quality", "density")
    density = _positive_density(inputs, "ask_llm_density")
    k = target_size(inputs.n, rate)
    pool_size = max(k, min(inputs.n, math.floor(math.sqrt(float(rate)) * inputs.n + 0.5)))
    rng = _rng(seed)
    pool = _top(inputs.quality, pool_size, rng)
    return np.sort(pool[_gumbel_top(-np.log(density[pool]), k, rng)])


ROW_BLOCK = 65536  # rows read per step when every embedding is visited
GROUP_ROWS = 65536  # SemDeDup reads whole clusters, about this many rows at a time (100 MB at 384-d)
# SemDeDup compares every pair within a cluster of up to PAIRWISE_ROWS documents; a larger one
# is split into parts of about PAIRWISE_PART_ROWS (clustering.split_cluster), by the clusters
# asset or, without its parts, here.
PAIRWISE_ROWS = 2048
PAIRWISE_PART_ROWS = 1024


def unit_rows(x: np.ndarray) -> np.ndarray:
    """x scaled to unit rows, in place, 4,096 rows at a time (np.linalg.norm of all of x at once
    would allocate a temporary the size of x)."""
    for start in range(0, len(x), 4096):
        rows = x[start: start + 4096]
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return x


def _blocks(rows: EmbeddingRows):
    """(positions, vectors) covering every row once, ROW_BLOCK rows at a time, in storage order.

    The next block is read while the caller works on this one (reads and matrix products both
    release the GIL): once the embeddings outgrow the page cache, a pass otherwise waits for the
    disk between blocks (Prototypes at 10M documents from an empty cache: 299 s before, 267-276 s after)."""
    order = rows.storage_order()
    blocks = [order[start: start + ROW_BLOCK] for start in range(0, rows.n, ROW_BLOCK)]
    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = reader.submit(rows.read, blocks[0]) if blocks else None
        for i, positions in enumerate(blocks):
            vectors = ahead.result()
            if i + 1 < len(blocks):
                ahead = reader.submit(rows.read, blocks[i + 1])
            yield positions, vectors


def _given_centroids(inputs: SamplerInputs) -> np.ndarray | None:
    """The inputs' centroids, checked against the cluster ids, or None when they give none."""
    n_clusters = int(inputs.clusters.max()) + 1
    if inputs.centroids is not None and (inputs.centroids.ndim != 2 or inputs.centroids.shape[0] < n_clusters):
        raise ValueError(
            f"centroids must have >= {n_clusters} rows (largest cluster id {n_clusters - 1}), "
            f"got shape {list(inputs.centroids.shape)}"
        )
    return inputs.centroids


def _cluster_centroids(inputs: SamplerInputs) -> np.ndarray:
    """The given centroids, or each cluster's mean embedding (one pass over every vector)."""
    given = _given_centroids(inputs)
    if given is not None:
        return given
    n_clusters = int(inputs.clusters.max()) + 1
    sums = np.zeros((n_clusters, inputs.embeddings.dim), dtype=np.float64)
    for positions, vectors in _blocks(inputs.embeddings):
        ids = inputs.clusters[positions]
        by_cluster = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(ids[by_cluster]) != 0])
        sums[ids[by_cluster[starts]]] += np.add.reduceat(vectors[by_cluster].astype(np.float64), starts, axis=0)
    sizes = np.bincount(inputs.clusters, minlength=n_clusters)
    return (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)


def _cluster_groups(sorted_clusters: np.ndarray):
    """Groups of whole clusters in `sorted_clusters`, each about GROUP_ROWS rows (a larger
    cluster is a group of its own): (group start, group stop, [(start, stop) of each cluster])."""
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_clusters) != 0])
    stops = np.r_[starts[1:], len(sorted_clusters)]
    first = 0
    while first < len(starts):
        last = first + max(1, int(np.searchsorted(stops[first:], starts[first] + GROUP_ROWS, side="right")))
        last = min(last, len(starts))
        yield starts[first], stops[last - 1], list(zip(starts[first:last], stops[first:last]))
        first = last


def _max_similarity_to_earlier(vectors: np.ndarray, block: int = 1024) -> np.ndarray:
    """For each unit row, its highest dot product with an earlier row (-inf for the first)."""
    best = np.empty(len(vectors))
    for col in range(0, len(vectors), block):
        cols = slice(col, min(col + block, len(vectors)))
        # Columns j of the block against every earlier row i < j: the rows before the block
        # are all earlier, so only the block's own square needs the triangle masked.
        square = vectors[cols] @ vectors[cols].T
        square[np.tri(len(square), dtype=bool)] = -np.inf
        top = square.max(axis=0)
        if col:
            top = np.maximum(top, (vectors[:col] @ vectors[cols].T).max(axis=0))
        best[cols] = top
    return best


def _rows_of_each_part(part: np.ndarray) -> list[np.ndarray]:
    """Row indices (ascending) of each part id in `part`, by id."""
    order = np.argsort(part, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(part[order]) != 0, True])
    return [order[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def _split_parts(vectors: np.ndarray, seed: int) -> list[np.ndarray]:
    """Row indices (ascending) of the parts clustering.split_cluster splits one cluster into."""
    from dselect_assets.core.density import clustering  # faiss, loaded only where a cluster is this large

    return _rows_of_each_part(
        clustering.split_cluster(vectors, max_rows=PAIRWISE_ROWS, part_rows=PAIRWISE_PART_ROWS, seed=seed))


def semdedup_max_similarity(inputs: SamplerInputs) -> np.ndarray:
    """For each document, its highest cosine similarity to an earlier document of its cluster.

    Within a cluster documents are ordered by decreasing distance to the
    centroid (SemDeDup keeps the least prototypical copy of a duplicate group),
    ties by index; the first document of each cluster gets -inf. SemDeDup with
    threshold eps removes exactly the documents whose value exceeds 1 - eps.

    Comparing every pair of a cluster costs the square of its size, and clusters grow with
    the corpus once k stops growing (clustering.MAX_DEFAULT_K): a cluster of more than
    PAIRWISE_ROWS documents is compared within the parts a k-means over its own members splits
    it into (clustering.split_cluster), as if the clustering were finer there. The clusters
    asset splits them once per clustering (`inputs.parts`); without parts they are split here,
    on every call. Near-duplicates lie close together and share a part; a document's value can
    only be lower than the whole cluster's.
    """
    inputs.need("semdedup", "embeddings", "clusters")
    centroids = _given_centroids(inputs)
    best = np.full(inputs.n, -np.inf)
    order = np.argsort(inputs.clusters, kind="stable")  # by cluster, then index
    # Whole clusters a group at a time: memory follows the group, not the corpus, and each
    # vector is read once here (its distance to the centroid from the same read; without given
    # centroids, a cluster's mean is taken from its members read here, not from a pass of its own).
    for group_start, group_stop, clusters in _cluster_groups(inputs.clusters[order]):
        positions = order[group_start:group_stop]
        vectors = inputs.embeddings.read(positions)
        to_centroid = np.empty(len(positions), dtype=np.float32)
        for start, stop in clusters:
            rows = slice(start - group_start, stop - group_start)
            centre = (vectors[rows].mean(axis=0, dtype=np.float64).astype(np.float32) if centroids is None
                      else centroids[inputs.clusters[positions[rows.start]]])
            to_centroid[rows] = np.linalg.norm(vectors[rows] - centre, axis=1)
        vectors = unit_rows(vectors)
        for start, stop in clusters:
            rows = slice(start - group_start, stop - group_start)
            # the group's rows of the cluster, farthest from the centroid first, ties by index
            within = rows.start + np.lexsort((positions[rows], -to_centroid[rows]))
            members = positions[within]
            if inputs.parts is None and len(within) > PAIRWISE_ROWS:  # split here: k-means over the cluster
                parts = _split_parts(vectors[within], seed=int(inputs.clusters[members[0]]))
            else:
                parts = [np.arange(len(within))] if inputs.parts is None else _rows_of_each_part(inputs.parts[members])
            for part in parts:  # each part's vectors gathered once, not the cluster's and then the part's
                best[members[part]] = _max_similarity_to_earlier(vectors[within[part]])
    return best


def semdedup_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """SemDeDup at the eps that keeps exactly round(rate * n) documents.

    Removing documents whose max similarity to an earlier cluster-mate exceeds
    1 - eps is monotone in eps, so keeping the k lowest values of
    `semdedup_max_similarity` is SemDeDup with eps = 1 - (k-th lowest value);
    documents tied at that value are chosen at random. Near-duplicates
    (similarity ~1) are the first to go.
    """
    inputs.need("semdedup", "embeddings", "clusters")
    similarity = semdedup_max_similarity(inputs)
    return _top(-similarity, target_size(inputs.n, rate), _rng(seed))


def nearest_centroid_distance(inputs: SamplerInputs, block: int = 4096) -> np.ndarray:
    """Each document's Euclidean distance to the nearest centroid of all clusters (not only its own:
    centroids recomputed as cluster means need not be nearest to their members)."""
    centroids = _cluster_centroids(inputs).astype(np.float64)
    squared_norms = (centroids**2).sum(axis=1)
    nearest = np.empty(inputs.n)
    for positions, vectors in _blocks(inputs.embeddings):
        for start in range(0, len(positions), block):
            x = vectors[start: start + block].astype(np.float64)
            squared = (x**2).sum(axis=1, keepdims=True) - 2.0 * x @ centroids.T + squared_norms
            nearest[positions[start: start + block]] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    return nearest


def prototypes_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """SSL Prototypes (Sorscher et al. 2022): keep the documents farthest from their nearest centroid.

    Ranked over the whole corpus, with no per-cluster quota, so a tight cluster of
    prototypical documents may lose all of its members; ties at random.
    """
    inputs.need("prototypes", "embeddings", "clusters")
    return _top(nearest_centroid_distance(inputs), target_size(inputs.n, rate), _rng(seed))


SAMPLERS: dict[str, Sampler] = {
    "random": random_sampler,
    "density": density_sampler,
    "density_topk": density_topk_sampler,
    "density_bottomk": density_bottomk_sampler,
    "semdedup": semdedup_sampler,
    "prototypes": prototypes_sampler,
    "perplexity_filter": perplexity_filter_sampler,
    "ask_llm_topk": ask_llm_topk_sampler,
    "ask_llm_density": ask_llm_density_sampler,
    # The same two rules over the distilled judge's scores (a probe over the embeddings,
    # core/scoring/distill.py); the selection asset passes those as `quality`.
    "ask_llm_distilled": ask_llm_topk_sampler,
    "ask_llm_distilled_density": ask_llm_density_sampler,
}

# The SamplerInputs fields each sampler reads ("clusters" also implies embeddings).
REQUIRED_INPUTS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "density": frozenset({"density"}),
    "density_topk": frozenset({"density"}),
    "density_bottomk": frozenset({"density"}),
    "semdedup": frozenset({"embeddings", "clusters"}),
    "prototypes": frozenset({"embeddings", "clusters"}),
    "perplexity_filter": frozenset({"perplexity"}),
    "ask_llm_topk": frozenset({"quality"}),
    "ask_llm_density": frozenset({"quality", "density"}),
    "ask_llm_distilled": frozenset({"quality"}),
    "ask_llm_distilled_density": frozenset({"quality", "density"}),
}

# Samplers that read the embeddings a few whole clusters at a time (the others read them in storage
# order), and the clustering's parts of large clusters with them.
READS_BY_CLUSTER = frozenset({"semdedup"})

# The paper's configurations (core/selection/paper.py) run as stand-ins: the same rule over another
# model's scores, which the selection asset reads for them.
for _stand_in in paper.STAND_INS:
    SAMPLERS.setdefault(_stand_in.name, SAMPLERS[_stand_in.rule])
    REQUIRED_INPUTS.setdefault(_stand_in.name, REQUIRED_INPUTS[_stand_in.rule])


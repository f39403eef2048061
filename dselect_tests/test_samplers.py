"""Samplers: rates, determinism, and that each one selects what its definition says."""

from __future__ import annotations

import numpy as np
import pytest

from dselect_assets.core.density.clustering import (
    MAX_DEFAULT_K,
    POINTS_PER_CENTROID,
    assign,
    default_k,
    fit_centroids,
    kmeans,
    split_cluster,
    split_large_clusters,
    training_sample,
)
from dselect_assets.core.density.race_sketch import RaceSketch
from dselect_assets.core.selection.samplers import (
    REQUIRED_INPUTS,
    SAMPLERS,
    ArrayRows,
    SamplerInputs,
    _gumbel_top,
    _rng,
    nearest_centroid_distance,
    semdedup_max_similarity,
    target_size,
)

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def full_inputs() -> SamplerInputs:
    """Every signal present, on a small clustered corpus."""
    rng = np.random.default_rng([0, 99])
    n = 600
    centres = unit(rng.standard_normal((6, DIM)))
    label = rng.integers(0, 6, size=n)
    emb = unit(centres[label] + 0.4 * rng.standard_normal((n, DIM)) / np.sqrt(DIM) * 4)
    clusters = kmeans(emb, k=6, seed=0)
    density = RaceSketch.empty(DIM, rows=64, bandwidth=1.0, hashes_per_row=4).add(emb).query(emb)
    return SamplerInputs(
        n=n,
        embeddings=emb,
        density=density,
        quality=rng.random(n),
        perplexity=rng.lognormal(3.0, 0.5, size=n),
        clusters=clusters.assignment,
        centroids=clusters.centroids,
    )


# ---------------------------------------------------- inverse propensity


def two_cluster_mix(n: int = 4000, minority: float = 0.1, seed: int = 0) -> tuple[SamplerInputs, np.ndarray]:
    """90/10 mix of two tight, far-apart clusters; density from the RACE sketch."""
    # not the samplers' stream: PCG64(seed) here would correlate data and draws
    rng = np.random.default_rng([seed, 99])
    is_minority = rng.random(n) < minority
    centres = unit(rng.standard_normal((2, DIM)))
    emb = unit(centres[is_minority.astype(int)] + 0.3 * rng.standard_normal((n, DIM)) / np.sqrt(DIM))
    density = RaceSketch.empty(DIM, rows=128, bandwidth=1.0, hashes_per_row=4, seed=seed).add(emb).query(emb)
    return SamplerInputs(n=n, embeddings=emb, density=density), is_minority


def minority_share(selected: np.ndarray, is_minority: np.ndarray) -> float:
    return float(is_minority[selected].mean())


def flattens_toward_uniform(share: float) -> bool:
    """The coverage criterion: a 90/10 mix comes out within 0.15 of 50/50."""
    return abs(share - 0.5) < 0.15


def density_proportional_sampler(inputs: SamplerInputs, rate: float, seed: int) -> np.ndarray:
    """The classic mistake: weights ∝ density instead of 1/density."""
    return _gumbel_top(np.log(inputs.density), target_size(inputs.n, rate), _rng(seed))


def test_inverse_propensity_flattens_a_90_10_mix():
    inputs, is_minority = two_cluster_mix()
    for seed in range(3):
        ips = minority_share(SAMPLERS["density"](inputs, 0.1, seed), is_minority)
        uniform = minority_share(SAMPLERS["random"](inputs, 0.1, seed), is_minority)
        assert flattens_toward_uniform(ips), ips
        assert not flattens_toward_uniform(uniform), uniform
        assert abs(ips - 0.5) < abs(uniform - 0.5) / 3


def test_density_proportional_sampling_fails_the_same_criterion():
    inputs, is_minority = two_cluster_mix()
    share = minority_share(density_proportional_sampler(inputs, 0.1, 0), is_minority)
    assert not flattens_toward_uniform(share)
    assert share < is_minority.mean()  # it concentrates on the majority, the opposite of IPS


def test_inverse_propensity_inclusion_follows_inverse_density():
    """Exactly ∝ 1/density for a single draw: check the empirical first-draw frequencies."""
    density = np.array([1.0, 2.0, 4.0, 8.0])
    inputs = SamplerInputs(n=4, density=density)
    counts = np.bincount([SAMPLERS["density"](inputs, 0.25, seed)[0] for seed in range(4000)], minlength=4)
    expected = (1 / density) / (1 / density).sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.03)


# ----------------------------------------------------------- contracts


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.8, 0.999, 1.0])
def test_every_sampler_honours_its_rate(full_inputs, name, rate):
    selected = SAMPLERS[name](full_inputs, rate, 7)
    assert len(selected) == target_size(full_inputs.n, rate)
    assert selected.dtype.kind == "i"
    assert np.all(np.diff(selected) > 0)  # sorted and unique
    assert selected[0] >= 0 and selected[-1] < full_inputs.n


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_deterministic_per_seed(full_inputs, name):
    np.testing.assert_array_equal(SAMPLERS[name](full_inputs, 0.3, 3), SAMPLERS[name](full_inputs, 0.3, 3))


@pytest.mark.parametrize("name", ["random", "density", "ask_llm_density"])
def test_random_samplers_differ_across_seeds(full_inputs, name):
    assert not np.array_equal(SAMPLERS[name](full_inputs, 0.3, 1), SAMPLERS[name](full_inputs, 0.3, 2))


def test_top_keeps_the_largest_keys_and_breaks_ties_as_the_full_sort_does():
    from dselect_assets.core.selection.samplers import _top

    keys = np.random.default_rng([7, 1]).integers(0, 5, size=500).astype(float)  # ties everywhere
    keys[[3, 30, 300]] = np.inf
    for k in (0, 1, 3, 4, 99, 100, 101, 250, 499, 500):
        draws = np.random.default_rng(k).random(len(keys))
        expected = np.sort(np.lexsort((draws, -keys))[:k])
        np.testing.assert_array_equal(_top(keys, k, np.random.default_rng(k)), expected)


def test_target_size_rounds_and_rejects_bad_rates():
    assert target_size(10, 0.25) == 3  # 2.5 rounds half up
    assert target_size(1000, 0.001) == 1
    assert target_size(5, 0.01) == 1  # never empty
    assert target_size(7, 1.0) == 7
    for bad in (0.0, -0.1, 1.01, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="rate"):
            target_size(10, bad)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_missing_inputs_are_named(name):
    needed = REQUIRED_INPUTS[name]
    if not needed:
        return
    with pytest.raises(ValueError, match=sorted(needed)[0]):
        SAMPLERS[name](SamplerInputs(n=50), 0.5, 0)


def test_bad_inputs_are_rejected_with_the_row():
    quality = np.ones(20)
    quality[13] = np.nan
    with pytest.raises(ValueError, match="quality of row 13"):
        SamplerInputs(n=20, quality=quality)
    with pytest.raises(ValueError, match=r"density must have shape \[20\]"):
        SamplerInputs(n=20, density=np.ones(19))
    with pytest.raises(ValueError, match="row 4 is 0"):
        SAMPLERS["density"](SamplerInputs(n=20, density=np.r_[np.ones(4), 0.0, np.ones(15)]), 0.5, 0)


# ----------------------------------------------------------- rankings


def test_rank_samplers_keep_the_right_end(full_inputs):
    k = target_size(full_inputs.n, 0.2)
    top_quality = np.sort(np.argsort(-full_inputs.quality)[:k])
    low_ppl = np.sort(np.argsort(full_inputs.perplexity)[:k])
    dense = np.sort(np.argsort(-full_inputs.density, kind="stable")[:k])
    np.testing.assert_array_equal(SAMPLERS["ask_llm_topk"](full_inputs, 0.2, 0), top_quality)
    np.testing.assert_array_equal(SAMPLERS["perplexity_filter"](full_inputs, 0.2, 0), low_ppl)
    kept_dense = SAMPLERS["density_topk"](full_inputs, 0.2, 0)
    kept_sparse = SAMPLERS["density_bottomk"](full_inputs, 0.2, 0)
    assert full_inputs.density[kept_dense].min() >= np.sort(full_inputs.density)[-k]
    assert full_inputs.density[kept_sparse].max() <= np.sort(full_inputs.density)[k - 1]
    assert len(np.intersect1d(kept_dense, dense)) >= k - 5  # only exact ties may differ


def test_ask_llm_density_keeps_good_and_sparse(full_inputs):
    rate = 0.2
    kept = SAMPLERS["ask_llm_density"](full_inputs, rate, 0)
    pool = SAMPLERS["ask_llm_topk"](full_inputs, np.sqrt(rate), 0)
    assert np.isin(kept, pool).all()  # never below the quality gate
    dropped = np.setdiff1d(pool, kept)
    # inside the gate, IPS keeps the sparser documents more often
    assert np.median(full_inputs.density[kept]) < np.median(full_inputs.density[dropped])


# ------------------------------------------------------ SemDeDup, Prototypes


def planted_near_duplicates(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """300 random unit vectors, then a near-copy (cosine ~0.99) of 40 of them: (vectors, originals)."""
    rng = np.random.default_rng([4, seed])
    base = unit(rng.standard_normal((300, DIM)))
    originals = rng.choice(300, size=40, replace=False)
    return np.vstack([base, unit(base[originals] + 0.01 * rng.standard_normal((40, DIM)))]), originals


def test_semdedup_removes_planted_near_duplicates_first():
    emb, originals = planted_near_duplicates(99)
    clusters = kmeans(emb, k=8, seed=0)
    inputs = SamplerInputs(n=len(emb), embeddings=emb, clusters=clusters.assignment, centroids=clusters.centroids)
    kept = SAMPLERS["semdedup"](inputs, 300 / 340, 0)
    dropped = np.setdiff1d(np.arange(340), kept)
    pair_of = {int(o): 300 + i for i, o in enumerate(originals)}
    # exactly one of each planted pair went, and nothing else
    assert len(dropped) == 40
    for original, copy in pair_of.items():
        assert (original in dropped) != (copy in dropped)
    similarity = semdedup_max_similarity(inputs)
    assert similarity[dropped].min() > 0.99 > np.sort(similarity)[-41]


def test_semdedup_compares_a_large_cluster_within_parts_and_still_finds_its_near_duplicates(monkeypatch):
    import dselect_assets.core.selection.samplers as samplers

    emb, originals = planted_near_duplicates(98)
    inputs = SamplerInputs(n=len(emb), embeddings=emb, clusters=np.zeros(len(emb), dtype=np.int64))
    exact = semdedup_max_similarity(inputs)
    monkeypatch.setattr(samplers, "PAIRWISE_ROWS", 64)
    monkeypatch.setattr(samplers, "PAIRWISE_PART_ROWS", 32)
    compared = []
    pairwise = samplers._max_similarity_to_earlier
    monkeypatch.setattr(samplers, "_max_similarity_to_earlier", lambda v: compared.append(len(v)) or pairwise(v))
    split = semdedup_max_similarity(inputs)
    assert sum(compared) == 340 and max(compared) <= 64
    # fewer pairs are compared, so a value can only fall, and some do
    assert np.all(split <= exact) and np.any(split < exact)
    dropped = np.setdiff1d(np.arange(340), SAMPLERS["semdedup"](inputs, 300 / 340, 0))
    for i, original in enumerate(originals):
        assert (original in dropped) != (300 + i in dropped)


def test_large_clusters_are_split_from_their_members_in_every_shard_as_one_cluster():
    rng = np.random.default_rng([4, 97])
    # three shards, rows sorted by cluster: cluster 1 is large (300 rows over all three), 0 and 2 small
    counts = np.array([[20, 100, 5], [0, 150, 10], [30, 50, 0]])
    vectors = [unit(rng.standard_normal((row.sum(), DIM))) for row in counts]
    starts = [np.r_[0, np.cumsum(row)] for row in counts]
    reads = []

    def read(s, start, stop):
        reads.append(s)
        return vectors[s][start:stop]

    parts = split_large_clusters(starts, read, max_rows=120, part_rows=60)
    members = np.concatenate([vectors[s][starts[s][1]:starts[s][2]] for s in range(3)])
    expected = split_cluster(members, max_rows=120, part_rows=60, seed=1)
    got = np.concatenate([parts[s][starts[s][1]:starts[s][2]] for s in range(3)])
    np.testing.assert_array_equal(got, expected)
    assert np.bincount(got).max() <= 120 and len(np.unique(got)) >= 300 // 120 + 1
    for s in range(3):  # the small clusters stay whole
        assert not parts[s][:starts[s][1]].any() and not parts[s][starts[s][2]:].any()
    assert sorted(reads) == [0, 1, 2]  # one read per shard


def test_semdedup_compares_within_the_clusterings_parts_and_splits_none_itself(monkeypatch):
    from dselect_assets.core.density import clustering

    emb, originals = planted_near_duplicates(96)
    cluster = np.zeros(len(emb), dtype=np.int64)
    part = split_cluster(emb, max_rows=64, part_rows=32, seed=0)
    monkeypatch.setattr(clustering, "split_cluster", lambda *a, **k: pytest.fail("SemDeDup split a cluster itself"))
    inputs = SamplerInputs(n=len(emb), embeddings=emb, clusters=cluster, parts=part)
    similarity = semdedup_max_similarity(inputs)
    # each document against the earlier documents of its part, farthest from the centroid first
    to_centroid = np.linalg.norm(emb - emb.mean(axis=0), axis=1)
    rank = np.empty(len(emb), dtype=np.int64)
    rank[np.lexsort((np.arange(len(emb)), -to_centroid))] = np.arange(len(emb))
    earlier = (part[:, None] == part[None, :]) & (rank[None, :] < rank[:, None])
    np.testing.assert_allclose(similarity, np.where(earlier, emb @ emb.T, -np.inf).max(axis=1), rtol=1e-5)
    # the planted pairs share a part: one of each goes
    dropped = np.setdiff1d(np.arange(340), SAMPLERS["semdedup"](inputs, 300 / 340, 0))
    for i, original in enumerate(originals):
        assert (original in dropped) != (300 + i in dropped)


def test_prototypes_keeps_the_documents_farthest_from_their_nearest_centroid(full_inputs):
    kept = SAMPLERS["prototypes"](full_inputs, 0.4, 0)
    to_each = np.linalg.norm(full_inputs.embeddings.array[:, None, :] - full_inputs.centroids[None, :, :], axis=2)
    nearest = to_each.min(axis=1)
    is_kept = np.isin(np.arange(full_inputs.n), kept)
    assert len(kept) == target_size(full_inputs.n, 0.4)
    # one ranking over the whole corpus: every kept document is farther out than every dropped one
    assert nearest[is_kept].min() >= nearest[~is_kept].max()


def test_prototypes_has_no_per_cluster_quota():
    # A tight cluster (all near its centroid) and a loose one: a corpus-wide ranking keeps only
    # loose documents, where a per-cluster quota would keep 40% of each.
    rng = np.random.default_rng([1, 99])
    centres = np.stack([np.eye(DIM)[0], -np.eye(DIM)[0]]).astype(np.float32)
    clusters = np.repeat([0, 1], 100)
    spread = np.where(clusters == 0, 0.01, 0.3)[:, None]
    emb = (centres[clusters] + spread * rng.standard_normal((200, DIM))).astype(np.float32)
    inputs = SamplerInputs(n=200, embeddings=emb, clusters=clusters)
    kept = SAMPLERS["prototypes"](inputs, 0.4, 0)
    assert np.all(clusters[kept] == 1)


class ShuffledRows(ArrayRows):
    """A reader whose cheapest order is not row order, recording how many rows each read asks for."""

    def __init__(self, embeddings: np.ndarray):
        super().__init__(embeddings)
        self.reads: list[int] = []

    def read(self, positions: np.ndarray) -> np.ndarray:
        self.reads.append(len(positions))
        return super().read(positions)

    def storage_order(self) -> np.ndarray:
        return np.random.default_rng(5).permutation(self.n)


def test_semdedup_and_prototypes_read_whole_clusters_in_bounded_groups(full_inputs, monkeypatch):
    import dselect_assets.core.selection.samplers as samplers

    bare = SamplerInputs(n=full_inputs.n, embeddings=full_inputs.embeddings, clusters=full_inputs.clusters)
    similarity, distance = semdedup_max_similarity(bare), nearest_centroid_distance(bare)
    largest = int(np.bincount(full_inputs.clusters).max())
    monkeypatch.setattr(samplers, "GROUP_ROWS", largest // 2 + 1)
    monkeypatch.setattr(samplers, "ROW_BLOCK", 37)
    rows = ShuffledRows(full_inputs.embeddings.array)
    grouped = SamplerInputs(n=full_inputs.n, embeddings=rows, clusters=full_inputs.clusters)
    np.testing.assert_array_equal(semdedup_max_similarity(grouped), similarity)
    # One cluster at a time here (each is larger than a group), never the corpus, and each vector
    # once: the cluster means come from the same reads.
    assert sorted(rows.reads) == sorted(np.bincount(full_inputs.clusters).tolist())
    assert max(rows.reads) == largest
    # The cluster means are summed in another order: equal up to rounding.
    np.testing.assert_allclose(nearest_centroid_distance(grouped), distance, rtol=1e-5)
    assert max(rows.reads[-10:]) == 37


def test_prototypes_and_semdedup_without_given_centroids_use_the_cluster_means(full_inputs):
    emb, clusters = full_inputs.embeddings.array, full_inputs.clusters
    means = np.stack([emb[clusters == c].mean(axis=0) for c in range(clusters.max() + 1)])
    bare = SamplerInputs(n=full_inputs.n, embeddings=emb, clusters=clusters)
    given = SamplerInputs(n=full_inputs.n, embeddings=emb, clusters=clusters, centroids=means)
    # the centroids decide the order within a cluster, so other ones would change the answer
    moved = SamplerInputs(n=full_inputs.n, embeddings=emb, clusters=clusters, centroids=means[::-1].copy())
    assert not np.array_equal(semdedup_max_similarity(moved), semdedup_max_similarity(given))
    np.testing.assert_allclose(nearest_centroid_distance(bare), nearest_centroid_distance(given), rtol=1e-5)
    np.testing.assert_array_equal(semdedup_max_similarity(bare), semdedup_max_similarity(given))
    for name in ("prototypes", "semdedup"):
        assert len(SAMPLERS[name](bare, 0.5, 0)) == target_size(bare.n, 0.5)


# --------------------------------------------------------------- clustering


def test_kmeans_is_deterministic_and_sized_from_n(full_inputs):
    first = kmeans(full_inputs.embeddings.array, seed=1)
    again = kmeans(full_inputs.embeddings.array, seed=1)
    assert first.k == default_k(full_inputs.n) == round(np.sqrt(full_inputs.n))
    np.testing.assert_array_equal(first.assignment, again.assignment)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    expected = np.linalg.norm(full_inputs.embeddings.array - first.centroids[first.assignment], axis=1)
    np.testing.assert_allclose(first.distance, expected, atol=1e-4)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(full_inputs.embeddings.array, k=full_inputs.n + 1)


def test_kmeans_trains_on_a_bounded_seeded_sample_and_assigns_in_any_pieces(full_inputs):
    assert default_k(10_000_000) == MAX_DEFAULT_K
    np.testing.assert_array_equal(training_sample(5_000, 20), np.arange(5_000))  # 256 per centroid: all
    big = training_sample(3_000_000, 10, seed=4)
    assert len(big) == 10 * POINTS_PER_CENTROID and np.all(np.diff(big) > 0) and big[-1] < 3_000_000
    np.testing.assert_array_equal(big, training_sample(3_000_000, 10, seed=4))
    assert not np.array_equal(big, training_sample(3_000_000, 10, seed=5))

    x = full_inputs.embeddings.array
    centroids = fit_centroids(x, 7, seed=1)
    whole = assign(centroids, x)
    pieces = [assign(centroids, x[i: i + 13]) for i in range(0, len(x), 13)]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in pieces]))
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in pieces]))
    result = kmeans(x, k=7, seed=1)  # the in-memory path is the same fit and assignment
    np.testing.assert_array_equal(result.centroids, centroids)
    np.testing.assert_array_equal(result.assignment, whole[0])


"""RACE sketch: agreement with exact kernel sums, merging, files, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from dselect_assets.core.density.exact_kde import (
    exact_kernel_sums,
    gaussian_kernel,
    pstable_collision_probability,
    race_kernel,
)
from dselect_assets.core.density.race_sketch import (
    DEFAULT_BANDWIDTH,
    DEFAULT_BUCKETS,
    DEFAULT_HASHES_PER_ROW,
    RaceSketch,
    SketchFileError,
    SketchMismatchError,
)

DIM = 384


def expected_race_scores(data: np.ndarray, *, bandwidth: float, hashes_per_row: int, buckets: int) -> np.ndarray:
    """What `RaceSketch.query` estimates, bucket-hash collisions included.

    Two points whose K codes differ still share a bucket with probability 1/B,
    so E[score(y)] = S(y) + (n - S(y)) / B with S the exact race-kernel sum.
    """
    sums = exact_kernel_sums(data, kernel="race", bandwidth=bandwidth, hashes_per_row=hashes_per_row)
    return sums + (data.shape[0] - sums) / buckets


def clustered(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """Unit vectors in clusters of very different sizes and spreads, plus near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.choice(12, size=n, p=rng.dirichlet(np.full(12, 0.6)))
    spread = rng.uniform(0.4, 1.2, size=12)[label] * rng.lognormal(0.0, 0.3, size=n)
    x = centres[label] + spread[:, None] * rng.standard_normal((n, dim)) / np.sqrt(dim)
    copies = rng.choice(n, size=n // 5, replace=False)
    x[copies] = x[rng.choice(n, size=n // 5)] + 0.1 * rng.standard_normal((n // 5, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return clustered(3000)


# ----------------------------------------------------------------- accuracy


def test_collision_probability_formula_matches_simulated_hash():
    """The kernel the exact baseline uses is the real collision rate of floor((a.x + b) / w)."""
    rng = np.random.default_rng(1)
    w = 1.6
    for distance in (0.2, 0.7, 1.4):
        gap = distance * rng.standard_normal(400_000)  # a.(x - y) for a ~ N(0, I)
        offset = rng.uniform(0.0, w, size=gap.size)
        y_proj = rng.uniform(-5.0, 5.0, size=gap.size)
        same = np.floor((y_proj + offset) / w) == np.floor((y_proj + gap + offset) / w)
        assert same.mean() == pytest.approx(float(pstable_collision_probability(distance, w)), abs=0.004)


def test_sketch_scores_are_unbiased_and_rank_like_exact(corpus):
    sketch = RaceSketch.empty(DIM, seed=3)
    sketch.add(corpus)
    estimate = sketch.query(corpus)
    expected = expected_race_scores(
        corpus, bandwidth=DEFAULT_BANDWIDTH, hashes_per_row=DEFAULT_HASHES_PER_ROW, buckets=DEFAULT_BUCKETS
    )
    assert estimate.mean() == pytest.approx(expected.mean(), rel=0.05)
    assert spearmanr(estimate, expected).statistic > 0.85
    # every point counts itself in every row
    assert estimate.min() >= 1.0


def test_flat_single_hash_ranks_worse_than_default(corpus):
    """Why the default concatenates hashes: one hash per row barely separates densities."""
    def agreement(hashes_per_row: int, bandwidth: float) -> float:
        sketch = RaceSketch.empty(DIM, rows=256, bandwidth=bandwidth, hashes_per_row=hashes_per_row, pool=None)
        scores = sketch.add(corpus).query(corpus[:600])
        exact = exact_kernel_sums(corpus, corpus[:600], bandwidth=bandwidth, hashes_per_row=hashes_per_row)
        return spearmanr(scores, exact).statistic

    assert agreement(1, 1.0) + 0.1 < agreement(DEFAULT_HASHES_PER_ROW, DEFAULT_BANDWIDTH)


def test_tabulated_kernel_matches_formula():
    from dselect_assets.core.density.exact_kde import _TabulatedKernel

    dist = np.linspace(0.0, 2.0, 10_007)
    for kernel, direct in (("race", race_kernel(dist, 1.3, 7)), ("gaussian", gaussian_kernel(dist, 0.5))):
        table = _TabulatedKernel(kernel, bandwidth=1.3 if kernel == "race" else 0.5, hashes_per_row=7, max_dist=2.0)
        sums = table.sums((dist * dist).astype(np.float32)[:, None].copy())
        assert np.abs(sums - direct).max() < 1e-6


def test_exact_sums_match_direct_float64_sums(corpus):
    queries = corpus[:50]
    dist = np.sqrt(np.maximum(((queries[:, None, :].astype(np.float64) - corpus[None, :, :]) ** 2).sum(-1), 0))
    race = exact_kernel_sums(corpus, queries, bandwidth=1.3, hashes_per_row=7, data_block=1000)
    gauss = exact_kernel_sums(corpus, queries, kernel="gaussian", bandwidth=0.5)
    # float32 distances put a point ~3e-4 from itself instead of 0; the
    # kernel's slope there makes that the only visible difference
    np.testing.assert_allclose(race, race_kernel(dist, 1.3, 7).sum(axis=1), rtol=2e-3)
    np.testing.assert_allclose(gauss, gaussian_kernel(dist, 0.5).sum(axis=1), rtol=2e-3)


# --------------------------------------------------------------- merging


def test_merge_equals_sketch_of_union_exactly(corpus):
    a, b = corpus[:1237], corpus[1237:]
    part_a = RaceSketch.empty(DIM, seed=5, embedder_id="e").add(a)
    part_b = RaceSketch.empty(DIM, seed=5, embedder_id="e")
    part_b.chunk_rows = 333  # different chunking must not change a single count
    part_b.add(b[:1]).add(b[1:])  # a one-row batch too
    union = RaceSketch.empty(DIM, seed=5, embedder_id="e").add(corpus)
    merged = part_a + part_b
    assert merged == union
    assert merged.n_docs == len(corpus)
    np.testing.assert_array_equal(merged.counts, union.counts)
    np.testing.assert_array_equal(merged.query(corpus[:100]), union.query(corpus[:100]))
    # merging is commutative and leaves its operands alone
    assert part_b.merge(part_a) == union
    assert part_a.n_docs == len(a)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("bandwidth", {"bandwidth": 1.0}),
        ("seed", {"seed": 6}),
        ("rows", {"rows": 256}),
        ("buckets", {"buckets": 4096}),
        ("hashes_per_row", {"hashes_per_row": 8}),
        ("embedder_id", {"embedder_id": "other-model"}),
    ],
)
def test_merge_refuses_mismatched_parameters(field, kwargs):
    base = {"seed": 5, "embedder_id": "e"}
    left = RaceSketch.empty(DIM, **base)
    right = RaceSketch.empty(DIM, **{**base, **kwargs})
    with pytest.raises(SketchMismatchError, match=field):
        left + right


def test_batches_of_the_wrong_width_or_non_finite_are_rejected(corpus):
    sketch = RaceSketch.empty(DIM)
    with pytest.raises(SketchMismatchError, match="384"):
        sketch.add(corpus[:, :100])
    bad = corpus[:10].copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        sketch.add(bad)


# ------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path: Path, corpus):
    sketch = RaceSketch.empty(DIM, seed=9, embedder_id="minilm:abc").add(corpus[:700])
    path = sketch.save(tmp_path / "shard.race")
    loaded = RaceSketch.load(path, expected={"embedder_id": "minilm:abc", "seed": 9})
    assert loaded == sketch
    assert loaded.fingerprint == sketch.fingerprint
    np.testing.assert_array_equal(loaded.query(corpus[:50]), sketch.query(corpus[:50]))
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


@pytest.fixture()
def saved(tmp_path: Path, corpus) -> Path:
    return RaceSketch.empty(DIM, rows=64, buckets=1024, embedder_id="m").add(corpus[:200]).save(tmp_path / "s.race")


def test_truncated_file_is_reported(saved: Path):
    saved.write_bytes(saved.read_bytes()[:-100])
    with pytest.raises(SketchFileError, match=r"s\.race.*truncated"):
        RaceSketch.load(saved)
    saved.write_bytes(saved.read_bytes()[:10])
    with pytest.raises(SketchFileError, match="truncated"):
        RaceSketch.load(saved)


def test_corrupt_counts_fail_the_checksum(saved: Path):
    blob = bytearray(saved.read_bytes())
    blob[-5] ^= 0x40
    saved.write_bytes(bytes(blob))
    with pytest.raises(SketchFileError, match=r"s\.race.*corrupt counts"):
        RaceSketch.load(saved)


def test_wrong_magic_or_garbled_header_is_reported(saved: Path):
    blob = saved.read_bytes()
    saved.write_bytes(b"NOTASKET" + blob[8:])
    with pytest.raises(SketchFileError, match="not a RACE sketch"):
        RaceSketch.load(saved)
    saved.write_bytes(blob[:20] + b"\xff\xfe{" + blob[23:])
    with pytest.raises(SketchFileError, match="corrupt header"):
        RaceSketch.load(saved)


def test_mismatched_file_is_reported(saved: Path):
    with pytest.raises(SketchFileError, match=r"s\.race.*mismatched embedder_id.*'m'.*'other'"):
        RaceSketch.load(saved, expected={"embedder_id": "other"})


def test_missing_file_is_reported(tmp_path: Path):
    with pytest.raises(SketchFileError, match="nothing-here.race"):
        RaceSketch.load(tmp_path / "nothing-here.race")


# ----------------------------------------------------------- determinism


def test_same_seed_same_counts_other_seed_other_counts(corpus):
    first = RaceSketch.empty(DIM, seed=11).add(corpus[:400])
    again = RaceSketch.empty(DIM, seed=11).add(corpus[:400])
    other = RaceSketch.empty(DIM, seed=12).add(corpus[:400])
    np.testing.assert_array_equal(first.counts, again.counts)
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert not np.array_equal(first.counts, other.counts)


def test_normalized_scores_divide_by_corpus_size(corpus):
    sketch = RaceSketch.empty(DIM, rows=64).add(corpus[:300])
    np.testing.assert_allclose(sketch.query(corpus[:20], normalize=True), sketch.query(corpus[:20]) / 300)
    with pytest.raises(ValueError, match="empty sketch"):
        RaceSketch.empty(DIM, rows=64).query(corpus[:5], normalize=True)

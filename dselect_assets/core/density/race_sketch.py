"""RACE kernel-density sketch with p-stable (L2) LSH (Coleman & Shrivastava 2020).

Paper Algorithm 2, two linear passes over the embeddings:

* pass 1 (`add`): for every x and row r, ``counts[r, h_r(x)] += 1``;
* pass 2 (`query`): ``score(y) = mean_r counts[r, h_r(y)]``.

Each row's count at y is an unbiased estimate of ``sum_x k(x, y)`` where ``k`` is
the probability that x and y collide under that row's hash, so the row mean is a
kernel density estimate with R-fold lower variance.

Hash of row r: K = ``hashes_per_row`` concatenated p-stable hashes
``q_k(x) = floor((a_k . x + b_k) / w)`` with ``a_k ~ N(0, I)``, ``b_k ~ U[0, w)``,
combined by a seeded multilinear hash into B buckets. Why K > 1: for
L2-normalized sentence embeddings a single p-stable hash has a very flat kernel
(unrelated points at distance ~1.35 still collide with probability ~0.3 at
w=1, and a row spans only ~12/w cells), so the estimate is dominated by the
bulk of the corpus and its noise swamps the difference between dense and
sparse regions (Spearman vs exact ~0.6 in our benchmark). Concatenating K
hashes gives the kernel ``p_w(c)^K``, which decays fast with distance and makes
the density local. Bucket hashing adds collisions of probability ~1/B between
different cells: a near-constant ~n/B per score that shifts scores but barely
reorders them (keep B well above n / typical score; see DEFAULT_BUCKETS).

Projection pool: each of the K hash positions draws its projection from its own
pool of ``pool`` Gaussian vectors, one per row at random. With pool == rows
nothing is shared (textbook RACE). The projection (a dense matrix product) is
the largest cost (~60% of CPU time at the defaults), while extra rows that
reuse pooled projections cost only integer adds, so for the same projections
more rows estimate better (benchmark, N=100k, w=1, K=6, 1,536 projections:
256 unshared rows -> Spearman 0.89 vs exact; 512 rows over pools of 256 ->
0.92). Each row is still K independent p-stable hashes, so its kernel, and the
unbiasedness, are unchanged; sharing only correlates rows.

Inputs are expected to be L2-normalized (norm <= ~1): codes cover projections
within 6 standard deviations of a unit vector's, and the rare ones beyond are
clipped into the end cells (larger norms would clip often and blunt the kernel).

Projections are regenerated from the seed, never stored: two sketches with the
same (dim, rows, buckets, bandwidth, hashes_per_row, pool, seed) hash
identically and merge by adding counts. A fingerprint of the regenerated hash
functions is checked on merge and load, so a numpy whose random stream differs
cannot silently mix incompatible sketches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # optional: caps BLAS threads around the sketch's many small matrix products
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - without it BLAS keeps its own thread count
    threadpool_limits = None

# Defaults for 384-d L2-normalized MiniLM embeddings. Unrelated texts sit at L2
# distance ~1.35, same-topic ones at ~0.6-1.0, near-duplicates below ~0.4. With
# w=1.6 and K=10 the kernel p_w(c)^K is 0.20 at c=0.3, 0.057 at 0.5, 0.014 at
# 0.7, 0.0035 at 0.9 and 0.0002 at 1.35: a score counts a document's
# near-duplicates and topic neighbours, and the unrelated bulk adds only a
# near-constant background. Among the kernels tried (w 0.5-2.5, K 3-16) the
# sharper ones agree best with the exact sums at equal cost, up to K~10 where
# counts get too small. Measured by benchmarks/bench_density.py on calibrated
# synthetic embeddings: Spearman vs exact 0.94 at N=10k, 0.925 at N=100k; 0.90
# on 2,000 real MiniLM vectors (stdlib docstrings + licence texts). B=8192 keeps the bucket-collision background
# (n/B) comparable to the scores up to ~1e5 documents; raise it for larger
# corpora (the paper used 20,000 buckets and 1,000 rows for 364M documents).
DEFAULT_ROWS = 512
DEFAULT_BUCKETS = 8192
DEFAULT_BANDWIDTH = 1.6
DEFAULT_HASHES_PER_ROW = 10
DEFAULT_POOL: int | None = 128
DEFAULT_SEED = 0
_COUNT_BATCH_POINTS = 8192
# BLAS threads for the projections. Shards are sketched in parallel processes,
# and a multi-threaded BLAS that spin-waits between the sketch's many small
# products steals the cores the other passes need: on a busy 2-core machine one
# thread made add + query 2x faster (benchmarks/bench_density.py). None leaves
# BLAS alone.
BLAS_THREADS: int | None = 1
DEFAULT_CHUNK_ROWS = 512  # per-chunk buffers (~5 MB at the defaults) stay in cache

_MAGIC = b"RACESKT\x00"
_FORMAT_VERSION = 1
# magic, format version, header length
_PREAMBLE = struct.Struct("<8sII")


class SketchMismatchError(ValueError):
    """Two sketches (or a sketch and an embedding batch) do not share parameters."""


class SketchFileError(ValueError):
    """A sketch file is missing, truncated, corrupt, or not what was expected."""


@dataclass(frozen=True)
class _HashFamily:
    """The seeded projections and bucket-hash constants of one sketch."""

    projections_t: np.ndarray  # float32 [K * pool, dim], already divided by w
    offsets: np.ndarray  # float32 [K * pool]: b / w + a shift that makes codes >= 0
    max_code: float  # codes are clipped to [0, max_code]
    digit_multipliers: np.ndarray  # uint32 [K * pool], odd: multilinear key hash
    members: np.ndarray  # int64 [K, rows]: projection used by hash k of row r
    contiguous: bool  # members[k] == k * rows + arange(rows): slices, no gather
    fingerprint: str


_FAMILY_CACHE: dict[tuple, _HashFamily] = {}

# a.x ~ N(0, ||x||^2): for unit vectors |a.x| <= 6 except with probability 2e-9,
# so codes are shifted by 6/w + 1 to be non-negative and clipped at twice that
# (the uint32 conversion needs a bounded non-negative value); the rare clipped
# projections change the kernel negligibly.
_CODE_SPAN_SIGMAS = 6.0


def _hash_family(
    dim: int, rows: int, bandwidth: float, hashes_per_row: int, pool: int, seed: int
) -> _HashFamily:
    key = (dim, rows, float(bandwidth), hashes_per_row, pool, seed)
    family = _FAMILY_CACHE.get(key)
    if family is not None:
        return family
    rng = np.random.Generator(np.random.PCG64(seed))
    width = hashes_per_row * pool
    shift = float(np.ceil(_CODE_SPAN_SIGMAS / bandwidth) + 1.0)
    projections = np.ascontiguousarray((rng.standard_normal((dim, width)) / bandwidth).astype(np.float32).T)
    offsets = (rng.uniform(0.0, 1.0, size=width) + shift).astype(np.float32)
    digit_multipliers = (rng.integers(0, 2**31, size=width, dtype=np.uint32) * np.uint32(2) + np.uint32(1))
    if pool == rows:
        members = np.arange(width, dtype=np.int64).reshape(hashes_per_row, rows)
    else:
        # each pool projection serves about rows / pool rows; rows pick independently per position
        members = np.stack(
            [k * pool + rng.permutation(np.resize(rng.permutation(pool), rows)) for k in range(hashes_per_row)]
        ).astype(np.int64)
    digest = hashlib.sha256()
    for array in (projections, offsets, digit_multipliers, members):
        digest.update(np.ascontiguousarray(array).tobytes())
    family = _HashFamily(
        projections_t=projections,
        offsets=offsets,
        max_code=2.0 * shift,
        digit_multipliers=digit_multipliers,
        members=members,
        contiguous=pool == rows,
        fingerprint=digest.hexdigest()[:16],
    )
    if len(_FAMILY_CACHE) > 8:
        _FAMILY_CACHE.clear()
    _FAMILY_CACHE[key] = family
    return family


@dataclass(eq=False)
class RaceSketch:
    """R x B collision counts of a corpus under R seeded p-stable LSH functions."""

    rows: int
    buckets: int
    bandwidth: float
    seed: int
    dim: int
    embedder_id: str
    n_docs: int
    counts: np.ndarray  # int64 [rows, buckets]
    hashes_per_row: int = DEFAULT_HASHES_PER_ROW
    pool: int = 0  # projections per hash position; 0 means rows (nothing shared)
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __post_init__(self) -> None:
        if self.pool == 0:
            self.pool = self.rows

    # ------------------------------------------------------------------ build
    @classmethod
    def empty(
        cls,
        dim: int,
        rows: int = DEFAULT_ROWS,
        buckets: int = DEFAULT_BUCKETS,
        bandwidth: float = DEFAULT_BANDWIDTH,
        seed: int = DEFAULT_SEED,
        embedder_id: str = "",
        hashes_per_row: int = DEFAULT_HASHES_PER_ROW,
        pool: int | None = DEFAULT_POOL,
    ) -> RaceSketch:
        """A zero sketch. ``pool`` < rows shares projections between rows (cheaper, noisier)."""
        pool = rows if pool is None else min(pool, rows)
        if min(dim, rows, buckets, hashes_per_row, pool) < 1:
            raise ValueError(
                "dim, rows, buckets, hashes_per_row, pool must be >= 1, got "
                f"dim={dim} rows={rows} buckets={buckets} hashes_per_row={hashes_per_row} pool={pool}"
            )
        if buckets > 2**31:
            raise ValueError(f"buckets must be <= 2**31, got {buckets}")
        if not (bandwidth > 0 and np.isfinite(bandwidth)):
            raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
        sketch = cls(
            rows=int(rows),
            buckets=int(buckets),
            bandwidth=float(bandwidth),
            seed=int(seed),
            dim=int(dim),
            embedder_id=str(embedder_id),
            n_docs=0,
            counts=np.zeros((rows, buckets), dtype=np.int64),
            hashes_per_row=int(hashes_per_row),
            pool=int(pool),
        )
        sketch._family()  # build (and cache) the hash functions up front
        return sketch

    @property
    def fingerprint(self) -> str:
        """Hash of the regenerated projections; equal iff the sketches hash alike."""
        return self._family().fingerprint

    def _family(self) -> _HashFamily:
        return _hash_family(self.dim, self.rows, self.bandwidth, self.hashes_per_row, self.pool, self.seed)

    def _check_batch(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise SketchMismatchError(f"embeddings must have shape [n, {self.dim}], got {list(emb.shape)}")
        if not np.issubdtype(emb.dtype, np.floating):
            raise ValueError(f"embeddings must be floating point, got dtype {emb.dtype}")
        return emb

    def _hash_chunk(self, chunk: np.ndarray) -> np.ndarray:
        """Buckets of one chunk, [rows, len(chunk)] in [0, B) (uint32 or int64), in a reused buffer.

        Row r's bucket is a multilinear hash of its K integer codes,
        ``sum_k code_k * m_k mod 2**32`` (random odd m_k), whose top bits are
        scaled to [0, B): two different code tuples share a bucket with
        probability ~1/B. Integer arithmetic is exact in any order; only the
        float32 projection can put a point within ~1e-6 w of a cell boundary on
        either side on different hardware (harmless for an estimate).

        All intermediates live in buffers sized for one chunk and reused, so the
        elementwise passes stay in cache (~2x faster than fresh arrays); the
        result is overwritten by the next call.
        """
        family = self._family()
        if not np.all(np.isfinite(chunk)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(chunk), axis=1))[0])
            raise ValueError(f"embedding row {bad} of the chunk has a non-finite value")
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        n = x.shape[0]
        if n == 1:
            # BLAS takes a matrix-vector path for one row whose rounding differs
            # from the matrix path; pad so a point hashes the same in any chunk
            x = np.vstack([x, np.zeros_like(x)])
        work = self._workspace(x.shape[0])
        # projections x points, so a row's digits are whole contiguous rows
        projected = np.matmul(family.projections_t, x.T, out=work["projected"])
        projected += family.offsets[:, None]
        np.clip(projected, 0.0, family.max_code, out=projected)
        codes = work["codes"]
        np.copyto(codes, projected, casting="unsafe")  # truncation is floor on [0, max_code]
        codes *= family.digit_multipliers[:, None]  # wraps mod 2**32, as the hash wants
        key, digit = work["key"], work["digit"]
        if family.contiguous:
            np.copyto(key, codes[: self.rows])
            for k in range(1, self.hashes_per_row):
                key += codes[k * self.rows : (k + 1) * self.rows]
        else:
            np.take(codes, family.members[0], axis=0, out=key)
            for k in range(1, self.hashes_per_row):
                np.take(codes, family.members[k], axis=0, out=digit)
                key += digit
        if self.buckets > 1 and self.buckets & (self.buckets - 1) == 0:
            # B = 2**b: (key * B) >> 32 is just the top b bits; no 64-bit pass
            key >>= np.uint32(32 - self.buckets.bit_length() + 1)
            return key[:, :n]
        wide = work["wide"]
        np.copyto(wide, key)
        wide *= np.uint64(self.buckets)
        wide >>= np.uint64(32)
        return wide.view(np.int64)[:, :n]  # values < 2**31: the same bits

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_work", None)  # scratch buffers, not state
        return state

    def _workspace(self, n: int) -> dict[str, np.ndarray]:
        """Scratch arrays for one chunk size, reused across chunks (not thread-safe)."""
        cached = getattr(self, "_work", None)
        if cached is not None and cached["n"] == n and cached["family"] == self.fingerprint:
            return cached["arrays"]
        width = self.hashes_per_row * self.pool
        arrays = {
            "projected": np.empty((width, n), dtype=np.float32),
            "codes": np.empty((width, n), dtype=np.uint32),
            "key": np.empty((self.rows, n), dtype=np.uint32),
            "digit": np.empty((self.rows, n), dtype=np.uint32),
            "wide": np.empty((self.rows, n), dtype=np.uint64),
        }
        self._work = {"n": n, "family": self.fingerprint, "arrays": arrays}
        return arrays

    @staticmethod
    def _blas_limit():
        if BLAS_THREADS is None or threadpool_limits is None:
            return contextlib.nullcontext()
        return threadpool_limits(limits=BLAS_THREADS, user_api="blas")

    def _chunks(self, emb: np.ndarray):
        step = max(1, int(self.chunk_rows))
        for start in range(0, emb.shape[0], step):
            yield start, emb[start : start + step]

    def add(self, emb: np.ndarray) -> RaceSketch:
        """Pass 1: count every embedding into every row (in place; returns self)."""
        emb = self._check_batch(emb)
        pending: list[np.ndarray] = []
        pending_points = 0
        with self._blas_limit():
            for _, chunk in self._chunks(emb):
                pending.append(self._hash_chunk(chunk).copy())
                pending_points += chunk.shape[0]
                if pending_points >= _COUNT_BATCH_POINTS:
                    self._count(pending)
                    pending, pending_points = [], 0
        if pending:
            self._count(pending)
        self.n_docs += int(emb.shape[0])
        return self

    def _count(self, pending: list[np.ndarray]) -> None:
        # one bincount per row over a few thousand points: each row's counters
        # (B of them) stay in cache, ~2x faster than scattered np.add.at
        buckets = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
        for row in range(self.rows):
            self.counts[row] += np.bincount(buckets[row], minlength=self.buckets)

    def query(self, emb: np.ndarray, normalize: bool = False) -> np.ndarray:
        """Pass 2: mean over rows of the counts at each embedding's buckets.

        A point that was added counts itself once (k(x, x) = 1). With
        ``normalize`` the score is divided by n_docs (a density in [0, 1]).
        """
        emb = self._check_batch(emb)
        out = np.empty(emb.shape[0], dtype=np.float64)
        flat_counts = self.counts.reshape(-1)
        if self.n_docs < 2**31:
            # no count exceeds n_docs; a half-size table makes the random
            # gathers below markedly faster
            flat_counts = flat_counts.astype(np.int32)
        row_offsets = (np.arange(self.rows, dtype=np.int64) * self.buckets)[:, None]
        with self._blas_limit():
            for start, chunk in self._chunks(emb):
                flat = self._hash_chunk(chunk) + row_offsets
                hits = np.take(flat_counts, flat)
                out[start : start + chunk.shape[0]] = hits.sum(axis=0, dtype=np.int64) / self.rows
        if normalize:
            if self.n_docs == 0:
                raise ValueError("cannot normalize the scores of an empty sketch (n_docs == 0)")
            out /= self.n_docs
        return out

    # ------------------------------------------------------------------ merge
    def parameters(self) -> dict[str, object]:
        """Everything that must match for two sketches to be mergeable."""
        return {
            "dim": self.dim,
            "rows": self.rows,
            "buckets": self.buckets,
            "bandwidth": self.bandwidth,
            "hashes_per_row": self.hashes_per_row,
            "pool": self.pool,
            "seed": self.seed,
            "embedder_id": self.embedder_id,
        }

    def check_compatible(self, other: RaceSketch) -> None:
        mine, theirs = self.parameters(), other.parameters()
        for name, value in mine.items():
            if theirs[name] != value:
                raise SketchMismatchError(f"cannot merge sketches: {name} differs ({value!r} vs {theirs[name]!r})")
        if self.fingerprint != other.fingerprint:
            raise SketchMismatchError(
                "cannot merge sketches: projection fingerprint differs "
                f"({self.fingerprint} vs {other.fingerprint}); built by incompatible numpy random streams?"
            )

    def merge(self, other: RaceSketch) -> RaceSketch:
        """A new sketch of the union of both corpora (counts add)."""
        if not isinstance(other, RaceSketch):
            raise TypeError(f"can only merge a RaceSketch, got {type(other).__name__}")
        self.check_compatible(other)
        return RaceSketch(
            **self.parameters(),
            n_docs=self.n_docs + other.n_docs,
            counts=self.counts + other.counts,
            chunk_rows=self.chunk_rows,
        )

    def __add__(self, other: RaceSketch) -> RaceSketch:
        return self.merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RaceSketch):
            return NotImplemented
        return (
            self.parameters() == other.parameters()
            and self.n_docs == other.n_docs
            and np.array_equal(self.counts, other.counts)
        )

    # ------------------------------------------------------------------- file
    def _header(self) -> dict[str, object]:
        counts = np.ascontiguousarray(self.counts, dtype="<i8")
        return {
            **self.parameters(),
            "n_docs": self.n_docs,
            "dtype": "<i8",
            "fingerprint": self.fingerprint,
            "counts_sha256": hashlib.sha256(counts.tobytes()).hexdigest(),
        }

    def save(self, path: str | Path) -> Path:
        """Write header + counts atomically (temp file, then rename)."""
        path = Path(path)
        header = json.dumps(self._header(), sort_keys=True).encode("utf-8")
        payload = np.ascontiguousarray(self.counts, dtype="<i8").tobytes()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(_PREAMBLE.pack(_MAGIC, _FORMAT_VERSION, len(header)))
                handle.write(header)
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path, expected: dict[str, object] | None = None) -> RaceSketch:
        """Read and validate a sketch file.

        ``expected`` (e.g. ``other.parameters()`` or ``{"embedder_id": ...}``)
        names parameters the file must have; a difference is a SketchFileError.
        """
        path = Path(path)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise SketchFileError(f"{path}: cannot read sketch file ({exc.strerror or exc})") from exc
        if len(blob) < _PREAMBLE.size:
            raise SketchFileError(
                f"{path}: truncated, {len(blob)} bytes is shorter than the {_PREAMBLE.size}-byte preamble"
            )
        magic, version, header_len = _PREAMBLE.unpack_from(blob)
        if magic != _MAGIC:
            raise SketchFileError(f"{path}: not a RACE sketch file (bad magic {magic!r})")
        if version != _FORMAT_VERSION:
            raise SketchFileError(f"{path}: unsupported format version {version} (this code reads {_FORMAT_VERSION})")
        header_end = _PREAMBLE.size + header_len
        if len(blob) < header_end:
            raise SketchFileError(f"{path}: truncated inside the header ({len(blob)} of >= {header_end} bytes)")
        try:
            header = json.loads(blob[_PREAMBLE.size : header_end].decode("utf-8"))
            rows, buckets = int(header["rows"]), int(header["buckets"])
            params = {
                "dim": int(header["dim"]),
                "rows": rows,
                "buckets": buckets,
                "bandwidth": float(header["bandwidth"]),
                "hashes_per_row": int(header["hashes_per_row"]),
                "pool": int(header["pool"]),
                "seed": int(header["seed"]),
                "embedder_id": str(header["embedder_id"]),
            }
            n_docs = int(header["n_docs"])
            if min(rows, buckets, params["dim"], params["hashes_per_row"], params["pool"]) < 1 or n_docs < 0:
                raise ValueError("sizes must be positive and n_docs non-negative")
            checksum = str(header["counts_sha256"])
            fingerprint = str(header["fingerprint"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SketchFileError(f"{path}: corrupt header ({type(exc).__name__}: {exc})") from exc
        if header.get("dtype") != "<i8":
            raise SketchFileError(f"{path}: unsupported counts dtype {header.get('dtype')!r}")
        expected_bytes = rows * buckets * 8
        payload = blob[header_end:]
        if len(payload) != expected_bytes:
            problem = "truncated" if len(payload) < expected_bytes else "has trailing bytes"
            raise SketchFileError(
                f"{path}: {problem}: counts hold {len(payload)} bytes, "
                f"header says {rows}x{buckets} int64 = {expected_bytes}"
            )
        if hashlib.sha256(payload).hexdigest() != checksum:
            raise SketchFileError(f"{path}: corrupt counts (sha256 does not match the header checksum)")
        for name, value in (expected or {}).items():
            if name not in params and name != "n_docs":
                raise ValueError(f"unknown sketch parameter {name!r} in expected")
            actual = n_docs if name == "n_docs" else params[name]
            if actual != value:
                raise SketchFileError(f"{path}: mismatched {name}: file has {actual!r}, expected {value!r}")
        sketch = cls(
            **params,
            n_docs=n_docs,
            counts=np.frombuffer(payload, dtype="<i8").astype(np.int64).reshape(rows, buckets),
        )
        if sketch.fingerprint != fingerprint:
            raise SketchFileError(
                f"{path}: mismatched projection fingerprint: file has {fingerprint}, "
                f"this numpy regenerates {sketch.fingerprint}; the sketch cannot be queried here"
            )
        return sketch


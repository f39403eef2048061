"""What storing embeddings as float16 (attributes.VECTOR_DTYPE) changes downstream.

Embeds a seeded sample of the default corpus's JSONL shards with the bundled embedder, then runs
the consumers of stored vectors on the float32 vectors and on the same vectors rounded to float16:
the RACE density sketch (default parameters), k-means (clustering.default_k clusters, seed 0),
SemDeDup and Prototypes at rate 0.2. One figure per line:

    python benchmarks/bench_vector_precision.py [--docs 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dselect_assets.core.density import clustering  # noqa: E402
from dselect_assets.core.density.race_sketch import RaceSketch  # noqa: E402
from dselect_assets.core.scoring.embed import SentenceEmbedder  # noqa: E402
from dselect_assets.core.selection import samplers  # noqa: E402
from dselect_assets.store.attributes import VECTOR_DTYPE  # noqa: E402


def density(x: np.ndarray) -> np.ndarray:
    sketch = RaceSketch.empty(dim=x.shape[1])
    sketch.add(x)
    return sketch.query(x)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return len(np.intersect1d(a, b)) / max(len(a), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--docs", type=int, default=3000)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for path in sorted(args.corpus.glob("*.jsonl")) for line in path.open()]
    if not texts:
        raise SystemExit(f"{args.corpus}: no JSONL shards (build the default corpus first)")
    pick = np.random.default_rng(0).choice(len(texts), min(args.docs, len(texts)), replace=False)
    embedder = SentenceEmbedder()
    full = embedder.embed([texts[i] for i in sorted(pick)])
    rounded = full.astype(VECTOR_DTYPE).astype(np.float32)
    print(f"documents={len(full)} embedder_dtype={embedder.identity['dtype']} stored_as={VECTOR_DTYPE.name}")
    print(f"max_component_change={np.abs(full - rounded).max():.2e}")
    print(f"density_spearman={spearmanr(density(full), density(rounded)).statistic:.4f}")
    k = clustering.default_k(len(full))
    assigned, _ = clustering.assign(clustering.fit_centroids(full, k, seed=0), full)
    assigned_rounded, _ = clustering.assign(clustering.fit_centroids(rounded, k, seed=0), rounded)
    print(f"kmeans_same_assignment={np.mean(assigned == assigned_rounded):.4f}")
    inputs = {name: samplers.SamplerInputs(n=len(x), embeddings=x, clusters=assigned)
              for name, x in (("full", full), ("rounded", rounded))}
    for sampler in ("semdedup", "prototypes"):
        chosen = {name: samplers.SAMPLERS[sampler](i, 0.2, 0) for name, i in inputs.items()}
        print(f"{sampler}_same_selection={overlap(chosen['full'], chosen['rounded']):.4f}")


if __name__ == "__main__":
    main()

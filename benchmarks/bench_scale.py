"""Peak memory and time of every corpus-wide stage at two corpus sizes, on synthetic documents.

    python benchmarks/bench_scale.py --sizes 1000000 10000000 --cold   # the issue's sizes (about 40 min)
    python benchmarks/bench_scale.py --sizes 100000 1000000        # about 25 min on one core
    python benchmarks/bench_scale.py --sizes 1000 2000 --shard-docs 500 --stages clusters select_full export
    # keep the stores, then run (or profile) one stage again on one of them:
    python benchmarks/bench_scale.py --sizes 1000 2000 --stages density --workdir W --keep
    DAGSTER_HOME=W/home-2000/dagster python -m cProfile -o density.prof benchmarks/bench_scale.py \
        --stage density --home W/home-2000 --corpus W/corpus-2000 --result density.json

The corpus is SYNTHETIC, not text anyone wrote: each document is 8-48 words drawn (Zipf-like)
from a seeded vocabulary of 4,096 letter strings, led by three words that spell its index, so
every text is distinct and the same size and seed give the same bytes. It is written as JSONL
shards of `--shard-docs` documents and ingested by the real `documents` asset. Embeddings
(384-d unit vectors around 64 seeded centres) and Ask-LLM and perplexity scores are seeded
numbers, not model outputs, written through the real attribute-file writers
(dselect_assets/store/attributes.py) under producers registered for the default resources, so
the stages after them read exactly what a real run leaves. No model is loaded.

Each stage runs in its own child process (a fresh ephemeral Dagster instance on the same DuckDB
file); its peak RSS is the child's own high-water mark (VmHWM, read as it ends), so one stage's
peak never hides another's. Its time includes flushing what it wrote to disk; with --cold (root
only) it also starts from an empty page cache, as it would on a corpus larger than memory, so its
time does not depend on which stage ran before it:
  baseline       imports + opening the store, no work (what every stage pays)
  ingest         documents[shard] for every shard
  inputs         the synthetic embeddings and scores, one attribute file per shard and producer
  eval_sets      the held-out splits
  density        density_sketch[shard] for every shard, then the merged density
  clusters       k-means over the embeddings
  select_<s>     selections[<s>@0.20] for every default sampler the inputs allow, and full@1.00
  export         selection_exports[ask_llm_topk@0.20] as jsonl.zst
Output: one line per stage and size, `<stage> <N> peak_rss_mib=<x> seconds=<y>`, then one line
per stage, `<stage> time_ratio=<t(large)/t(small)> rss_ratio=<peak(large)/peak(small)>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCABULARY = 4096
DIM = 384
CENTRES = 64
SEED = 0
RATE = 0.20
EXPORT_KEY = "ask_llm_topk@0.20"
HIGH_QUALITY_DOCS = 200
# The distilled samplers need a probe fitted on judged documents (ask_llm_probe), which loads
# the embedder and judge; the synthetic inputs stop short of it.
NEEDS_A_PROBE = ("ask_llm_distilled", "ask_llm_distilled_density")


# ------------------------------------------------------------------ synthetic inputs


def vocabulary(seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(2 * VOCABULARY)}
    return np.array(sorted(words)[:VOCABULARY])


def synthetic_texts(start: int, count: int, words: np.ndarray, seed: int = SEED) -> list[str]:
    """Documents start..start+count-1: three index words, then 8-48 Zipf-drawn words."""
    rng = np.random.default_rng([seed, 2, start])
    lengths = rng.integers(8, 49, size=count)
    draws = np.minimum(rng.zipf(1.3, size=int(lengths.sum())) - 1, VOCABULARY - 1)
    ends = np.cumsum(lengths)
    texts = []
    for i in range(count):
        n = start + i
        tag = (words[n % VOCABULARY], words[n // VOCABULARY % VOCABULARY], words[n // VOCABULARY**2 % VOCABULARY])
        texts.append(" ".join((*tag, *words[draws[ends[i] - lengths[i]: ends[i]]])))
    return texts


def write_corpus(corpus: Path, eval_dir: Path, n: int, shard_docs: int) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    eval_dir.mkdir(parents=True, exist_ok=True)
    words = vocabulary()
    for number, start in enumerate(range(0, n, shard_docs)):
        path = corpus / f"scale-{number:04d}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            for i, text in enumerate(synthetic_texts(start, min(shard_docs, n - start), words)):
                out.write(json.dumps({"id": f"{path.stem}-{i:07d}", "text": text}) + "\n")
    # Held-out texts from past the corpus's indices, so none is in the corpus.
    with open(eval_dir / "high_quality.jsonl", "w", encoding="utf-8") as out:
        for i, text in enumerate(synthetic_texts(n + 1, HIGH_QUALITY_DOCS, words, seed=SEED + 1)):
            out.write(json.dumps({"id": f"hq-{i}", "text": text}) + "\n")
    return number + 1


def synthetic_vectors(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), size=n)] + rng.normal(0, 0.6 / np.sqrt(DIM), (n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


class SyntheticEmbedder:
    dim = DIM
    identity = {"model": "synthetic:embedding", "seed": SEED}


# ------------------------------------------------------------------ stages (child side)


def _rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _resources(home: Path, corpus: Path) -> dict:
    from dselect_assets.resources import (
        AskLLMJudgeResource,
        DataPaths,
        DuckDBStore,
        EmbedderResource,
        PerplexityLMResource,
    )

    class SyntheticEmbedderResource(EmbedderResource):
        """The density and cluster assets ask the embedder for its dimension and identity only."""

        def load(self):
            return SyntheticEmbedder()

    return {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
        # The stages read these resources' producers; no model is loaded.
        "embedder": SyntheticEmbedderResource(),
        "judge": AskLLMJudgeResource(),
        "perplexity_lm": PerplexityLMResource(),
    }


def write_inputs(resources: dict, shard_names: list[str]) -> int:
    """Seeded embeddings, Ask-LLM and perplexity scores for every document, through the writers
    the scoring assets use, under producers registered as the default resources' results."""
    from dselect_assets.assets.scoring import embedding_identity, perplexity_key, register_producer, resource_key
    from dselect_assets.assets.shard_reader import shard_texts
    from dselect_assets.core.hashing import producer_id as make_producer_id
    from dselect_assets.store import attributes

    store, paths = resources["store"], resources["paths"]
    identities = {kind: {"model": f"synthetic:{kind}", "seed": SEED} for kind in ("ask_llm", "perplexity")}
    identities["embedding"] = embedding_identity(SyntheticEmbedder.identity)
    producers = {kind: make_producer_id(kind, **identity) for kind, identity in identities.items()}
    keys = {"embedding": resource_key("embedding", resources["embedder"]),
            "ask_llm": resource_key("ask_llm", resources["judge"]),
            "perplexity": perplexity_key(resources["perplexity_lm"], resources["judge"])}
    for kind, key in keys.items():
        register_producer(store, producers[kind], kind, identities[kind], key)
    centres = np.random.default_rng([SEED, 3]).normal(size=(CENTRES, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n = 0
    for number, shard in enumerate(shard_names):
        hashes = shard_texts(paths, shard)["content_hash"].to_arrow()
        rng = np.random.default_rng([SEED, 4, number])
        attributes.write_vectors(store.attributes, producers["embedding"], shard, hashes,
                                 synthetic_vectors(rng, centres, len(hashes)))
        p_yes = 1 / (1 + np.exp(-rng.normal(-1, 1.5, len(hashes))))
        attributes.write_chunk(store.attributes, producers["ask_llm"], shard, attributes.score_table(
            producers["ask_llm"], hashes, p_yes, p_yes / (p_yes + (1 - p_yes) * rng.uniform(0.2, 1, len(hashes)))))
        attributes.write_chunk(store.attributes, producers["perplexity"], shard, attributes.score_table(
            producers["perplexity"], hashes, np.abs(rng.normal(4, 1, len(hashes)))))
        n += len(hashes)
    return n


def selection_stages() -> list[str]:
    from dselect_assets.assets.selection import DEFAULT_SAMPLERS, FULL_SAMPLER

    return [f"select_{s}" for s in DEFAULT_SAMPLERS if s not in NEEDS_A_PROBE] + [f"select_{FULL_SAMPLER}"]


def run_stage(stage: str, home: Path, corpus: Path) -> dict:
    import dagster as dg

    from dselect_assets.assets.corpus import documents, list_shard_files
    from dselect_assets.assets.density import clusters, density, density_sketch
    from dselect_assets.assets.exports import selection_exports
    from dselect_assets.assets.selection import (
        FULL_DATA_KEY,
        FULL_SAMPLER,
        eval_sets,
        selection_key,
        selection_partition,
        selections,
    )

    resources = _resources(home, corpus)
    shard_names = [p.name for p in list_shard_files(corpus)]
    out: dict = {}
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", shard_names)

        def materialize(assets, partition_key=None):
            result = dg.materialize(assets, partition_key=partition_key, instance=instance, resources=resources)
            failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
            if failed:
                raise RuntimeError(f"asset checks failed in stage {stage}: {failed}")
            return result

        start = time.perf_counter()
        if stage == "baseline":
            resources["store"].query("SELECT 1")
        elif stage == "ingest":
            for shard in shard_names:
                materialize([documents], shard)
        elif stage == "inputs":
            out["documents"] = write_inputs(resources, shard_names)
        elif stage == "eval_sets":
            materialize([eval_sets])
        elif stage == "density":
            for shard in shard_names:
                materialize([density_sketch], shard)
            materialize([density])
        elif stage == "clusters":
            materialize([clusters])
        elif stage.startswith("select_"):
            sampler = stage.removeprefix("select_")
            key = FULL_DATA_KEY if sampler == FULL_SAMPLER else selection_key(sampler, RATE)
            materialize([selections], selection_partition(key))
        elif stage == "export":
            materialize([selection_exports], selection_partition(EXPORT_KEY))
        else:
            raise ValueError(f"unknown stage {stage!r}")
        # A stage's writes reach the disk within its own time: left to the kernel, the next stage
        # paid for them (at 10M, random after clusters' 7.9 GB copy took 35 s, 28-30 s after a sync).
        os.sync()
        out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------ parent side


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def start_cold() -> None:
    """Empty the page cache, so a stage reads its inputs from disk whatever ran before it: at 10M
    documents the store (about 25 GB) outgrows the cache, so what a stage finds cached depends on
    the stage before (random at 10M: 31-34 s cold, 24-28 s warm), while at 1M every stage finds
    everything cached."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"bench_scale: --cold writes {DROP_CACHES}, which needs root ({exc})") from exc


def run_child(stage: str, home: Path, corpus: Path, cold: bool = False) -> dict:
    """Run one stage in a fresh process; return its result plus its own peak RSS."""
    if cold:
        start_cold()
    result_file = home / f".{stage}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DAGSTER_HOME": str(home / "dagster")}
    command = [sys.executable, __file__, "--stage", stage, "--home", str(home), "--corpus", str(corpus),
               "--result", str(result_file)]
    log_file = home / f"{stage}.log"  # Dagster's event log lines; shown only when the stage fails
    with open(log_file, "wb") as log:
        code = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT).wait()
    if code != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"stage {stage} failed with exit code {code}; end of {log_file}:\n" + "\n".join(tail))
    return json.loads(result_file.read_text())


def all_stages() -> list[str]:
    return ["baseline", "ingest", "inputs", "eval_sets", "density", "clusters", *selection_stages(), "export"]


def needs(stage: str) -> list[str]:
    """The stages whose results `stage` reads."""
    if stage in ("inputs", "eval_sets"):
        return ["ingest"]
    if stage in ("density", "clusters"):
        return ["inputs"]
    if stage == "export":
        return [f"select_{EXPORT_KEY.split('@')[0]}"]
    if stage.startswith("select_"):
        sampler = stage.removeprefix("select_")
        coverage = ["density"] if "density" in sampler else ["clusters"] if sampler in ("semdedup", "prototypes") else []
        return ["inputs", "eval_sets", *coverage]
    return []


def with_prerequisites(wanted: list[str]) -> list[str]:
    """`wanted` and every stage they read, in run order."""
    chosen: set[str] = {"baseline"}

    def add(stage: str) -> None:
        if stage not in all_stages():
            raise SystemExit(f"bench_scale: unknown stage {stage!r}; stages: {' '.join(all_stages())}")
        for before in needs(stage):
            add(before)
        chosen.add(stage)

    for stage in wanted:
        add(stage)
    return [s for s in all_stages() if s in chosen]


def bench_size(n: int, workdir: Path, shard_docs: int, stages: list[str], keep: bool = False,
               cold: bool = False) -> dict[str, dict]:
    home, corpus = workdir / f"home-{n}", workdir / f"corpus-{n}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    (home / "dagster").mkdir(parents=True)
    n_shards = write_corpus(corpus, home / "eval", n, shard_docs)
    os.sync()  # the corpus is the input, written before the clock starts: ingest does not pay for it
    print(f"# N={n}: {n_shards} synthetic JSONL shards of <= {shard_docs} documents", flush=True)
    results = {}
    for stage in stages:
        result = results[stage] = run_child(stage, home, corpus, cold)
        print(f"{stage} {n} peak_rss_mib={result['peak_rss_mib']:.0f} seconds={result['seconds']:.1f}", flush=True)
    if keep:
        print(f"# kept: --home {home} --corpus {corpus}", flush=True)
    else:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--shard-docs", type=int, default=100_000)
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="only these stages and the ones they read (default: all)")
    parser.add_argument("--workdir", type=Path, help="write here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="leave each size's store and corpus in --workdir, to run or profile a stage on them again")
    parser.add_argument("--cold", action="store_true",
                        help="empty the page cache before every stage (needs root): each stage reads from disk")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage:
        result = run_stage(args.stage, args.home, args.corpus)
        args.result.write_text(json.dumps({**result, "peak_rss_mib": _rss_mib("VmHWM")}))
        return 0

    small, large = sorted(args.sizes)
    stages = with_prerequisites(args.stages) if args.stages else all_stages()
    if args.keep and not args.workdir:
        parser.error("--keep needs --workdir")
    print(f"# synthetic corpus (seeded words, vectors and scores; no model), skipped: "
          f"{', '.join(f'select_{s} (needs a fitted probe)' for s in NEEDS_A_PROBE)}", flush=True)
    print("# page cache: emptied before every stage (--cold)" if args.cold else
          "# page cache: as the stage before left it (--cold empties it)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        by_size = {n: bench_size(n, workdir, args.shard_docs, stages, args.keep, args.cold) for n in (small, large)}
    for stage, big in by_size[large].items():
        little = by_size[small][stage]
        print(f"{stage} time_ratio={big['seconds'] / max(little['seconds'], 1e-3):.2f} "
              f"rss_ratio={big['peak_rss_mib'] / little['peak_rss_mib']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

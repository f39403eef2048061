"""Peak memory of ingestion and selection at 25k and 100k small real documents.

The corpus is real text, nothing generated: the lines of the default corpus's
documents (FOLDOC, Jargon, GCIDE, stdlib docstrings, licences, changelogs, file
lists, fortunes...) and, to reach N distinct texts, the paragraphs of GCIDE and
FOLDOC dictionary entries. Every text is distinct (by content hash), so N
documents are N selectable contents. It is written as JSONL shards of a fixed
size, so "bounded" means: peak RSS depends on the shard size, not on N.

Each stage runs in its own child process (a fresh ephemeral Dagster instance on
the same DuckDB file); its peak RSS is that child's own high-water mark (VmHWM,
read by the child as it ends; wait4's ru_maxrss would start from the parent's RSS,
which Linux carries over into an exec'd child), so one stage's peak never hides another's:
  baseline        imports + opening the store, no work (what every stage pays)
  ingest          documents[shard] for every shard, one materialization each
  eval_sets       the held-out splits
  select_random   selections[random@0.20]
  density_inputs  STAND-IN embeddings (hashed bag of words, 384 dims, unit norm) for every
                  shard, then the real density_sketch[shard] and density assets. Real MiniLM
                  over 100k documents on 2 CPU cores takes far too long for a benchmark. The
                  stand-in vectors and their index rows are written in bulk, not through the
                  embeddings asset, whose per-row inserts alone take minutes at 100k
                  (`--embeddings-asset` goes through it anyway).
  select_density  selections[density@0.20]
The ingest stage also samples its RSS after each shard, so growth inside one
process (a leak or an O(N) structure) shows up even where the peak looks flat.

    python benchmarks/bench_scale.py                  # 25k and 100k, with the density path (~2 min on 2 cores)
    python benchmarks/bench_scale.py --no-density     # ingestion and random selection only
    python benchmarks/bench_scale.py --sizes 5000 20000 --shard-docs 2500   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dselect_assets.core.default_corpus import DictDatabase, build_default_corpus  # noqa: E402
from dselect_assets.core.hashing import content_hash  # noqa: E402
from dselect_assets.core.ingest import Document, read_shard  # noqa: E402

MIN_CHARS = 24
MAX_CHARS = 600
STANDIN_DIM = 384
RANDOM_KEY = "random@0.20"
DENSITY_KEY = "density@0.20"
DICTD_DIR = Path("/usr/share/dictd")


# ------------------------------------------------------------------ corpus


def _squash(text: str) -> str:
    return " ".join(text.split())


def real_small_texts(default_corpus: Path, n: int) -> list[str]:
    """`n` distinct real texts of MIN_CHARS..MAX_CHARS characters, in a fixed shuffled order."""
    texts: list[str] = []
    seen: set[str] = set()

    def offer(text: str) -> bool:
        text = _squash(text)
        if MIN_CHARS <= len(text) <= MAX_CHARS:
            digest = content_hash(text)
            if digest not in seen:
                seen.add(digest)
                texts.append(text)
        return len(texts) >= n

    def fill() -> None:
        for shard in sorted(default_corpus.iterdir()):
            for item in read_shard(shard):
                if isinstance(item, Document):
                    for line in item.text.splitlines():
                        if offer(line):
                            return
        for name in ("gcide", "foldoc"):
            db = DictDatabase.load(DICTD_DIR, name)
            for _, offset, length in db.entries():
                raw = db.text(offset, length).replace("{", "").replace("}", "")
                for paragraph in raw.split("\n\n"):
                    if offer(paragraph):
                        return
        raise RuntimeError(f"only {len(texts)} distinct texts available, {n} requested")

    fill()
    random.Random(0).shuffle(texts)
    return texts


def write_shards(texts: list[str], corpus: Path, shard_docs: int) -> list[Path]:
    corpus.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, start in enumerate(range(0, len(texts), shard_docs)):
        path = corpus / f"scale-{number:03d}.jsonl"
        with open(path, "w", encoding="utf-8") as out:
            for i, text in enumerate(texts[start : start + shard_docs]):
                out.write(json.dumps({"id": f"{path.stem}-{i:06d}", "text": text}) + "\n")
        paths.append(path)
    return paths


# ------------------------------------------------------------------ stand-in embedder


class HashedBagOfWords:
    """Stand-in for the sentence embedder: signed feature hashing of lower-cased words.

    Deterministic (crc32, not Python's salted hash) and unit-norm, so texts sharing
    words land close together and the density sketch has structure to count.
    """

    dim = STANDIN_DIM
    identity = {"model": "stand-in:hashed-bag-of-words", "dim": STANDIN_DIM}

    def embed(self, texts: list[str], progress=None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                h = zlib.crc32(word.encode("utf-8"))
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.where(norms == 0, 1.0, norms)
        out[norms[:, 0] == 0, 0] = 1.0  # an all-collisions text still gets a unit vector
        return out


# ------------------------------------------------------------------ stages (child side)


def _rss_mb(field: str = "VmRSS") -> float:
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

    class StandInEmbedderResource(EmbedderResource):
        def load(self):
            return HashedBagOfWords()

    return {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
        "embedder": StandInEmbedderResource(),
        # `selections` names the judge's and the LM's producers by these resources' settings; the
        # random and density samplers read no score, so no model is loaded.
        "judge": AskLLMJudgeResource(),
        "perplexity_lm": PerplexityLMResource(),
    }


def write_standin_embeddings(resources: dict, shard_names: list[str]) -> None:
    """What the embeddings asset writes (one attribute file per shard: hashes + .npy), from a
    stand-in embedder without the asset's bookkeeping; `--embeddings-asset` runs the asset."""
    from dselect_assets.assets.scoring import register_producer, resource_key
    from dselect_assets.assets.shard_reader import shard_texts
    from dselect_assets.core.hashing import producer_id as make_producer_id
    from dselect_assets.store import attributes

    store, paths, model = resources["store"], resources["paths"], HashedBagOfWords()
    producer = make_producer_id("embedding", **model.identity)
    # As the embeddings asset: the configured embedder resource produces it, so `selections` finds it.
    register_producer(store, producer, "embedding", model.identity, resource_key("embedding", resources["embedder"]))
    for shard in shard_names:
        docs = shard_texts(paths, shard)
        attributes.write_vectors(store.attributes, producer, shard, docs["content_hash"].to_arrow(),
                                 model.embed(docs["text"].to_list()))


def run_stage(stage: str, home: Path, corpus: Path) -> dict:
    import dagster as dg

    from dselect_assets.assets.corpus import documents, list_shard_files
    from dselect_assets.assets.density import density, density_sketch
    from dselect_assets.assets.scoring import embeddings
    from dselect_assets.assets.selection import eval_sets, selection_partition, selections

    resources = _resources(home, corpus)
    shard_names = [p.name for p in list_shard_files(corpus)]
    out: dict = {}
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("shards", shard_names)

        def materialize(assets, partition_key=None, run_config=None):
            result = dg.materialize(assets, partition_key=partition_key, instance=instance,
                                    resources=resources, run_config=run_config)
            failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
            if failed:
                raise RuntimeError(f"asset checks failed in stage {stage}: {failed}")
            return result

        start = time.perf_counter()
        if stage == "baseline":
            resources["store"].query("SELECT 1")
        elif stage == "ingest":
            rows, rss_after_shard = 0, []
            for shard in shard_names:
                result = materialize([documents], shard)
                (event,) = result.asset_materializations_for_node("documents")
                rows += event.metadata["rows_read"].value
                rss_after_shard.append(round(_rss_mb(), 1))
            out |= {"rows": rows, "rss_after_shard_mb": rss_after_shard}
        elif stage == "eval_sets":
            materialize([eval_sets])
        elif stage == "select_random":
            materialize([selections], selection_partition(RANDOM_KEY))
        elif stage in ("density_inputs", "density_inputs_via_asset"):
            if stage == "density_inputs_via_asset":
                # Larger chunks than the default: the stand-in is cheap, so per-chunk commits dominate.
                chunk_config = {"ops": {"embeddings": {"config": {"chunk_size": 1024}}}}
                for shard in shard_names:
                    materialize([embeddings], shard, chunk_config)
            else:
                write_standin_embeddings(resources, shard_names)
            for shard in shard_names:
                materialize([density_sketch], shard)
            materialize([density])
        elif stage == "select_density":
            materialize([selections], selection_partition(DENSITY_KEY))
        else:
            raise ValueError(f"unknown stage {stage!r}")
        out["seconds"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------ parent side


def run_child(stage: str, home: Path, corpus: Path) -> dict:
    """Run one stage in a fresh process; return its result plus its own peak RSS."""
    result_file = home / f".{stage}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DAGSTER_HOME": str(home / "dagster")}
    command = [sys.executable, __file__, "--stage", stage, "--home", str(home), "--corpus", str(corpus),
               "--result", str(result_file)]
    log_file = home / f"{stage}.log"  # Dagster's event log lines; shown only when the stage fails
    with open(log_file, "wb") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        code = child.wait()
    if code != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"stage {stage} failed with exit code {code}; end of {log_file}:\n" + "\n".join(tail))
    return json.loads(result_file.read_text())


def bench_size(texts: list[str], n: int, workdir: Path, eval_dir: Path, shard_docs: int, with_density: bool,
               embeddings_asset: bool) -> dict:
    home, corpus = workdir / f"home-{n}", workdir / f"corpus-{n}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    (home / "eval").mkdir(parents=True)
    (home / "dagster").mkdir()
    shutil.copy(eval_dir / "high_quality.jsonl", home / "eval" / "high_quality.jsonl")
    shards = write_shards(texts[:n], corpus, shard_docs)
    corpus_mb = sum(p.stat().st_size for p in shards) / 2**20
    print(f"\nN={n:,}: {len(shards)} shards of <= {shard_docs:,} documents, {corpus_mb:.1f} MiB of JSONL", flush=True)
    stages = ["baseline", "ingest", "eval_sets", "select_random"]
    if with_density:
        stages += ["density_inputs_via_asset" if embeddings_asset else "density_inputs", "select_density"]
    results = {}
    for stage in stages:
        # Both density-input variants are reported under one name.
        result = results[stage.removesuffix("_via_asset")] = run_child(stage, home, corpus)
        extra = ""
        if stage == "ingest":
            extra = f", {result['rows']:,} rows, RSS after each shard (MiB): {result['rss_after_shard_mb']}"
        print(f"  {stage.removesuffix('_via_asset'):15s} peak RSS {result['peak_rss_mb']:7.1f} MiB, "
              f"{result['seconds']:6.1f} s{extra}", flush=True)
    kept = {}
    with duckdb.connect(str(home / "dselect.duckdb"), read_only=True) as con:
        n_contents = con.execute("SELECT count(*) FROM contents").fetchone()[0]
        for key, considered, n_kept in con.execute(
            "SELECT selection_key, n_considered, n_kept FROM selections"
        ).fetchall():
            kept[key] = (considered, n_kept)
    if n_contents != n:
        raise RuntimeError(f"expected {n} distinct documents in the store, found {n_contents}")
    for key, (considered, n_kept) in sorted(kept.items()):
        print(f"  {key}: kept {n_kept:,} of {considered:,} considered")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[25_000, 100_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--shard-docs", type=int, default=12_500)
    parser.add_argument("--no-density", action="store_true", help="skip the stand-in embeddings + density path")
    parser.add_argument("--embeddings-asset", action="store_true",
                        help="write the stand-in embeddings through the embeddings asset (slow: ~2 ms a row)")
    parser.add_argument("--workdir", type=Path, help="keep files here (default: a temporary directory)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage:
        result = run_stage(args.stage, args.home, args.corpus)
        args.result.write_text(json.dumps({**result, "peak_rss_mb": _rss_mb("VmHWM")}))
        return 0

    small, large = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        source, eval_dir = workdir / "default-corpus", workdir / "default-eval"
        if not any(source.glob("shard-*")):
            build_default_corpus(source, eval_dir)
        texts = real_small_texts(source, large)
        lengths = np.array([len(t) for t in texts])
        print(f"corpus: {len(texts):,} distinct real texts, {lengths.mean():.0f} chars mean "
              f"({lengths.min()}..{lengths.max()}), built in {time.perf_counter() - start:.1f} s")
        if not args.no_density:
            print("NOTE: the density path uses STAND-IN embeddings (hashed bag of words, 384-d), "
                  "not the MiniLM embedder; it measures the pipeline's memory, not embedding quality.")
        by_size = {n: bench_size(texts, n, workdir, eval_dir, args.shard_docs, not args.no_density,
                                args.embeddings_asset)
                   for n in (small, large)}

    def k(n: int) -> str:
        return f"{n // 1000}k" if n % 1000 == 0 else str(n)

    figures: list[tuple[str, str]] = []
    for n in (small, large):
        r = by_size[n]
        figures += [
            (f"peak_rss_baseline_mb_{k(n)}", f"{r['baseline']['peak_rss_mb']:.0f}"),
            (f"peak_rss_ingest_mb_{k(n)}", f"{r['ingest']['peak_rss_mb']:.0f}"),
            (f"ingest_docs_per_s_{k(n)}", f"{r['ingest']['rows'] / r['ingest']['seconds']:.0f}"),
            (f"ingest_rss_growth_first_to_last_shard_mb_{k(n)}",
             f"{r['ingest']['rss_after_shard_mb'][-1] - r['ingest']['rss_after_shard_mb'][0]:.0f}"),
            (f"peak_rss_eval_sets_mb_{k(n)}", f"{r['eval_sets']['peak_rss_mb']:.0f}"),
            (f"peak_rss_select_mb_{k(n)}", f"{r['select_random']['peak_rss_mb']:.0f}"),
        ]
        if "select_density" in r:
            figures += [
                (f"peak_rss_density_inputs_standin_mb_{k(n)}", f"{r['density_inputs']['peak_rss_mb']:.0f}"),
                (f"density_inputs_standin_seconds_{k(n)}", f"{r['density_inputs']['seconds']:.1f}"),
                (f"peak_rss_select_density_mb_{k(n)}", f"{r['select_density']['peak_rss_mb']:.0f}"),
            ]
    s, b = by_size[small], by_size[large]
    ratio = f"{k(large)}_over_{k(small)}"

    def above_baseline(r: dict, stage: str) -> float:
        return r[stage]["peak_rss_mb"] - r["baseline"]["peak_rss_mb"]

    for stage, name in (("select_random", "select"), ("select_density", "select_density"),
                        ("density_inputs", "density_inputs_standin"), ("ingest", "ingest")):
        if stage in b:
            figures.append((f"rss_above_baseline_ratio_{name}_{ratio}",
                            f"{above_baseline(b, stage) / max(above_baseline(s, stage), 1.0):.2f}"))
            # Growth per extra document: ~0 where memory is bounded by the shard size.
            figures.append((f"rss_growth_per_1k_docs_{name}_mb",
                            f"{(b[stage]['peak_rss_mb'] - s[stage]['peak_rss_mb']) * 1000 / (large - small):.2f}"))
    for stage, name in (("select_random", "select"), ("ingest", "ingest")):  # the main ratio last
        figures.append((f"rss_ratio_{name}_{ratio}", f"{b[stage]['peak_rss_mb'] / s[stage]['peak_rss_mb']:.2f}"))
    print()
    for name, value in figures:
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

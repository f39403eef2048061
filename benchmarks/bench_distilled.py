"""Distilled Ask-LLM vs the judge it imitates: speed, rank agreement, labelled-probe ROC-AUC.

The pipeline's own judge and embedder (the resources' defaults) score a seeded sample of
the corpus, stratified by shard and length exactly as the `ask_llm_probe` asset draws it;
the probe is fit on the training part (model chosen by cross-validation there) and
compared with the judge on the held-out part (Spearman, Kendall tau) and on the labelled
probe documents it was not fit on (ROC-AUC of each, on --column, by default raw P(yes), the
column the selections rank by). Throughput: the judge's forward passes over every judged document
vs the probe's prediction from stored embeddings (embedding time is reported beside it:
the pipeline pays it anyway for density and SemDeDup).

    python benchmarks/bench_distilled.py [--sample 1000] [--scores-cache /tmp/judged.json]

Corpus: DSELECT_CORPUS_DIR, else $DSELECT_HOME/corpus (the default corpus is built there
when empty); labelled probe: --probe, else $DSELECT_HOME/eval/judge_probe.jsonl.
Goals (issue 11): probe >= 100x the judge's documents/s, held-out Spearman >= 0.8, probe
ROC-AUC within 0.03 of the judge's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from dselect_assets.assets.corpus import list_shard_files  # noqa: E402
from dselect_assets.core import distill  # noqa: E402
from dselect_assets.core.hashing import content_hash, producer_id  # noqa: E402
from dselect_assets.core.ingest import Document, read_shard  # noqa: E402
from dselect_assets.core.judge_eval import load_probe, roc_auc  # noqa: E402
from dselect_assets.resources import AskLLMJudgeResource, DataPaths, EmbedderResource  # noqa: E402


def corpus_documents(corpus: Path) -> tuple[list[str], list[str], list[str]]:
    """(hashes, texts, shard names) of the distinct texts, first occurrence, in file order."""
    seen: dict[str, int] = {}
    hashes, texts, shard_names = [], [], []
    for path in list_shard_files(corpus):
        for doc in read_shard(path):
            if isinstance(doc, Document) and doc.content_hash not in seen:
                seen[doc.content_hash] = len(hashes)
                hashes.append(doc.content_hash)
                texts.append(doc.text)
                shard_names.append(path.name)
    return hashes, texts, shard_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=1000, help="documents the judge scores for the fit")
    parser.add_argument("--heldout-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="auto", help="auto | ridge | mlp")
    parser.add_argument("--column", default="value", choices=distill.TARGETS,
                        help="the judge column selections rank by (SelectionConfig.ask_llm_value)")
    parser.add_argument("--probe-limit", type=int, default=None, help="class-balanced subset of the labelled probe")
    parser.add_argument("--no-length", action="store_true", help="embedding only, no log-length feature")
    parser.add_argument("--probe", default="", help="labelled probe JSONL (id,text,source,label)")
    parser.add_argument("--scores-cache", default="", help="JSON file keeping judge scores and embeddings "
                        "between runs (keyed by the judge's and embedder's producer ids); timings need a cold run")
    args = parser.parse_args()

    paths = DataPaths()
    corpus = paths.corpus
    if not list_shard_files(corpus):
        from dselect_assets.cli import ensure_default_corpus

        ensure_default_corpus()
    hashes, texts, shard_names = corpus_documents(corpus)
    strata = distill.length_strata(shard_names, [len(t) for t in texts])
    sample = distill.stratified_sample(hashes, strata, args.sample, args.seed)
    held = distill.heldout_mask([hashes[i] for i in sample], args.heldout_fraction, args.seed)
    train, heldout = sample[~held], sample[held]

    probe_file = Path(args.probe) if args.probe else paths.root / "eval" / "judge_probe.jsonl"
    labelled = load_probe(probe_file, limit=args.probe_limit, seed=args.seed)
    index = {h: i for i, h in enumerate(hashes)}
    in_train = set(train.tolist())
    lab_rows, lab_labels = [], []
    for text, label in zip(labelled.texts, labelled.labels):
        i = index.get(content_hash(text))
        if i is not None and i not in in_train and i not in lab_rows:
            lab_rows.append(i)
            lab_labels.append(label)
    needed = list(dict.fromkeys(sample.tolist() + lab_rows))
    print(f"corpus: {corpus} ({len(hashes)} distinct texts); sample {len(sample)} (train {len(train)}, "
          f"held-out {len(heldout)}); labelled probe: {len(lab_rows)} of {len(labelled.texts)} documents of "
          f"{probe_file} outside the training part; {len(needed)} documents judged and embedded", flush=True)

    judge = AskLLMJudgeResource().load()
    embedder = EmbedderResource().load()
    key = {"judge": producer_id("ask_llm", **judge.identity), "embedder": producer_id("embedding", **embedder.identity)}
    cache_path = Path(args.scores_cache) if args.scores_cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    if cache.get("key") != key:
        cache = {"key": key, "docs": {}}
    todo = [i for i in needed if hashes[i] not in cache["docs"]]

    judge_s = embed_s = float("nan")
    if todo:
        judge.score([texts[todo[0]]])  # warm-up (first-call allocations, kernel selection)
        embedder.embed([texts[todo[0]]])
        start = time.perf_counter()
        vectors = embedder.embed([texts[i] for i in todo])
        embed_s = time.perf_counter() - start
        judged = []
        start = time.perf_counter()
        for c in range(0, len(todo), 64):
            judged.append(judge.score([texts[i] for i in todo[c:c + 64]]))
            print(f"  judged {min(c + 64, len(todo))}/{len(todo)} ({time.perf_counter() - start:.0f}s)",
                  file=sys.stderr, flush=True)
        judge_s = time.perf_counter() - start
        for i, scores, vector in zip(todo, np.concatenate(judged), vectors):
            cache["docs"][hashes[i]] = [[float(s) for s in scores], vector.tolist()]
        cache["timing"] = {"documents": len(todo), "judge_s": judge_s, "embed_s": embed_s,
                           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if cache_path:
            cache_path.write_text(json.dumps(cache))

    def arrays(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        got = [cache["docs"][hashes[i]] for i in rows]
        return (np.array([v for _, v in got], dtype=np.float32).reshape(len(rows), -1),
                np.array([s for s, _ in got], dtype=np.float64).reshape(len(rows), 2),
                distill.text_lengths([texts[i] for i in rows]))

    x_train, y_train, n_train = arrays(train)
    x_held, y_held, n_held = arrays(heldout)
    x_lab, y_lab, n_lab = arrays(lab_rows)
    start = time.perf_counter()
    fit_config = distill.FitConfig(model=args.model, seed=args.seed, length_feature=not args.no_length)
    probe = distill.fit_probe(x_train, y_train, fit_config, n_train)
    fit_s = time.perf_counter() - start
    col = distill.TARGETS.index(args.column)
    other = distill.TARGETS[1 - col]
    agree = distill.agreement(probe.predict(x_held, n_held), y_held, col)
    judge_auc = roc_auc(y_lab[:, col], lab_labels)
    probe_auc = roc_auc(probe.predict(x_lab, n_lab)[:, col], lab_labels)
    judge_auc_other = roc_auc(y_lab[:, 1 - col], lab_labels)
    probe_auc_other = roc_auc(probe.predict(x_lab, n_lab)[:, 1 - col], lab_labels)

    # Steady-state probe throughput: the embedded documents tiled to 100k rows, best of 5.
    reps = 100_000 // len(sample) + 1
    tiled = np.tile(np.vstack([x_train, x_held]), (reps, 1))[:100_000]
    tiled_n = np.tile(np.concatenate([n_train, n_held]), reps)[:100_000]
    best = min(_timed(lambda: probe.predict(tiled, tiled_n)) for _ in range(5))
    probe_dps = tiled.shape[0] / best

    print(f"probe model: {probe.meta['chosen']} (cross-validated Spearman on the training part: "
          f"{json.dumps(probe.meta['cv_spearman'])}); fit {fit_s:.1f}s on {probe.meta['train_documents']} documents")
    timing = cache.get("timing")
    if timing:
        # A warm run (--scores-cache) reports the judge timing of the run that filled the cache.
        note = "" if todo else f" (measured on {timing['documents']} documents at {timing['measured_at']})"
        judge_dps = timing["documents"] / timing["judge_s"]
        print(f"judge_docs_per_s: {judge_dps:.2f}{note}")
        print(f"embedder_docs_per_s: {timing['documents'] / timing['embed_s']:.1f}{note}")
    else:
        judge_dps = float("nan")
        print("judge_docs_per_s: not measured (every document came from --scores-cache; run cold to time it)")
    print(f"probe_docs_per_s: {probe_dps:.0f}")
    print(f"probe_speedup_vs_judge: {probe_dps / judge_dps:.0f}")
    print(f"judge_seconds_per_1000_docs: {1000 / judge_dps:.1f}")
    print(f"probe_seconds_per_1000_docs: {1000 / probe_dps:.6f}")
    print(f"ranked column: {args.column}")
    print(f"heldout_documents: {agree['documents']}")
    print(f"heldout_spearman: {agree[f'spearman_{args.column}']:.3f}")
    print(f"heldout_kendall: {agree[f'kendall_{args.column}']:.3f}")
    print(f"heldout_spearman_{other}: {agree[f'spearman_{other}']:.3f}")
    print(f"heldout_kendall_{other}: {agree[f'kendall_{other}']:.3f}")
    pred_held = probe.predict(x_held, n_held)[:, col]
    for rate in (0.2, 0.6):
        print(f"heldout_top{round(rate * 100)}pct_overlap: {distill.topk_overlap(pred_held, y_held[:, col], rate):.3f}")
    print(f"labelled_probe_documents: {len(lab_rows)}")
    print(f"judge_roc_auc: {judge_auc:.3f}")
    print(f"probe_roc_auc: {probe_auc:.3f}")
    print(f"roc_auc_gap_judge_minus_probe: {judge_auc - probe_auc:.3f}")
    print(f"judge_roc_auc_{other}: {judge_auc_other:.3f}")
    print(f"probe_roc_auc_{other}: {probe_auc_other:.3f}")
    print(f"goal_speedup_100x: {'met' if probe_dps / judge_dps >= 100 else 'NOT met'}")
    print(f"goal_spearman_0.8: {'met' if agree[f'spearman_{args.column}'] >= 0.8 else 'NOT met'}")
    print(f"goal_auc_within_0.03: {'met' if judge_auc - probe_auc <= 0.03 else 'NOT met'}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

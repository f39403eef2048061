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
    python benchmarks/bench_distilled.py --store data [--sample 3000]

--store DIR reads a finished pipeline's data directory instead (its catalogue, documents, the
judge's scores and the embeddings: no model is run), draws the sample exactly as the asset does
(shard and length strata of the catalogue's contents), and prints held-out Spearman and Kendall
and both labelled-probe ROC-AUCs for the version-1 fit (embedding + log length, ridge or MLP)
and the current default fit side by side, with the probe's prediction time per 1,000 documents
(text features included).

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
from dselect_assets.core.hashing import content_hash, producer_id  # noqa: E402
from dselect_assets.core.ingest.ingest import Document, read_shard  # noqa: E402
from dselect_assets.core.scoring import distill  # noqa: E402
from dselect_assets.core.scoring.judge_eval import load_probe, roc_auc  # noqa: E402
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
    parser.add_argument("--no-length", action="store_true", help="embedding only: no log length, text "
                        "statistics or words")
    parser.add_argument("--probe", default="", help="labelled probe JSONL (id,text,source,label)")
    parser.add_argument("--store", default="", help="a dselect data directory to read judge scores and "
                        "embeddings from (compares the version-1 fit with the current default; no model is run)")
    parser.add_argument("--judge-producer", default="", help="with --store: which ask_llm producer (default: the only one)")
    parser.add_argument("--embedding-producer", default="", help="with --store: which embedding producer")
    parser.add_argument("--scores-cache", default="", help="JSON file keeping judge scores and embeddings "
                        "between runs (keyed by the judge's and embedder's producer ids); timings need a cold run")
    args = parser.parse_args()
    if args.store:
        compare_on_store(args)
        return

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

    def arrays(rows) -> tuple[np.ndarray, np.ndarray, list[str]]:
        got = [cache["docs"][hashes[i]] for i in rows]
        return (np.array([v for _, v in got], dtype=np.float32).reshape(len(rows), -1),
                np.array([s for s, _ in got], dtype=np.float64).reshape(len(rows), 2), [texts[i] for i in rows])

    x_train, y_train, t_train = arrays(train)
    x_held, y_held, t_held = arrays(heldout)
    x_lab, y_lab, t_lab = arrays(lab_rows)
    start = time.perf_counter()
    fit_config = distill.FitConfig(model=args.model, seed=args.seed,
                                   **(EMBEDDING_ONLY_FIT if args.no_length else {}))
    probe = distill.fit_probe(x_train, y_train, fit_config, t_train)
    fit_s = time.perf_counter() - start
    col = distill.TARGETS.index(args.column)
    other = distill.TARGETS[1 - col]
    agree = distill.agreement(probe.predict(x_held, t_held), y_held, col)
    judge_auc = roc_auc(y_lab[:, col], lab_labels)
    probe_auc = roc_auc(probe.predict(x_lab, t_lab)[:, col], lab_labels)
    judge_auc_other = roc_auc(y_lab[:, 1 - col], lab_labels)
    probe_auc_other = roc_auc(probe.predict(x_lab, t_lab)[:, 1 - col], lab_labels)

    # Steady-state probe throughput (text features included): the embedded documents tiled to
    # 20k rows, predicted in the distilled asset's chunks of 4,096, best of 3.
    reps = 20_000 // len(sample) + 1
    tiled = np.tile(np.vstack([x_train, x_held]), (reps, 1))[:20_000]
    tiled_t = ((t_train + t_held) * reps)[:20_000]
    best = min(_timed(lambda: [probe.predict(tiled[c:c + 4096], tiled_t[c:c + 4096])
                               for c in range(0, tiled.shape[0], 4096)]) for _ in range(3))
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
    pred_held = probe.predict(x_held, t_held)[:, col]
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


# The fit of DISTILL_VERSION 1: the embedding and its log length, ridge (each alpha) or the MLP.
VERSION_1_FIT = {"text_statistics": False, "kernel_gammas": (), "bow_weights": ()}
EMBEDDING_ONLY_FIT = {"length_feature": False, "text_statistics": False, "bow_weights": (0.0,)}


def compare_on_store(args) -> None:
    import polars as pl

    from dselect_assets.assets.scoring import shard_values
    from dselect_assets.assets.shard_reader import load_embeddings, texts_for
    from dselect_assets.resources import DuckDBStore
    from dselect_assets.store import attributes, coverage

    root = Path(args.store)
    store = DuckDBStore(database=str(root / "dselect.duckdb"), attributes_dir=str(root / "attributes"))

    def only(kind: str, wanted: str) -> str:
        found = [p for p in attributes.producers_on_disk(store.attributes) if attributes.kind_of(p) == kind]
        if wanted:
            return wanted
        if len(found) != 1:
            raise SystemExit(f"{len(found)} {kind} producers in {store.attributes} ({', '.join(found)}): "
                             f"name one with --{kind.replace('_llm', '').replace('ask', 'judge')}-producer")
        return found[0]

    judge_producer, embedding_producer = only("ask_llm", args.judge_producer), only("embedding", args.embedding_producer)
    with store.connect(read_only=True) as con:
        corpus = pl.from_arrow(coverage.contents_columns(con))
    hashes = corpus["content_hash"].to_list()
    strata = distill.length_strata(corpus["shard"].to_list(), corpus["n_chars"].to_list())
    sample = [hashes[i] for i in distill.stratified_sample(hashes, strata, args.sample, args.seed)]
    held = distill.heldout_mask(sample, args.heldout_fraction, args.seed)
    train = [h for h, out in zip(sample, held) if not out]
    heldout = [h for h, out in zip(sample, held) if out]
    probe_file = Path(args.probe) if args.probe else root / "eval" / "judge_probe.jsonl"
    labelled = load_probe(probe_file, limit=args.probe_limit, seed=args.seed)
    in_corpus, in_train, lab, lab_labels = set(hashes), set(train), [], []
    for text, label in zip(labelled.texts, labelled.labels):
        h = content_hash(text)
        if h in in_corpus and h not in in_train and h not in lab:
            lab.append(h)
            lab_labels.append(label)

    def rows(group):
        judged = np.column_stack([shard_values(store, judge_producer, pl.Series(group, dtype=pl.String), c)
                                  for c in distill.TARGETS])
        return (load_embeddings(store, embedding_producer, group), judged,
                texts_for(store, group)["text"].fill_null("").to_list())

    (x_train, y_train, t_train), (x_held, y_held, t_held), (x_lab, y_lab, t_lab) = map(rows, (train, heldout, lab))
    col = distill.TARGETS.index(args.column)
    other = distill.TARGETS[1 - col]
    judged = np.isfinite(y_held).all(axis=1).sum()
    print(f"store: {root}; judge {judge_producer}, embedder {embedding_producer}; corpus {len(hashes)}, sample "
          f"{len(sample)} (train {len(train)}, held-out {len(heldout)}, {judged} of them judged); labelled probe "
          f"{len(lab)} documents outside the training part", flush=True)
    if np.isfinite(y_train).all(axis=1).sum() < len(train) // 2:
        raise SystemExit("the judge has not scored most of the sample: materialize ask_llm_probe (or "
                         "ask_llm_scores for every shard) in this store first")
    results = {}
    for name, extra in (("version 1 (embedding + log length)", VERSION_1_FIT), ("current default", {})):
        config = distill.FitConfig(model=args.model, seed=args.seed, **extra)
        start = time.perf_counter()
        probe = distill.fit_probe(x_train, y_train, config, t_train)
        fit_s = time.perf_counter() - start
        agree = distill.agreement(probe.predict(x_held, t_held), y_held, col)
        p_lab = probe.predict(x_lab, t_lab)
        x_all, t_all = np.vstack([x_train, x_held]), t_train + t_held
        predict_s = min(_timed(lambda: probe.predict(x_all, t_all)) for _ in range(3))
        results[name] = {
            "chosen": probe.meta["chosen"], "fit_s": round(fit_s, 1),
            "heldout_spearman": agree[f"spearman_{args.column}"], "heldout_kendall": agree[f"kendall_{args.column}"],
            f"heldout_spearman_{other}": agree[f"spearman_{other}"],
            "heldout_top20_overlap": agree["top20_overlap"],
            "roc_auc": roc_auc(p_lab[:, col], lab_labels),
            f"roc_auc_{other}": roc_auc(p_lab[:, 1 - col], lab_labels),
            "probe_seconds_per_1000_docs": 1000 * predict_s / x_all.shape[0],
        }
        print(f"{name}: {probe.meta['chosen']} (CV on the training part: {json.dumps(probe.meta['cv_spearman'])})",
              flush=True)
    judge = {"roc_auc": roc_auc(y_lab[:, col], lab_labels), f"roc_auc_{other}": roc_auc(y_lab[:, 1 - col], lab_labels)}
    # The judge is not run here: its time is the one the last ask_llm_probe in this store measured.
    timed = [distill.Probe.load(f).meta.get("metrics", {}) for f in sorted((root / "probes").glob("*.npz"),
                                                                          key=lambda f: f.stat().st_mtime)]
    judge_s = next((m["judge_seconds_per_1000_docs"] for m in reversed(timed) if m.get("judge_seconds_per_1000_docs")),
                   None)
    if judge_s:
        judge["probe_seconds_per_1000_docs"] = float(judge_s)
        for n in results:
            results[n]["speedup_vs_judge"] = judge_s / results[n]["probe_seconds_per_1000_docs"]
    names = list(results)
    print(f"\nranked column: {args.column}")
    print(f"| | {' | '.join(names)} | judge |")
    print(f"|---|{'---|' * (len(names) + 1)}")
    for key in results[names[0]]:
        cells = [results[n][key] for n in names] + [judge.get(key, "")]
        print(f"| {key} | " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    new = results[names[-1]]
    print(f"goal_spearman_0.8: {'met' if new['heldout_spearman'] >= 0.8 else 'NOT met'}")
    print(f"goal_auc_within_0.03: {'met' if judge['roc_auc'] - new['roc_auc'] <= 0.03 else 'NOT met'}")
    if judge_s:
        print(f"goal_speedup_100x: {'met' if new['speedup_vs_judge'] >= 100 else 'NOT met'} (judge timed by the "
              "store's last ask_llm_probe; seconds per 1,000 documents in the judge column)")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()

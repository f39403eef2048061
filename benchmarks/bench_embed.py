"""Embedding throughput: SentenceEmbedder (length-sorted batches) vs one text at a time.

Same model (bundled all-MiniLM-L6-v2), same texts (CPython stdlib docstrings),
same truncation, one process. The naive loop tokenizes and embeds each text
alone with the identical pooling, so only batching differs.

    python benchmarks/bench_embed.py [--small] [--docs N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench_common import interleaved_best, stdlib_docstrings  # noqa: E402

from dselect_assets.core.scoring.embed import SentenceEmbedder  # noqa: E402
from dselect_assets.core.scoring.models import configure_threads  # noqa: E402


def naive_embed(embedder: SentenceEmbedder, texts: list[str]) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = embedder.tokenizer(text, truncation=True, max_length=embedder.max_length, return_tensors="pt")
            hidden = embedder.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            rows.append(torch.nn.functional.normalize(pooled, dim=1)[0].numpy())
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="64 texts instead of 512")
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="passes; each chunk's fastest counts")
    parser.add_argument("--chunk", type=int, default=128, help="texts per interleaved timing chunk")
    args = parser.parse_args()
    n_docs = args.docs or (64 if args.small else 512)
    threads = configure_threads()
    texts = stdlib_docstrings(n_docs, min_chars=40)
    embedder = SentenceEmbedder(batch_size=args.batch_size)
    tokens = sum(len(ids) for ids in embedder.tokenizer(texts, truncation=True, max_length=embedder.max_length)["input_ids"])
    print(f"model: all-MiniLM-L6-v2; {len(texts)} texts, {tokens} tokens; {threads} threads")

    naive_embed(embedder, texts[:4])
    embedder.embed(texts[:4])
    timings = interleaved_best(args.repeats, len(texts), args.chunk, {
        "naive": lambda idx: naive_embed(embedder, [texts[i] for i in idx]),
        "batched": lambda idx: embedder.embed([texts[i] for i in idx]),
    })
    naive, naive_s = np.concatenate(timings["naive"][0]), timings["naive"][1]
    batched, batched_s = np.concatenate(timings["batched"][0]), timings["batched"][1]

    cos = (naive * batched).sum(1)
    print(f"one at a time: {naive_s:.2f} s, {len(texts) / naive_s:.1f} texts/s")
    print(f"batched (size {args.batch_size}, length-sorted): {batched_s:.2f} s, {len(texts) / batched_s:.1f} texts/s; "
          f"min cosine to one-at-a-time = {cos.min():.6f}")
    print(f"embed_naive_texts_per_s: {len(texts) / naive_s:.1f}")
    print(f"embed_texts_per_s: {len(texts) / batched_s:.1f}")
    print(f"embed_tokens_per_s: {tokens / batched_s:.1f}")
    print(f"embed_speedup_vs_one_at_a_time: {naive_s / batched_s:.2f}")


if __name__ == "__main__":
    main()

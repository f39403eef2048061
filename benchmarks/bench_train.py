"""Training throughput of dselect's tiny-LM loop vs a naive loop on the same model, same process.

dselect: documents packed into one stream, batches of contiguous full windows
(train_lm, default TrainConfig but a short budget; its default thread count).
naive: one document per step (batch 1), truncated/padded to the context, padding
masked out of the loss, torch's default thread count.
Throughput counts only real (non-padding) target tokens. Each loop runs twice,
alternating, and keeps its better run, since other processes share the CPU.

    python benchmarks/bench_train.py [--steps 60] [--naive-steps 150] [--full-run]
    python benchmarks/bench_train.py --corpus data/corpus --high-quality data/eval/high_quality.jsonl

--full-run also trains once on the default token budget and prints its wall time.
--corpus instead trains the default configuration (1 thread, as `dselect run`'s workers
do) on every document of a corpus directory, the "full data" selection, and prints its
wall time and held-out perplexity on the high-quality set next to the unigram baseline
fit on the same documents: the check that the LM learns within the time budget.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dselect_assets.core.lm.lm_tokenizer import encode_documents, end_of_text_id, train_tokenizer
from dselect_assets.core.lm.tiny_lm import TinyGPT
from dselect_assets.core.lm.train import TrainConfig, default_num_threads, train_lm

MODULES = ("argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email.message", "functools",
           "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "pydoc", "re", "socket",
           "sqlite3", "statistics", "subprocess", "tarfile", "textwrap", "threading", "unittest",
           "zipfile")  # fmt: skip


def stdlib_docstrings() -> list[str]:
    docs: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            module = importlib.import_module(name)
            for attr in ["", *sorted(dir(module))]:
                obj = getattr(module, attr) if attr else module
                for member in [obj, *(vars(obj).values() if inspect.isclass(obj) else [])]:
                    doc = inspect.getdoc(member)
                    if doc and len(doc) >= 200:
                        docs[doc] = None
    return list(docs)


def naive_tokens_per_second(token_docs: list[np.ndarray], config: TrainConfig, pad_id: int, steps: int) -> float:
    torch.manual_seed(0)
    model = TinyGPT(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    context = config.context_length
    real_tokens = 0
    started = time.perf_counter()
    for step in range(steps):
        doc = torch.from_numpy(token_docs[step % len(token_docs)][: context + 1].astype(np.int64))
        padded = torch.full((context + 1,), pad_id, dtype=torch.long)
        padded[: doc.numel()] = doc
        targets = padded[1:].clone()
        targets[doc.numel() - 1 :] = -100  # padding is not trained on
        _, loss = model(padded[None, :-1], targets[None])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        real_tokens += doc.numel() - 1
    return real_tokens / (time.perf_counter() - started)


def packed_tokens_per_second(
    token_docs: list[np.ndarray], config: TrainConfig, steps: int, out_dir: Path
) -> float:
    short = replace(config, token_budget=steps * config.tokens_per_step, checkpoint_every=10 * steps)
    return train_lm(token_docs, short, out_dir, seed=0, resume=False).tokens_per_second


def corpus_run(corpus: Path, high_quality: Path, seeds: int) -> None:
    import json
    import os

    from dselect_assets.core.ingest.ingest import Document, read_shard
    from dselect_assets.core.lm.evaluate import perplexity, unigram_perplexity
    from dselect_assets.core.lm.lm_tokenizer import DEFAULT_VOCAB_SIZE

    texts = [doc.text for path in sorted(corpus.iterdir()) if path.is_file()
             for doc in read_shard(path) if isinstance(doc, Document)]
    held_out = [json.loads(line)["text"] for line in high_quality.read_text().splitlines() if line.strip()]
    tokenizer = train_tokenizer(texts, vocab_size=DEFAULT_VOCAB_SIZE)
    token_docs = encode_documents(tokenizer, texts)
    config = TrainConfig().with_vocab(tokenizer.get_vocab_size())
    unigram = unigram_perplexity(token_docs, encode_documents(tokenizer, held_out), config.model.vocab_size)
    print(f"corpus: {len(texts)} documents, {sum(len(d) for d in token_docs)} tokens; config: {config.total_steps} "
          f"steps of {config.batch_size} x {config.context_length}, lr {config.learning_rate}, "
          f"{TinyGPT(config.model).num_parameters()} parameters; load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            result = train_lm(token_docs, config, Path(tmp) / str(seed), seed=seed, resume=False, num_threads=1)
            lm = perplexity(Path(tmp) / str(seed), tokenizer, held_out)
            print(f"seed {seed}: train_wall_s {result.wall_seconds:.1f}, epochs {result.epochs:.2f}, "
                  f"high_quality_ppl {lm['ppl']:.1f}, unigram_ppl {unigram['ppl']:.1f}, "
                  f"ratio {lm['ppl'] / unigram['ppl']:.3f}; load {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="dselect steps per timing run")
    parser.add_argument("--naive-steps", type=int, default=150, help="naive steps per timing run")
    parser.add_argument("--full-run", action="store_true", help="also time one run on the default budget")
    parser.add_argument("--corpus", type=Path, help="train the default config on this corpus directory instead")
    parser.add_argument("--high-quality", type=Path, default=Path("data/eval/high_quality.jsonl"))
    parser.add_argument("--seeds", type=int, default=1, help="with --corpus: seeds trained")
    args = parser.parse_args()
    if args.corpus:
        corpus_run(args.corpus, args.high_quality, args.seeds)
        return

    texts = stdlib_docstrings()
    tokenizer = train_tokenizer(texts, vocab_size=4096)
    token_docs = encode_documents(tokenizer, texts)
    config = TrainConfig().with_vocab(tokenizer.get_vocab_size())
    pad_id = end_of_text_id(tokenizer)
    lengths = np.array([len(d) for d in token_docs])
    print(f"corpus: {len(token_docs)} stdlib docstrings, {lengths.sum()} tokens, median {int(np.median(lengths))}/doc")
    print(f"model: {TinyGPT(config.model).num_parameters()} parameters, context {config.context_length}, "
          f"batch {config.batch_size}; threads: torch default {torch.get_num_threads()}, "
          f"dselect {default_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        naive, packed = [], []
        for _ in range(2):
            naive.append(naive_tokens_per_second(token_docs, config, pad_id, args.naive_steps))
            packed.append(packed_tokens_per_second(token_docs, config, args.steps, Path(tmp) / "packed"))
            print(f"  naive {naive[-1]:.0f} tok/s, dselect {packed[-1]:.0f} tok/s")
        torch.set_num_threads(1)
        naive_one_thread = naive_tokens_per_second(token_docs, config, pad_id, args.naive_steps)
        if args.full_run:
            result = train_lm(token_docs, config, Path(tmp) / "full", seed=0, resume=False)
            print(f"full default run: {result.steps} steps, {result.tokens_seen} tokens, "
                  f"loss {result.loss_history[0]:.2f} -> {result.final_loss:.2f}")

    print(f"naive_single_thread_tokens_per_s: {naive_one_thread:.0f}")
    if args.full_run:
        print(f"default_token_budget: {config.token_budget}")
        print(f"default_run_wall_s: {result.wall_seconds:.1f}")
    print(f"naive_tokens_per_s: {max(naive):.0f}")
    print(f"dselect_tokens_per_s: {max(packed):.0f}")
    print(f"speedup_vs_naive: {max(packed) / max(naive):.2f}")


if __name__ == "__main__":
    main()

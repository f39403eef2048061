"""Ask-LLM scoring throughput: dselect's AskLLMJudge vs a naive transformers loop.

Same model (bundled SmolLM2-135M-Instruct), same documents (CPython stdlib
docstrings), same prompt token ids, one process. The naive loop is what one
writes first: fp32 weights, one document per forward pass, full logits, read
the last row. The judge batches length-sorted documents with left padding,
projects only the answer position onto the vocabulary, reuses the KV cache of
the shared prompt prefix, and runs bf16 where the CPU has native bf16.

    python benchmarks/bench_ask_llm.py [--small] [--docs N]

Optional peer: nano-askllm (not a dselect dependency: it pins transformers<5),
measured when importable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _bench_common import interleaved_best, stdlib_docstrings  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from dselect_assets.core.ask_llm import AskLLMJudge  # noqa: E402
from dselect_assets.core.models import configure_threads, load_causal_or_seq2seq  # noqa: E402


def naive_scores(model, prompts: list[list[int]], yes_ids: list[int]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for ids in prompts:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            out.append(float(torch.softmax(logits, dim=-1)[yes_ids].sum()))
    return np.array(out)


def nano_askllm_peer(tokenizer, model, docs: list[str], batch_size: int):
    """(prompt-token counter, scorer) for nano-askllm over a list of documents, or None
    when it is not installed."""
    try:
        from nano_askllm import AskLLM
    except ImportError:
        print("nano-askllm: not installed (it pins transformers<5, dselect uses transformers 5); skipped")
        return None
    logging.getLogger("nano_askllm").setLevel(logging.ERROR)  # it warns per truncated document
    tokenizer.padding_side = "left"  # its README's setting for decoder-only models
    peer = AskLLM(tokenizer, model, max_tokens=512)

    def count(texts: list[str]) -> int:
        return int(tokenizer(peer.get_prompts(texts), padding=True, return_tensors="pt").attention_mask.sum())

    def run(texts: list[str]) -> None:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                peer.ask(texts[i : i + batch_size])

    return count, run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="8 documents instead of 32")
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--max-doc-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="passes; each chunk's fastest counts")
    parser.add_argument("--chunk", type=int, default=8, help="documents per interleaved timing chunk")
    args = parser.parse_args()
    n_docs = args.docs or (8 if args.small else 32)
    threads = configure_threads()
    docs = stdlib_docstrings(n_docs)

    judge = AskLLMJudge(max_doc_tokens=args.max_doc_tokens, batch_size=args.batch_size)
    judge_fp32 = AskLLMJudge(max_doc_tokens=args.max_doc_tokens, batch_size=args.batch_size, dtype="float32")
    naive_model, tokenizer = load_causal_or_seq2seq(judge.spec, torch.device("cpu"), torch.float32)
    prompts = [judge.prompt_ids(d) for d in docs]
    tokens = sum(len(p) for p in prompts)
    print(f"model: {judge.spec.name}; {len(docs)} docs, {tokens} prompt tokens; {threads} threads; "
          f"judge dtype {judge.dtype}; chunks of {args.chunk} docs, interleaved, best of {args.repeats}")

    # Warm up every path once (first-call allocations and oneDNN kernel selection).
    naive_scores(naive_model, prompts[:1], judge.yes_ids)
    judge.score(docs[:2])
    judge_fp32.score(docs[:2])

    def pick(indices: list[int]) -> list[str]:
        return [docs[i] for i in indices]

    runs = {
        "naive": lambda idx: naive_scores(naive_model, [prompts[i] for i in idx], judge.yes_ids),
        "fp32": lambda idx: judge_fp32.score(pick(idx))[:, 0],
        "auto": lambda idx: judge.score(pick(idx))[:, 0],
    }
    peer = nano_askllm_peer(tokenizer, naive_model, docs, args.batch_size)
    if peer is not None:
        runs["nano"] = lambda idx: peer[1](pick(idx))
    timings = interleaved_best(args.repeats, len(docs), args.chunk, runs)
    naive, naive_s = np.concatenate(timings["naive"][0]), timings["naive"][1]
    fast32, fast32_s = np.concatenate(timings["fp32"][0]), timings["fp32"][1]
    fast, fast_s = np.concatenate(timings["auto"][0]), timings["auto"][1]

    naive_tps, fast32_tps, fast_tps = tokens / naive_s, tokens / fast32_s, tokens / fast_s
    print(f"naive loop (fp32, 1 doc/forward, full logits): {naive_s:.1f} s, {naive_tps:.0f} tokens/s")
    print(f"AskLLMJudge fp32 (batching, last-position logits, prefix cache): {fast32_s:.1f} s, "
          f"{fast32_tps:.0f} tokens/s; max |P(yes) - naive| = {np.abs(fast32 - naive).max():.2e}")
    print(f"AskLLMJudge {str(judge.dtype).removeprefix('torch.')} (default): {fast_s:.1f} s, "
          f"{fast_tps:.0f} tokens/s; max |P(yes) - naive| = {np.abs(fast - naive).max():.2e}, "
          f"Spearman vs naive = {spearmanr(fast, naive).statistic:.3f}")
    if peer is not None:
        peer_tokens, peer_s = peer[0](docs), timings["nano"][1]
        print(f"nano-askllm (fp32, batches of {args.batch_size}, own prompt without chat template): "
              f"{peer_s:.1f} s, {peer_tokens / peer_s:.0f} tokens/s")
        print(f"ask_llm_nano_askllm_tokens_per_s: {peer_tokens / peer_s:.1f}")
    print(f"ask_llm_naive_tokens_per_s: {naive_tps:.1f}")
    print(f"ask_llm_fp32_tokens_per_s: {fast32_tps:.1f}")
    print(f"ask_llm_tokens_per_s: {fast_tps:.1f}")
    print(f"ask_llm_fp32_speedup_vs_naive: {fast32_tps / naive_tps:.2f}")
    if peer is not None:
        print(f"ask_llm_speedup_vs_nano_askllm: {fast_tps / (peer_tokens / peer_s):.2f}")
    print(f"ask_llm_speedup_vs_naive: {fast_tps / naive_tps:.2f}")


if __name__ == "__main__":
    main()

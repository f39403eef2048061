"""Perplexity from the judge's own forward pass against a second pass of the perplexity LM.

    python benchmarks/bench_judge_perplexity.py [--docs N] [--repeats R]

Both sides score the default corpus's labelled judge probe (data/eval/judge_probe.jsonl, else
one built into a temp dir) with the pipeline's default resources:

  separate  AskLLMJudge.score (P(yes)), then PerplexityScorer.score: mean NLL of the document's
            first max_tokens tokens (BOS + text) under the same SmolLM2, a second forward pass.
  fused     AskLLMJudge.score_with_doc_nll: P(yes) and the mean NLL of the document's first
            max_tokens tokens given the judge's prompt before it, from one forward pass.

Timing is interleaved chunk by chunk, best of R per chunk (_bench_common.interleaved_best).
Prints one figure per line: the time of each, fused over separate, the largest difference in
P(yes) between them (0: the same numbers), the Spearman correlation of the two NLLs, and the
ROC-AUC of -NLL (informative above junk) on the probe for each.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from _bench_common import interleaved_best  # noqa: E402
from bench_ask_llm import probe_documents  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400, help="a seeded, label-balanced sample of the probe")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=40)
    args = parser.parse_args()

    import torch

    from dselect_assets.core.scoring.judge_eval import roc_auc
    from dselect_assets.resources import AskLLMJudgeResource, PerplexityLMResource

    torch.set_num_threads(1)
    texts, labels, _ = probe_documents(None, args.docs, seed=0)
    judge = AskLLMJudgeResource().load()
    perplexity = PerplexityLMResource(source="model").load()
    nll_tokens = PerplexityLMResource().max_tokens

    def separate(indices: list[int]) -> np.ndarray:
        chunk = [texts[i] for i in indices]
        return np.column_stack([judge.score(chunk), perplexity.score(chunk)])

    def fused(indices: list[int]) -> np.ndarray:
        return judge.score_with_doc_nll([texts[i] for i in indices], nll_tokens)

    timed = interleaved_best(args.repeats, len(texts), args.chunk, {"separate": separate, "fused": fused})
    (sep_rows, sep_s), (fus_rows, fus_s) = timed["separate"], timed["fused"]
    sep, fus = np.concatenate(sep_rows), np.concatenate(fus_rows)
    plain_nll, judge_nll = sep[:, 2], fus[:, 2]
    ok = ~np.isnan(plain_nll) & ~np.isnan(judge_nll)
    print(f"documents: {len(texts)} (nll_tokens {nll_tokens}, judge max_doc_tokens {judge.max_doc_tokens})")
    print(f"separate_judge_then_perplexity_s: {sep_s:.1f}")
    print(f"fused_judge_with_perplexity_s: {fus_s:.1f}")
    print(f"fused_over_separate_time: {fus_s / sep_s:.3f}")
    print(f"max_abs_p_yes_difference: {np.nanmax(np.abs(sep[:, 0] - fus[:, 0])):.2e}")
    print(f"spearman_judge_nll_vs_plain_nll: {spearmanr(judge_nll[ok], plain_nll[ok]).statistic:.3f}")
    labels_ok = [label for label, keep in zip(labels, ok) if keep]
    print(f"probe_auc_minus_plain_nll: {roc_auc(list(-plain_nll[ok]), labels_ok):.3f}")
    print(f"probe_auc_minus_judge_nll: {roc_auc(list(-judge_nll[ok]), labels_ok):.3f}")


if __name__ == "__main__":
    main()

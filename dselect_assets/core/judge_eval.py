"""How well does an Ask-LLM judge separate informative text from junk?

`evaluate_judge` scores a labelled probe set and reports ROC AUC of P(yes) and of
the normalized P(yes)/(P(yes)+P(no)), plus throughput. The CLI measures every
judge configuration available offline and writes data/reports/judge_report.{json,md}:

    python -m dselect_assets.core.judge_eval --probe data/eval/judge_probe.jsonl [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import kendalltau, rankdata

from dselect_assets.core.hashing import file_sha256


# A non-paper prompt written for tiny judges: the categories spelled out, question last.
PLAIN_QUESTION_PROMPT = (
    "Read the text below and decide whether it is a clear, informative explanation of a topic (yes) "
    "or junk such as lists, code, logs, legal boilerplate, jokes or spam (no).\n\n{example}\n\n"
    "Is it informative? Answer yes or no."
)


class ProbeFileError(ValueError):
    """The probe file is missing or a row is malformed; the message names file and line."""


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random positive outscores a random negative (ties count half).
    NaN scores are dropped; NaN when a class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = ~np.isnan(scores)
    scores, labels = scores[keep], labels[keep]
    n_pos = int((labels == 1).sum())
    n_neg = int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_ci95(scores: Sequence[float], labels: Sequence[int], resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of roc_auc (documents resampled with replacement)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    draws = [roc_auc(scores[idx], labels[idx]) for idx in rng.integers(0, len(scores), (resamples, len(scores)))]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return float(low), float(high)


def evaluate_judge(judge: Any, texts: Sequence[str], labels: Sequence[int]) -> dict[str, Any]:
    """Score `texts` with `judge` (an AskLLMJudge) and compare with `labels` (1 = informative)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    prompt_tokens = sum(len(judge.prompt_ids(t)) for t in texts)
    start = time.perf_counter()
    scores = judge.score(list(texts))
    seconds = time.perf_counter() - start
    scored = ~np.isnan(scores[:, 0])
    return {
        "roc_auc": roc_auc(scores[:, 0], labels),
        "roc_auc_normalized": roc_auc(scores[:, 1], labels),
        "roc_auc_ci95": roc_auc_ci95(scores[:, 0], labels),
        "roc_auc_normalized_ci95": roc_auc_ci95(scores[:, 1], labels),
        "n": int(scored.sum()),
        "n_unscorable": int((~scored).sum()),
        "tokens_per_s": prompt_tokens / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "prompt_tokens": prompt_tokens,
        "scores": scores,
    }


# --------------------------------------------------------------------------- probe file


@dataclass
class ProbeSet:
    path: Path
    ids: list[str]
    texts: list[str]
    labels: list[int]
    sources: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)


def load_probe(path: str | Path, limit: int | None = None, seed: int = 0) -> ProbeSet:
    """Read id,text,source,label JSONL rows; with `limit`, a class-balanced random subset."""
    path = Path(path)
    if not path.is_file():
        raise ProbeFileError(f"probe file not found: {path}")
    ids, texts, labels, sources = [], [], [], []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                label = int(row["label"])
                text = str(row["text"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ProbeFileError(f"{path}:{line_no}: bad probe row ({exc})") from exc
            if label not in (0, 1):
                raise ProbeFileError(f"{path}:{line_no}: label must be 0 or 1, got {label}")
            ids.append(str(row.get("id", line_no)))
            texts.append(text)
            labels.append(label)
            sources.append(str(row.get("source", "")))
    if limit is not None and limit < len(texts):
        rng = np.random.default_rng(seed)
        by_label = {lab: [i for i, x in enumerate(labels) if x == lab] for lab in (0, 1)}
        take_pos = min(len(by_label[1]), limit // 2)
        take_neg = min(len(by_label[0]), limit - take_pos)
        chosen = sorted(
            list(rng.choice(by_label[1], take_pos, replace=False))
            + list(rng.choice(by_label[0], take_neg, replace=False))
        )
        ids, texts, labels, sources = ([seq[i] for i in chosen] for seq in (ids, texts, labels, sources))
    provenance = {
        "path": str(path),
        "sha256": file_sha256(path),
        "rows_used": len(texts),
        "limit": limit,
        "seed": seed,
        "labels": {str(k): v for k, v in sorted(Counter(labels).items())},
        "sources": dict(sorted(Counter(f"{s}:{lab}" for s, lab in zip(sources, labels)).items())),
    }
    manifest = path.parent / "corpus_manifest.json"  # written beside the probe by default_corpus
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
        except ValueError:
            content = {}
        provenance["corpus_manifest"] = {
            "path": str(manifest),
            "seed": content.get("seed"),
            "judge_probe": content.get("judge_probe"),
            "categories": content.get("categories"),
        }
    return ProbeSet(path, ids, texts, labels, sources, provenance)


# --------------------------------------------------------------------------- configurations


@dataclass
class JudgeConfig:
    name: str
    description: str
    build: Callable[[], Any]


def available_configs(max_doc_tokens: int, batch_size: int) -> list[JudgeConfig]:
    """Every judge configuration that can be built offline on this machine."""
    from dselect_assets.core.ask_llm import FEW_SHOT_EXAMPLES, AskLLMJudge
    from dselect_assets.core.models import ModelLoadError, gemma3_spec, smollm2_spec

    common = {"max_doc_tokens": max_doc_tokens, "batch_size": batch_size}
    configs = [
        JudgeConfig(
            "smollm2-chat",
            "SmolLM2-135M-Instruct, paper prompt in the chat template, zero-shot",
            lambda: AskLLMJudge(smollm2_spec(chat_template=True), **common),
        ),
        JudgeConfig(
            "smollm2-raw",
            "SmolLM2-135M-Instruct, paper prompt + '\\n\\nAnswer:' without chat template",
            lambda: AskLLMJudge(smollm2_spec(chat_template=False), **common),
        ),
        JudgeConfig(
            "smollm2-chat-fewshot",
            "SmolLM2-135M-Instruct, chat template, 2 demonstrations (1 yes, 1 no)",
            lambda: AskLLMJudge(smollm2_spec(chat_template=True), few_shot=FEW_SHOT_EXAMPLES, **common),
        ),
        JudgeConfig(
            "smollm2-raw-plain-question",
            "SmolLM2-135M-Instruct, no chat template, a plainer non-paper prompt (PLAIN_QUESTION_PROMPT)",
            lambda: AskLLMJudge(smollm2_spec(chat_template=False), prompt=PLAIN_QUESTION_PROMPT, **common),
        ),
        JudgeConfig(
            "smollm2-chat-fp32",
            "SmolLM2-135M-Instruct, chat template, zero-shot, fp32 weights (the others run in "
            "the 'auto' dtype: bf16 on a CPU with native bf16)",
            lambda: AskLLMJudge(smollm2_spec(chat_template=True), dtype="float32", **common),
        ),
    ]
    try:
        gemma3_spec()
    except ModelLoadError:
        pass
    else:
        configs.append(
            JudgeConfig(
                "gemma3-270m-raw",
                "Gemma 3 270M base (Q4_K_M GGUF), paper prompt + '\\n\\nAnswer:'",
                lambda: AskLLMJudge(gemma3_spec(), **common),
            )
        )
    return configs


def _perplexity_row(probe: ProbeSet, max_tokens: int) -> tuple[dict[str, Any], np.ndarray]:
    from dselect_assets.core.perplexity import PerplexityScorer

    scorer = PerplexityScorer(max_tokens=max_tokens)
    start = time.perf_counter()
    nll = scorer.score(probe.texts)
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for ids in scorer.token_ids(probe.texts))
    row = {
        "name": "perplexity-smollm2",
        "description": "SmolLM2 mean token NLL, lower = informative (the paper's perplexity filter)",
        "roc_auc": roc_auc(-nll, probe.labels),
        "roc_auc_normalized": float("nan"),
        "roc_auc_ci95": roc_auc_ci95(-nll, probe.labels),
        "roc_auc_normalized_ci95": (float("nan"), float("nan")),
        "n": int((~np.isnan(nll)).sum()),
        "n_unscorable": int(np.isnan(nll).sum()),
        "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "prompt_tokens": tokens,
    }
    return row, nll


def _markdown(report: dict[str, Any]) -> str:
    prov = report["probe"]
    lines = [
        "# Ask-LLM judge report",
        "",
        f"Probe set: `{prov['path']}` (sha256 `{prov['sha256'][:16]}…`), {prov['rows_used']} rows, "
        f"labels {prov['labels']} (1 = informative, 0 = junk); documents cut to "
        f"{report['max_doc_tokens']} tokens. Machine: {report['machine']}.",
        "",
        "ROC AUC: probability that an informative document outscores a junk one (0.5 = chance);",
        "brackets: bootstrap 95% interval. Normalized = P(yes)/(P(yes)+P(no)).",
        "",
        "| config | ROC AUC P(yes) | ROC AUC normalized | n | prompt tokens/s | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def auc(value: float, ci: Sequence[float]) -> str:
        return "n/a" if np.isnan(value) else f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"

    for row in report["results"]:
        lines.append(
            f"| {row['name']} | {auc(row['roc_auc'], row['roc_auc_ci95'])} "
            f"| {auc(row['roc_auc_normalized'], row['roc_auc_normalized_ci95'])} | {row['n']} "
            f"| {row['tokens_per_s']:.0f} | {row['seconds']:.1f} |"
        )
    lines += ["", "Configurations:", ""]
    lines += [f"- **{row['name']}**: {row['description']}" for row in report["results"]]
    if report.get("kendall_tau_askllm_vs_perplexity") is not None:
        lines += [
            "",
            f"Kendall tau between the best judge's P(yes) and -NLL: "
            f"{report['kendall_tau_askllm_vs_perplexity']:.3f}.",
        ]
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items())]
    lines += ["", f"Best Ask-LLM configuration by ROC AUC: **{report['best']}**.", ""]
    lines += ["Probe composition (source:label -> rows):", ""]
    lines += [f"- {k}: {v}" for k, v in prov["sources"].items()]
    return "\n".join(lines) + "\n"


def _report(probe: ProbeSet, args: argparse.Namespace, results: list[dict[str, Any]],
            skipped: dict[str, str]) -> dict[str, Any]:
    import platform

    import torch

    judges = [r for r in results if not r["name"].startswith("perplexity")]
    best = max(judges, key=lambda r: max(r["roc_auc"], r["roc_auc_normalized"])) if judges else None
    tau = None
    ppl = next((r for r in results if r["name"].startswith("perplexity")), None)
    if best is not None and ppl is not None:
        a, b = np.array(best["scores"], dtype=float)[:, 0], -np.array(ppl["scores"], dtype=float)
        both = ~np.isnan(a) & ~np.isnan(b)
        tau = float(kendalltau(a[both], b[both]).statistic)
    return {
        "probe": probe.provenance,
        "max_doc_tokens": args.max_doc_tokens,
        "batch_size": args.batch_size,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "results": results,
        "best": best["name"] if best else None,
        "kendall_tau_askllm_vs_perplexity": tau,
        "skipped": skipped,
    }


def _previous_results(path: Path, probe: ProbeSet, max_doc_tokens: int) -> list[dict[str, Any]]:
    """Rows of an earlier report on the same probe subset and truncation, so configs can
    be measured in separate runs (each run is limited in time on a small machine)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    same = (
        old.get("probe", {}).get("sha256") == probe.provenance["sha256"]
        and old.get("probe", {}).get("rows_used") == probe.provenance["rows_used"]
        and old.get("probe", {}).get("limit") == probe.provenance["limit"]
        and old.get("max_doc_tokens") == max_doc_tokens
    )
    return list(old.get("results", [])) if same else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", default="data/eval/judge_probe.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="class-balanced subset size")
    parser.add_argument("--max-doc-tokens", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--configs", default="", help="comma-separated names (default: all available)")
    parser.add_argument("--no-perplexity", action="store_true", help="skip the perplexity baseline row")
    parser.add_argument("--fresh", action="store_true", help="drop rows of an earlier report instead of merging")
    parser.add_argument("--out-dir", default="data/reports")
    args = parser.parse_args(argv)

    probe = load_probe(args.probe, limit=args.limit)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "judge_report.json", out_dir / "judge_report.md"
    wanted = {c for c in args.configs.split(",") if c}
    configs = [c for c in available_configs(args.max_doc_tokens, args.batch_size) if not wanted or c.name in wanted]
    if not args.no_perplexity and (not wanted or "perplexity-smollm2" in wanted):
        configs.append(JudgeConfig("perplexity-smollm2", "", lambda: None))
    results = [] if args.fresh else _previous_results(json_path, probe, args.max_doc_tokens)
    skipped: dict[str, str] = {}

    def save() -> None:
        report = _report(probe, args, results, skipped)
        json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
        md_path.write_text(_markdown(report))

    for config in configs:
        print(f"[judge_eval] {config.name}: {config.description}", file=sys.stderr, flush=True)
        if config.name == "perplexity-smollm2":
            row, nll = _perplexity_row(probe, args.max_doc_tokens)
            row["scores"] = nll.tolist()
        else:
            try:
                judge = config.build()
            except Exception as exc:  # one broken optional model must not sink the report
                skipped[config.name] = f"{type(exc).__name__}: {exc}"
                continue
            metrics = evaluate_judge(judge, probe.texts, probe.labels)
            row = {"name": config.name, "description": config.description, **metrics}
            row["scores"] = metrics["scores"].tolist()
            del judge
        results[:] = [r for r in results if r["name"] != config.name] + [row]
        print(
            f"  roc_auc={row['roc_auc']:.3f} normalized={row['roc_auc_normalized']:.3f} "
            f"tokens/s={row['tokens_per_s']:.0f} seconds={row['seconds']:.1f}",
            file=sys.stderr,
            flush=True,
        )
        save()  # a run cut short still leaves every finished row
    if not results:
        print(f"no judge configuration could be built: {skipped}", file=sys.stderr)
        return 1
    save()
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

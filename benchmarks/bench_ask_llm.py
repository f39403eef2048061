"""Ask-LLM scoring, three systems side by side in one run: a naive transformers loop,
the peer nano-askllm, and dselect's judge, on the same model and the same documents.

    python benchmarks/bench_ask_llm.py [--docs N] [--levers] [--no-peer]

Model: the bundled SmolLM2-135M-Instruct GGUF (its dequantized copy, so all three
read the same fp32 weights). Documents: the default corpus's labelled judge probe
(data/eval/judge_probe.jsonl, else one built into a temp dir with
`python -m dselect_assets.core.default_corpus`), a seeded label-balanced sample.

  naive     fp32, one document per forward pass, full logits, dselect's prompt ids;
            its P(yes) is also the fp32 reference for the Spearman figure.
  nano      nano-askllm 0.2 (PyPI), fp32, batches of 8 as read, its own prompt,
            documents cut to 512 prompt tokens. It pins transformers<5, so it runs in
            its own virtualenv (created here under ~/.cache/dselect/bench-venvs, with
            this machine's torch wheel installed first so pip never fetches a CUDA
            build) as a worker process that times itself on the chunks it is sent.
  dselect   AskLLMJudge exactly as the pipeline configures it (AskLLMJudgeResource
            defaults): length-sorted batches, last-position logits only, the prefix
            KV cache, bf16 where the CPU has native bf16, and the question-first prompt
            (the paper's words, question in the cached prefix; a dselect_paper_prompt row
            shows the paper's order). Its tokens/s counts the cached prefix tokens too, so
            the docs/s column is the fair speed ratio to the peer.

The systems take turns chunk by chunk (naive, nano, dselect on chunk 1, then chunk 2,
...), so load drift on a shared box hits all three alike. Tokens/s counts each
system's own prompt tokens (no padding). --levers adds dselect rows with one lever
off at a time (fp32, no prefix cache, unsorted batches, batch size) and a
duplicate-skipping measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NANO_VERSION = "0.2.3"
NANO_MAX_TOKENS = 512
NANO_BATCH = 8


# ----------------------------------------------------------------------------- peer worker
# Runs inside the peer's virtualenv: only its torch, transformers and nano_askllm.


def nano_worker(model_dir: str, docs_file: str, threads: int) -> None:
    import logging

    import torch
    from nano_askllm import AskLLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("nano_askllm").setLevel(logging.ERROR)  # it warns per truncated document
    torch.set_num_threads(threads)
    docs = json.loads(Path(docs_file).read_text())
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except ValueError:
        # Saved by transformers 5 ("TokenizersBackend"): the same tokenizer.json read
        # by transformers 4's fast tokenizer class, with the same special tokens.
        from transformers import PreTrainedTokenizerFast

        config = json.loads((Path(model_dir) / "tokenizer_config.json").read_text())
        specials = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if config.get(k)}
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(model_dir) / "tokenizer.json"),
                                            model_input_names=["input_ids", "attention_mask"], **specials)
    tokenizer.padding_side = "left"  # its README's setting for decoder-only models
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    if any(p.is_meta for p in model.parameters()):
        # dselect's copy stores the tied embedding once, as lm_head.weight; transformers 4
        # looks for model.embed_tokens.weight. Same tensor, loaded under both names.
        from safetensors.torch import load_file

        state = load_file(str(Path(model_dir) / "model.safetensors"))
        state.setdefault("model.embed_tokens.weight", state["lm_head.weight"])
        model = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
    model.eval()
    peer = AskLLM(tokenizer, model, max_tokens=NANO_MAX_TOKENS)
    with torch.no_grad():
        peer.ask(docs[:2])  # warm-up
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        start, end = map(int, line.split())
        texts = docs[start:end]
        tokens = sum(int(tokenizer(peer.get_prompts([t]), return_tensors="pt").attention_mask.sum()) for t in texts)
        began = time.perf_counter()
        scores: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), NANO_BATCH):
                scores += peer.ask(texts[i : i + NANO_BATCH]).float().tolist()
        seconds = time.perf_counter() - began
        print(json.dumps({"seconds": seconds, "tokens": tokens, "scores": scores}), flush=True)


def nano_venv() -> Path:
    """A virtualenv with nano-askllm and this interpreter's torch build (never a CUDA one)."""
    import torch

    venv = Path(os.environ.get("DSELECT_BENCH_VENVS", Path.home() / ".cache/dselect/bench-venvs")) / "nano-askllm"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import nano_askllm, torch; print(torch.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == torch.__version__:
        return python
    print(f"creating {venv} (torch=={torch.__version__}, nano-askllm=={NANO_VERSION}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    wheels = [d for d in (os.environ.get("PIP_FIND_LINKS", ""), "/opt/wheels") if d and Path(d).is_dir()]
    links = [arg for d in wheels for arg in ("--find-links", d)]
    # This machine's torch first (e.g. 2.13.0+cpu from a local wheel), then pinned by a
    # constraint so resolving nano-askllm cannot swap it for a CUDA build.
    subprocess.run(pip + links + [f"torch=={torch.__version__}"], check=True)
    constraint = venv / "constraints.txt"
    constraint.write_text(f"torch=={torch.__version__}\n")
    subprocess.run(pip + links + ["-c", str(constraint), f"nano-askllm=={NANO_VERSION}"], check=True)
    return python


class NanoPeer:
    """The nano-askllm worker process: send a chunk, get its scores, time and tokens."""

    def __init__(self, model_dir: Path, docs: list[str], threads: int) -> None:
        python = nano_venv()
        self._docs_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(docs, self._docs_file)
        self._docs_file.close()
        env = dict(os.environ, PYTHONPATH="", TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--nano-worker", str(model_dir), self._docs_file.name,
             str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir(),
        )
        self._read()
        self.seconds: dict[int, float] = {}
        self.tokens = 0

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"nano-askllm worker exited with {self.proc.wait()}")
        return json.loads(line)

    def __call__(self, indices: list[int]):
        self.proc.stdin.write(f"{indices[0]} {indices[-1] + 1}\n")
        self.proc.stdin.flush()
        reply = self._read()
        self.last = reply
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        os.unlink(self._docs_file.name)


# ----------------------------------------------------------------------------- main


def probe_documents(path: Path | None, n: int, seed: int) -> tuple[list[str], list[int], str]:
    import random

    if path is None:
        path = ROOT / "data" / "eval" / "judge_probe.jsonl"
        if not path.is_file():
            out = Path(tempfile.mkdtemp(prefix="dselect-bench-corpus-"))
            subprocess.run([sys.executable, "-m", "dselect_assets.core.default_corpus", "--corpus-dir",
                            str(out / "corpus"), "--eval-dir", str(out / "eval")], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            path = out / "eval" / "judge_probe.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    pos = [r for r in rows if int(r["label"]) == 1]
    neg = [r for r in rows if int(r["label"]) == 0]
    picked = [r for pair in zip(pos, neg) for r in pair][:n]  # label-balanced, alternating
    return [r["text"] for r in picked], [int(r["label"]) for r in picked], str(path)


def load_figures() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probe", type=Path, default=None, help="labelled jsonl (text, label)")
    parser.add_argument("--docs", type=int, default=96, help="documents timed (label-balanced sample)")
    parser.add_argument("--chunk", type=int, default=16, help="documents per interleaved timing chunk")
    parser.add_argument("--repeats", type=int, default=1, help="passes; each chunk's fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", action="store_true", help="also time dselect with one lever off at a time")
    parser.add_argument("--no-peer", action="store_true", help="skip nano-askllm")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch
    from _bench_common import interleaved_best
    from scipy.stats import spearmanr

    from dselect_assets.core.scoring.ask_llm import PAPER_PROMPT, AskLLMJudge
    from dselect_assets.core.scoring.judge_eval import roc_auc
    from dselect_assets.core.scoring.models import configure_threads, converted_gguf_dir, load_causal_or_seq2seq
    from dselect_assets.resources import AskLLMJudgeResource

    threads = configure_threads()
    docs, labels, probe_path = probe_documents(args.probe, args.docs, args.seed)
    resource = AskLLMJudgeResource()
    judge = resource.load()
    model_dir = converted_gguf_dir(judge.spec)
    naive_model, _ = load_causal_or_seq2seq(judge.spec, torch.device("cpu"), torch.float32)
    prompts = [judge.prompt_ids(d) for d in docs]
    print(f"model: {judge.spec.name} ({model_dir}); probe {probe_path}: {len(docs)} docs "
          f"({sum(labels)} labelled 1); torch {torch.__version__}, {threads} threads; dselect judge: "
          f"chat_template={judge.uses_chat_template} max_doc_tokens={judge.max_doc_tokens} "
          f"batch_size={judge.batch_size} dtype={judge.identity['dtype']} "
          f"prefix={len(judge.parts.prefix_ids)} suffix={len(judge.parts.suffix_ids)} tokens", flush=True)
    print(f"load_average_start: {load_figures()}", flush=True)

    def naive(indices: list[int]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in indices:
                logits = naive_model(input_ids=torch.tensor([prompts[i]])).logits[0, -1]
                out.append(float(torch.softmax(logits.float(), dim=-1)[judge.yes_ids].sum()))
        return np.array(out)

    def scorer(j: AskLLMJudge):
        return lambda indices: j.score([docs[i] for i in indices])[:, 0]

    runs = {"naive": naive}
    peer = None
    if not args.no_peer:
        peer = NanoPeer(model_dir, docs, threads)
        runs["nano"] = peer
    runs["dselect"] = scorer(judge)
    base = dict(spec=judge.spec, prompt=judge.prompt, max_doc_tokens=judge.max_doc_tokens,
                batch_size=judge.batch_size)
    # The other reading of dtype="auto" on a bf16 CPU (ask_llm.AUTO_CPU_BF16), side by side.
    other = "bfloat16" if judge.bf16_matmul else "bf16-matmul"
    variants: dict[str, AskLLMJudge] = {}
    if judge.dtype != torch.float32 or judge.bf16_matmul:
        variants[f"dselect_{other.replace('-', '_')}"] = AskLLMJudge(**base, dtype=other)
    if judge.prompt != PAPER_PROMPT:  # the default prompt's own lever: the question in the cached prefix
        variants["dselect_paper_prompt"] = AskLLMJudge(**{**base, "prompt": PAPER_PROMPT})
    if args.levers:
        variants |= {
            "dselect_fp32": AskLLMJudge(**base, dtype="float32"),
            "dselect_no_prefix_cache": AskLLMJudge(**base, reuse_prefix_cache=False),
            "dselect_batch_16": AskLLMJudge(**{**base, "batch_size": 16}),
            "dselect_batch_1": AskLLMJudge(**{**base, "batch_size": 1}),
        }
        unsorted = AskLLMJudge(**base)
    runs.update({name: scorer(j) for name, j in variants.items()})
    if args.levers:
        runs["dselect_unsorted"] = lambda indices: _unsorted_score(unsorted, [docs[i] for i in indices])
    for name, fn in runs.items():  # warm-up: first-call allocations, oneDNN kernel choice
        if name != "nano":
            fn([0, 1])

    timings = interleaved_best(args.repeats, len(docs), args.chunk, runs, progress=True)
    print(f"load_average_end: {load_figures()}", flush=True)
    tokens = sum(len(p) for p in prompts)
    seconds = {name: spent for name, (_, spent) in timings.items() if name != "nano"}
    scores = {name: np.concatenate(chunks) for name, (chunks, _) in timings.items() if name != "nano"}
    if peer is not None:
        # The worker timed itself (no pipe or JSON in the figure); each chunk's best pass.
        peer_tokens = sum(json_reply["tokens"] for json_reply in timings["nano"][0])
        seconds["nano"] = _peer_seconds(timings["nano"])
        scores["nano"] = np.concatenate([np.array(r["scores"]) for r in timings["nano"][0]])
        peer.close()
    own_tokens = {name: sum(len(j.prompt_ids(d)) for d in docs) for name, j in variants.items()}
    own_tokens["nano"] = peer_tokens if peer is not None else 0
    tps = {name: own_tokens.get(name, tokens) / spent for name, spent in seconds.items()}
    reference = scores["naive"]  # fp32, unbatched, full forward: the fp32 reference
    _side_by_side(tps, {name: len(docs) / spent for name, spent in seconds.items()}, scores, labels, reference)

    print(f"naive_tokens_per_s: {tps['naive']:.1f}")
    if peer is not None:
        print(f"nano_askllm_tokens_per_s: {tps['nano']:.1f}")
    print(f"dselect_tokens_per_s: {tps['dselect']:.1f}")
    if peer is not None:
        print(f"dselect_vs_nano_askllm: {tps['dselect'] / tps['nano']:.2f}")
    print(f"dselect_vs_naive: {tps['dselect'] / tps['naive']:.2f}")
    print(f"naive_roc_auc: {roc_auc(scores['naive'], labels):.3f}")
    if peer is not None:
        print(f"nano_askllm_roc_auc: {roc_auc(scores['nano'], labels):.3f}")
    print(f"dselect_roc_auc: {roc_auc(scores['dselect'], labels):.3f}")
    print(f"dselect_spearman_vs_fp32: {spearmanr(scores['dselect'], reference).statistic:.4f}")
    print(f"dselect_max_abs_diff_vs_fp32: {np.abs(scores['dselect'] - reference).max():.2e}")
    for name in list(variants) + (["dselect_unsorted"] if args.levers else []):
        print(f"{name}_tokens_per_s: {tps[name]:.1f}")
        print(f"{name}_spearman_vs_fp32: {spearmanr(scores[name], reference).statistic:.4f}")
        print(f"{name}_roc_auc: {roc_auc(scores[name], labels):.3f}")
    if args.levers:
        _duplicates_lever(judge, docs)


def _side_by_side(tps: dict, dps: dict, scores: dict, labels: list[int], reference) -> None:
    """One row per system: its own prompt tokens/s, the ratios to naive and to the peer,
    documents/s (the peer's prompt differs in length from dselect's, so its tokens/s ratio
    and its documents/s ratio differ), ROC-AUC on the labelled probe and Spearman against
    the fp32 reference (left out for the peer, whose prompt is another one)."""
    from scipy.stats import spearmanr

    from dselect_assets.core.scoring.judge_eval import roc_auc

    peer = tps.get("nano")
    print(f"{'system':<28} {'tokens/s':>9} {'x naive':>8} {'x nano':>7} {'docs/s':>7} {'x nano':>7} "
          f"{'ROC-AUC':>8} {'Spearman fp32':>14}")
    for name in sorted(tps, key=lambda n: ("naive", "nano", "dselect", n).index(n)):
        rate = tps[name]
        versus_peer = f"{rate / peer:.2f}" if peer else "-"
        docs_versus_peer = f"{dps[name] / dps['nano']:.2f}" if peer else "-"
        rho = "-" if name == "nano" else f"{spearmanr(scores[name], reference).statistic:.4f}"
        print(f"{name:<28} {rate:>9.1f} {rate / tps['naive']:>8.2f} {versus_peer:>7} {dps[name]:>7.2f} "
              f"{docs_versus_peer:>7} {roc_auc(scores[name], labels):>8.3f} {rho:>14}")


def _peer_seconds(entry) -> float:
    replies, _ = entry
    return sum(r["seconds"] for r in replies)


def _unsorted_score(judge, texts):
    """The judge without length bucketing: batches in input order."""
    import numpy as np

    out = [judge.score(texts[i : i + judge.batch_size]) for i in range(0, len(texts), judge.batch_size)]
    return np.concatenate(out)[:, 0]


def _duplicates_lever(judge, docs: list[str]) -> None:
    """Half the documents repeated once more: with exact-duplicate skipping the extra
    copies cost nothing; without, a forward pass each."""
    import time

    texts = docs[:16] + docs[:16]
    timed = {}
    for skip in (True, False):
        judge.skip_duplicates = skip
        start = time.perf_counter()
        judge.score(texts)
        timed[skip] = time.perf_counter() - start
    judge.skip_duplicates = True
    print(f"dedupe_seconds_32_docs_16_distinct: {timed[True]:.2f} (without: {timed[False]:.2f})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--nano-worker":
        nano_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()

"""Intermediate checkpoints of dselect's tiny LM, and per-document perplexity under one.

The paper's perplexity filter also scores with T5-Large checkpoints from partway through
its training run. Here the same LM the full-data selection trains is stopped at a few
shares of its run (`train_lm(stop_at_step=...)` checkpoints and returns, and the next call
resumes from there, so the weights at each stop are those of one uninterrupted run) and
each stop's weights are kept as a model directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.lm import train
from dselect_assets.core.lm.lm_tokenizer import encode_documents, end_of_text_id
from dselect_assets.core.lm.tiny_lm import WEIGHTS_FILE, TinyGPT, load_model, save_model
from dselect_assets.core.progress import Progress
from dselect_assets.core.scoring.batching import map_padded

CODE_VERSION = "checkpoint_lm/1"


def checkpoint_steps(config: train.TrainConfig, fractions: Sequence[float]) -> list[int]:
    """The step reached after each share of the run; strictly increasing, each below the last step."""
    steps = [max(1, round(f * config.total_steps)) for f in fractions]
    if any(not 0 < f < 1 for f in fractions) or steps != sorted(set(steps)) or steps[-1] >= config.total_steps:
        raise ValueError(f"fractions {list(fractions)} give steps {steps} of {config.total_steps}; they must be "
                         "distinct steps inside the run (a longer token budget separates them)")
    return steps


def step_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"step-{step:06d}"


def train_with_checkpoints(
    token_docs: Sequence[np.ndarray], config: train.TrainConfig, out_dir: str | Path, seed: int,
    fractions: Sequence[float],
) -> list[Path]:
    """Model directories of the LM after each share `fractions` of its run, in order.

    Directories already written are reused; when one is missing the run starts over, since a
    resume state past that step cannot go back to it.
    """
    out_dir = Path(out_dir)
    steps = checkpoint_steps(config, fractions)
    dirs = [step_dir(out_dir, s) for s in steps]
    if all((d / WEIGHTS_FILE).is_file() for d in dirs):
        return dirs
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    for step, target in zip(steps, dirs):
        train.train_lm(token_docs, config, run_dir, seed=seed, resume=True, stop_at_step=step)
        state = torch.load(run_dir / train.RESUME_STATE_FILE, map_location="cpu", weights_only=True)
        if state["step"] != step:
            raise RuntimeError(f"{run_dir}: resume state is at step {state['step']}, expected {step}")
        model = TinyGPT(config.model)
        model.load_state_dict(state["model"])
        staged = target.with_name(target.name + ".partial")
        shutil.rmtree(staged, ignore_errors=True)
        save_model(model, staged)
        shutil.rmtree(target, ignore_errors=True)
        staged.replace(target)
    shutil.rmtree(run_dir, ignore_errors=True)
    return dirs


def document_nll(model: TinyGPT, token_docs: Sequence[np.ndarray], start_token_id: int,
                 batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
    """Mean next-token NLL (nats) of each document, read from an end-of-text token and cut to
    the model's context; NaN for a document with no token to predict. `progress(done, total,
    elapsed)` is called after each batch (core/progress.py)."""
    context = model.config.context_length
    device = next(model.parameters()).device
    rows = [np.concatenate([[start_token_id], np.asarray(d, dtype=np.int64).ravel()])[: context + 1]
            for d in token_docs]
    # A row with only the start token has nothing to predict: empty, so its result stays NaN.
    seqs = [row if len(row) > 1 else row[:0] for row in rows]

    def mean_nll(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits, _ = model(ids[:, :-1].to(device))
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(device)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none", ignore_index=-100)
        return nll.sum(dim=1).cpu() / mask[:, 1:].sum(dim=1)

    return map_padded(seqs, mean_nll, batch_size=batch_size, pad_id=0, progress=progress)


@dataclass(frozen=True)
class CheckpointSpec:
    """What the shared score body reports as the model's name."""

    name: str


class CheckpointPerplexityScorer:
    """The perplexity-filter scorer over one intermediate checkpoint (the interface of
    core/scoring/perplexity.PerplexityScorer: identity, spec.name, score(texts))."""

    def __init__(self, model_dir: str | Path, tokenizer: Tokenizer, tokenizer_sha256: str, name: str):
        self.model = load_model(model_dir)
        self.tokenizer = tokenizer
        self.spec = CheckpointSpec(name)
        self.identity = {
            "model": name,
            "weights_sha256": file_sha256(Path(model_dir) / WEIGHTS_FILE),
            "tokenizer_sha256": tokenizer_sha256,
            "context_length": self.model.config.context_length,
            "code": CODE_VERSION,
        }

    def score(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return document_nll(self.model, encode_documents(self.tokenizer, texts), end_of_text_id(self.tokenizer),
                            progress=progress)

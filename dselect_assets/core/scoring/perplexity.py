"""Perplexity-filter scores: mean next-token negative log-likelihood under a small LM.

Lower is "more likely" text; the paper's perplexity filter keeps the lowest.
Documents are cut to `max_tokens`, batched by similar length with right padding
and attention masks (core/scoring/batching.py). The vocabulary projection is applied in slices of positions
so a large vocabulary (49k-262k) never materializes logits for a whole batch.
Documents with fewer than two tokens have no next-token prediction: NaN.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dselect_assets.core.progress import Progress
from dselect_assets.core.scoring.batching import map_padded
from dselect_assets.core.scoring.models import (
    ModelSpec,
    default_lm_spec,
    load_causal_or_seq2seq,
    model_identity,
    pick_device,
    resolve_dtype,
)

CODE_VERSION = "perplexity/1"

# Positions projected onto the vocabulary at once (rows x vocab floats in memory).
_LOGIT_SLICE = 1024


class PerplexityScorer:
    """Mean token NLL (nats) of each document under a causal LM.

    dtype "auto" runs bf16 where the hardware has native bf16 (NLL moves by ~1e-2)."""

    def __init__(
        self,
        spec: ModelSpec | None = None,
        max_tokens: int = 256,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch

        self.spec = spec or default_lm_spec()
        if self.spec.kind != "causal":
            raise ValueError(f"perplexity needs a causal LM, {self.spec.name} is {self.spec.kind}")
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.device, _ = pick_device(device)
        self.dtype = resolve_dtype(self.device, dtype)
        self.model, self.tokenizer = load_causal_or_seq2seq(self.spec, self.device, self.dtype)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self._identity: dict[str, Any] | None = None
        self._torch = torch

    @property
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {
                "code": CODE_VERSION,
                "model": model_identity(self.spec),
                "max_tokens": self.max_tokens,
                "dtype": str(self.dtype).removeprefix("torch."),
            }
        return self._identity

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Model input per document: the tokenizer's own specials (e.g. BOS) + text,
        cut to max_tokens; [] when the text has fewer than two tokens."""
        stripped = [t.strip() for t in texts]
        if not stripped:
            return []
        bare = self.tokenizer(stripped, add_special_tokens=False)["input_ids"]
        probe = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        x = self.tokenizer("x", add_special_tokens=False)["input_ids"]
        lead = list(probe[: probe.index(x[0])]) if x and x[0] in probe else []
        return [(lead + list(ids))[: self.max_tokens] if len(ids) >= 2 else [] for ids in bare]

    def score(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """float64 [n]: mean NLL per predicted token; NaN for documents under two tokens.
        `progress(done, total, elapsed)` is called after each batch (core/progress.py)."""
        return map_padded(self.token_ids(texts), self._mean_nll, batch_size=self.batch_size,
                          pad_id=self.pad_id, side="right", progress=progress)

    def _mean_nll(self, ids: Any, mask: Any) -> np.ndarray:
        torch = self._torch
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        # Predict token t+1 from position t, only where both are real tokens.
        hidden, targets, valid = hidden[:, :-1], ids[:, 1:], mask[:, 1:].bool()
        flat_hidden, flat_targets = hidden[valid], targets[valid]
        head = self.model.get_output_embeddings()
        nll = torch.empty(flat_targets.shape[0], dtype=torch.float32, device=self.device)
        for start in range(0, flat_targets.shape[0], _LOGIT_SLICE):
            logits = head(flat_hidden[start : start + _LOGIT_SLICE]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            nll[start : start + _LOGIT_SLICE] = torch.nn.functional.cross_entropy(
                logits, flat_targets[start : start + _LOGIT_SLICE], reduction="none"
            )
        per_row = torch.zeros(ids.shape[0], dtype=torch.float32, device=self.device)
        row_of = torch.arange(ids.shape[0], device=self.device).unsqueeze(1).expand_as(valid)[valid]
        per_row.index_add_(0, row_of, nll)
        counts = valid.sum(1).clamp(min=1).float()
        return (per_row / counts).double().cpu().numpy()

"""Sentence embeddings (all-MiniLM-L6-v2 by default) for the coverage samplers.

Mean pooling over non-padding tokens followed by L2 normalization, which is what
sentence-transformers does for this model. Texts are embedded in batches of
similar length (less padding) and returned in input order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dselect_assets.core.models import (
    ModelLoadError,
    ModelSpec,
    default_embedder_path,
    model_identity,
    pick_device,
)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length, longest first (so a memory problem shows early)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class SentenceEmbedder:
    """Embeds texts into unit-length float32 vectors.

    model_path: a BERT-style model directory (default: the bundled all-MiniLM-L6-v2).
    max_length: tokens per text; longer texts are truncated to the model window.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str | None = None,
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else default_embedder_path()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"no embedding model (config.json) at {path}")
        self.spec = ModelSpec(path=path, kind="causal", name=path.name)
        self.device, _ = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except Exception as exc:
            raise ModelLoadError(f"could not load embedding model from {path}: {type(exc).__name__}: {exc}") from exc
        self.model.to(self.device).eval()
        window = int(getattr(self.model.config, "max_position_embeddings", max_length))
        self.max_length = min(int(max_length), window, int(self.tokenizer.model_max_length or window))
        self.batch_size = int(batch_size)
        self.dim = int(self.model.config.hidden_size)
        self._identity: dict[str, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """What determines the vectors: model files + pooling + truncation."""
        if self._identity is None:
            self._identity = {
                "model": model_identity(self.spec),
                "pooling": "mean",
                "normalize": "l2",
                "max_length": self.max_length,
            }
        return self._identity

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim], rows of unit L2 norm, in the order given."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True
        )["input_ids"]
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for batch in length_sorted_batches([len(ids) for ids in encoded], self.batch_size):
                width = max(len(encoded[i]) for i in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch] = pooled.cpu().numpy()
        return out

"""Byte-level BPE tokenizer for the tiny LM.

Trained once (on the whole selectable corpus, not per selection) so every
subset's model shares one vocabulary and perplexities are comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2
) -> Tokenizer:
    """Train a byte-level BPE tokenizer on `texts`.

    Same texts in the same order give the same tokenizer: the BPE trainer breaks
    ties between equally frequent pairs by the pair itself, not by hash order.
    """
    if vocab_size < 256 + 1:
        raise ValueError(f"vocab_size={vocab_size} is below the 256 byte symbols + {END_OF_TEXT}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    return Tokenizer.from_file(str(path))


def end_of_text_id(tokenizer: Tokenizer) -> int:
    token_id = tokenizer.token_to_id(END_OF_TEXT)
    if token_id is None:
        raise ValueError(f"tokenizer has no {END_OF_TEXT} token; train it with train_tokenizer()")
    return token_id


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """One int32 array per text: its token ids followed by the end-of-text id."""
    eot = end_of_text_id(tokenizer)
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.array([*encoding.ids, eot], dtype=np.int32) for encoding in encodings]

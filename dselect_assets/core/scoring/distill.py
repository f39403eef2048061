"""Ask-LLM at embedding cost: distil the judge into a small model over sentence embeddings.

The judge scores a seeded, stratified sample of the corpus; a probe (ridge
regression, a one-hidden-layer MLP or kernel ridge) is fit on the sample's
embeddings, plus the log length and cheap statistics and hashed words of each
text, to predict the judge's logit P(yes) and logit P(yes)/(P(yes)+P(no)), and
then scores every document from its embedding and text, with no judge. This
module has no Dagster and no SQL: sample selection, the document features, the
fit (with model choice by cross-validation on the training part only),
prediction, persistence and the agreement metrics.

Why logits: P(yes) of a small judge is squeezed near 0 or 1 for many documents,
and a linear model of the probability would spend its capacity on that
squashing; on the logit scale the judge's ranking is spread out evenly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from dselect_assets.core.hashing import normalize_text, producer_id

# Bump when the sample rule, the fit or the prediction changes the scores.
DISTILL_VERSION = "2"
TARGETS = ("value", "value_norm")  # the judge's two columns in the scores table
_EPS = 1e-6


class DistillError(ValueError):
    """The judged sample cannot support a fit (too few documents, one class, bad shapes)."""


# --------------------------------------------------------------------------- sample


def _key(seed: int, salt: str, content_hash: str) -> int:
    """A stable pseudo-random rank for a document: the same for a document in any corpus,
    so the sample of a grown corpus keeps the documents it had wherever the quotas allow."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}:{content_hash}".encode()).digest()[:8], "big")


def length_strata(shards: Sequence[str], n_chars: Sequence[int], n_bins: int = 4) -> list[str]:
    """Stratum label per document: its shard and its length quartile over the whole corpus.

    Shards often differ by source or crawl date and the judge's score depends strongly on
    length, so both are spread over the sample like over the corpus.
    """
    lengths = np.asarray(n_chars, dtype=np.float64)
    if lengths.size == 0:
        return []
    edges = np.quantile(lengths, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, lengths, side="right")
    return [f"{shard}|len{int(b)}" for shard, b in zip(shards, bins)]


def stratified_sample(hashes: Sequence[str], strata: Sequence[str], size: int, seed: int) -> np.ndarray:
    """Sorted indices of `min(size, n)` documents, allocated to strata in proportion to their
    size (largest remainder, ties by stratum name) and, inside a stratum, the lowest seeded keys."""
    n = len(hashes)
    if len(strata) != n:
        raise DistillError(f"{n} documents but {len(strata)} strata labels")
    if size < 1:
        raise DistillError(f"sample size must be >= 1, got {size}")
    if size >= n:
        return np.arange(n)
    members: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        members.setdefault(s, []).append(i)
    names = sorted(members)
    share = np.array([len(members[s]) * size / n for s in names])
    quota = np.floor(share).astype(np.int64)
    order = sorted(range(len(names)), key=lambda j: (-(share[j] - quota[j]), names[j]))
    for j in order[: size - int(quota.sum())]:
        quota[j] += 1
    chosen: list[int] = []
    for j, s in enumerate(names):
        ranked = sorted(members[s], key=lambda i: _key(seed, "sample", hashes[i]))
        chosen += ranked[: quota[j]]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def heldout_mask(hashes: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Exactly round(fraction * n) documents (the lowest seeded keys) held out of the fit."""
    if not 0.0 < fraction < 1.0:
        raise DistillError(f"held-out fraction must be in (0, 1), got {fraction}")
    n = len(hashes)
    k = int(math.floor(fraction * n + 0.5))
    order = sorted(range(n), key=lambda i: _key(seed, "heldout", hashes[i]))
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


def probe_producer_id(judge: str, embedder: str, train_hashes: Sequence[str], heldout_hashes: Sequence[str],
                      fit: dict[str, Any]) -> str:
    """The distilled scorer's producer id: judge, embedder, the judged sample and the fit config.

    Any of these changes the predictions, so any of them makes a new producer whose
    scores are computed afresh; the same four reuse every score already stored.
    """
    sample = producer_id("sample", train=sorted(train_hashes), heldout=sorted(heldout_hashes))
    return producer_id("ask_llm_distilled", code=DISTILL_VERSION, judge=judge, embedder=embedder,
                       sample=sample, fit=fit)


# --------------------------------------------------------------------------- document features
#
# What the probe reads beside the embedding. Every one is a function of the normalized text (so
# of the content hash): the fit and every later prediction see the same values for a document.

_WORD = re.compile(r"\w+")
_URL = re.compile(r"https?://|www\.", re.IGNORECASE)
_MARKUP = re.compile(r"<[A-Za-z/!][^>]{0,80}>|&[A-Za-z]+;|&#\d+;")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_STOPWORDS = frozenset(
    "the of and to a in is that it for was on as with be by this are at from or his her an not have but they "
    "which you he she we i had has were their been one all would there what so if can".split()
)
# Character classes of the code points below 128, and one class (index 128) for all the others.
_UPPER, _LOWER, _DIGIT, _SPACE, _PUNCT, _NON_ASCII = range(1, 7)
_CLASS = np.zeros(129, dtype=np.int64)
for _c in range(128):
    _ch = chr(_c)
    _CLASS[_c] = (_UPPER if _ch.isupper() else _LOWER if _ch.islower() else _DIGIT if _ch.isdigit()
                  else _SPACE if _ch.isspace() else _PUNCT if _ch.isprintable() else 0)
_CLASS[128] = _NON_ASCII

# Character and word statistics of the normalized text. On the default corpus (3,000 judged,
# 750 held out; benchmarks/bench_distilled.py --store) ridge on them alone ranks the judge with a
# held-out Spearman of 0.59 (the embedding and length alone: 0.64); in the kernel beside the
# embedding and length they add about 0.02, as the words do, and 0.025 together.
TEXT_STATISTICS = (
    "log_words", "frac_upper", "upper_of_letters", "frac_letters", "frac_digits", "frac_spaces",
    "frac_punctuation", "frac_non_ascii", "mean_word_length", "type_token_ratio_100", "top_word_share",
    "stopword_share", "log_urls", "log_markup", "log_words_per_sentence", "all_caps_word_share",
    "short_word_share", "long_word_share", "capitalized_word_share", "frac_colons", "frac_quotes",
    "frac_brackets", "frac_commas", "frac_periods", "ends_with_punctuation",
)


def _statistics(t: str) -> list[float]:
    n = max(len(t), 1)
    classes = np.bincount(_CLASS[np.minimum(np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32), 128)],
                          minlength=7)
    words = _WORD.findall(t)
    nw = max(len(words), 1)
    lower = [w.lower() for w in words]
    counts: dict[str, int] = {}
    for w in lower:
        counts[w] = counts.get(w, 0) + 1
    head = lower[:100]  # a type-token ratio over a fixed number of words does not just track length
    letters = classes[_UPPER] + classes[_LOWER]
    return [
        math.log1p(len(words)),
        classes[_UPPER] / n,
        classes[_UPPER] / max(letters, 1),
        letters / n,
        classes[_DIGIT] / n,
        classes[_SPACE] / n,
        classes[_PUNCT] / n,
        classes[_NON_ASCII] / n,
        sum(map(len, words)) / nw,
        len(set(head)) / max(len(head), 1),
        max(counts.values(), default=0) / nw,
        sum(w in _STOPWORDS for w in lower) / nw,
        math.log1p(len(_URL.findall(t))),
        math.log1p(len(_MARKUP.findall(t))),
        math.log1p(len(words) / max(len(_SENTENCE_END.findall(t)), 1)),
        sum(len(w) > 1 and w.isupper() for w in words) / nw,
        sum(len(w) <= 2 for w in words) / nw,
        sum(len(w) > 12 for w in words) / nw,
        sum(w[:1].isupper() for w in words) / nw,
        t.count(":") / n,
        (t.count('"') + t.count("'")) / n,
        (t.count("(") + t.count(")") + t.count("[") + t.count("]")) / n,
        t.count(",") / n,
        t.count(".") / n,
        float(t[-1:] != "" and t[-1] in ".!?\"'"),
    ]


def text_statistics(texts: Sequence[str]) -> np.ndarray:
    """float64 [n, len(TEXT_STATISTICS)]: the statistics of each normalized text."""
    out = np.array([_statistics(normalize_text(t)) for t in texts], dtype=np.float64)
    return out.reshape(len(texts), len(TEXT_STATISTICS))


def text_lengths(texts: Sequence[str]) -> np.ndarray:
    """Characters of each normalized text: a function of the content hash, so the fit and
    every later prediction see the same value for the same document."""
    return np.array([len(normalize_text(t)) for t in texts], dtype=np.float64)


def hashed_bag_of_words(texts: Sequence[str], dim: int, max_chars: int = 2000):
    """scipy CSR [n, dim]: 1 + log(count) of each lower-cased word and word pair of the first
    `max_chars` normalized characters, hashed with CRC-32 (stable across processes, unlike
    Python's salted `hash`). The judge reads 192-256 tokens, about 800-1,000 characters; caps of 1,000,
    2,000 and none measured the same on the default corpus, and the cap bounds the cost of a
    very long document."""
    import scipy.sparse as sp

    indptr, indices, values = [0], [], []
    for t in texts:
        words = _WORD.findall(normalize_text(t)[:max_chars].lower())
        counts: dict[int, int] = {}
        for g in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            h = zlib.crc32(g.encode("utf-8")) % dim
            counts[h] = counts.get(h, 0) + 1
        keys = sorted(counts)
        indices += keys
        values += [1.0 + math.log(counts[k]) for k in keys]
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64),
                          np.asarray(indptr, dtype=np.int64)), shape=(len(texts), dim))


def _tfidf(counts, idf: np.ndarray):
    """Rows scaled by the idf and then to unit length (a row with no words stays zero)."""
    import scipy.sparse as sp

    weighted = counts @ sp.diags(idf)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted


# --------------------------------------------------------------------------- fit


@dataclass
class FitConfig:
    model: str = "auto"  # auto (choose by cross-validation) | ridge | mlp | kernel
    ridge_alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    mlp_hidden: int = 256
    mlp_epochs: int = 300
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-3
    cv_folds: int = 5
    seed: int = 0
    min_train: int = 20
    # log(characters) beside the embedding: a small judge's P(yes) depends on length, which a
    # mean-pooled, normalized embedding hides (held-out Spearman 0.53 -> 0.68 on the default corpus).
    length_feature: bool = True
    # TEXT_STATISTICS beside the embedding, standardized on the training rows and scaled so that
    # the block weighs about like a fraction of the unit-norm embedding in distances and penalties.
    text_statistics: bool = True
    statistics_scale: float = 0.1
    # Kernel ridge: an RBF kernel on the design rows (embedding, length, statistics) plus, weighted,
    # a linear kernel on hashed word/word-pair tf-idf of the text; every (gamma, weight, alpha) is
    # a candidate of the cross-validation. A bag-of-words weight of 0 leaves the words out.
    kernel_gammas: tuple[float, ...] = (0.5, 1.0, 2.0)
    kernel_alphas: tuple[float, ...] = (0.3, 1.0)
    bow_weights: tuple[float, ...] = (0.0, 1.0)
    bow_dim: int = 1 << 18
    # Kernel ridge holds n x n matrices and solves them (n^3): above this many training rows the
    # kernel candidates are skipped (and the fit says so in meta["kernel_skipped"]).
    kernel_max_train: int = 5000

    def identity(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("ridge_alphas", "kernel_gammas", "kernel_alphas", "bow_weights"):
            out[name] = [float(a) for a in getattr(self, name)]
        return out


def _side_columns(meta: dict[str, Any]) -> int:
    return int(bool(meta.get("length_feature", False))) + (
        len(TEXT_STATISTICS) if meta.get("text_statistics", False) else 0)


@dataclass
class Probe:
    """A fitted probe: logits = f(embedding, text) for each target, predictions = sigmoid(logits).

    Probes fitted with the length feature or the text statistics read each document's text
    beside its embedding (`texts`, one per row); a probe of version 1 read only its length.
    """

    kind: str  # ridge | mlp | kernel
    params: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_length(self) -> bool:
        return bool(self.meta.get("length_feature", False))

    @property
    def uses_text(self) -> bool:
        return self.uses_length or bool(self.meta.get("text_statistics", False)) or "bow_w" in self.params

    @property
    def dim(self) -> int:
        """Embedding dimension (without the length and statistics columns)."""
        first = {"ridge": "W", "mlp": "W1", "kernel": "X_fit"}[self.kind]
        rows = self.params[first].shape[1 if self.kind == "kernel" else 0]
        return int(rows) - _side_columns(self.meta)

    def design(self, x: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DistillError(f"the probe takes [n, {self.dim}] embeddings, got {list(x.shape)}")
        if not self.uses_text:
            return x
        if texts is None or len(texts) != x.shape[0]:
            raise DistillError("this probe also reads each document's text (its length, statistics or words): "
                               "pass one text per row")
        return design(x, texts, self.meta, self.params)

    def predict_logits(self, x: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        z = self.design(x, texts)
        p = self.params
        if self.kind == "ridge":
            return z @ p["W"] + p["b"]
        if self.kind == "kernel":
            out = _rbf(z, p["X_fit"], float(p["gamma"])) @ p["coef"] + p["b"]
            if "bow_w" in p:
                out += _tfidf(hashed_bag_of_words(texts, p["bow_w"].shape[0]), p["bow_idf"]) @ p["bow_w"]
            return out
        hidden = np.maximum(z @ p["W1"] + p["b1"], 0.0)
        return (hidden @ p["W2"] + p["b2"]) * p["y_std"] + p["y_mean"]

    def predict(self, x: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """float64 [n, len(TARGETS)]: predicted P(yes) and normalized P(yes)."""
        return 1.0 / (1.0 + np.exp(-self.predict_logits(x, texts).astype(np.float64)))

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as handle:
            np.savez(handle, **{f"p_{k}": v for k, v in self.params.items()},
                     _kind=np.array(self.kind), _meta=np.array(json.dumps(self.meta, sort_keys=True, default=str)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Probe":
        with np.load(path, allow_pickle=False) as data:
            params = {k[2:]: data[k] for k in data.files if k.startswith("p_")}
            return cls(str(data["_kind"]), params, json.loads(str(data["_meta"])))


def length_column(lengths: np.ndarray) -> np.ndarray:
    """Centred, scaled log length (the scale of a unit-norm embedding's coordinates, roughly)."""
    return (np.log1p(np.asarray(lengths, dtype=np.float64)) - 6.0) / 2.0


def design(x: np.ndarray, texts: Sequence[str], meta: dict[str, Any], params: dict[str, np.ndarray]) -> np.ndarray:
    """The embedding with the probe's side columns appended (float32): the log-length column,
    then the text statistics standardized with the training rows' mean and deviation."""
    columns = [np.asarray(x, dtype=np.float32)]
    if meta.get("length_feature", False):
        columns.append(length_column(text_lengths(texts))[:, None].astype(np.float32))
    if meta.get("text_statistics", False):
        z = (text_statistics(texts) - params["stat_mean"]) / params["stat_std"] * float(params["stat_scale"])
        columns.append(z.astype(np.float32))
    return np.hstack(columns)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def check_labels(y: np.ndarray, min_train: int) -> None:
    """Fail with a message saying what is wrong before any fit is attempted."""
    if y.ndim != 2:
        raise DistillError(f"judge labels must be [n, targets], got shape {list(y.shape)}")
    if y.shape[0] < min_train:
        raise DistillError(
            f"too few judged documents to fit the probe: {y.shape[0]} usable, at least {min_train} needed "
            "(increase the sample size or lower min_train_documents)"
        )
    flat = [j for j in range(y.shape[1]) if np.ptp(y[:, j]) < 1e-9]
    if flat:
        raise DistillError(
            f"the judge gave all {y.shape[0]} training documents the same score (one class: "
            f"{', '.join(TARGETS[j] if j < len(TARGETS) else str(j) for j in flat)} = {y[0, flat[0]]:.4g}); "
            "there is no ranking to learn; check the judge or sample more varied documents"
        )


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Probe:
    return _ridge_path(x, y, [alpha])[0]


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[Probe]:
    """Ridge for every alpha from one SVD of the centred design (closed form, intercept unpenalised)."""
    x = np.asarray(x, dtype=np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    probes = []
    for alpha in alphas:
        w = vt.T @ ((s / (s**2 + alpha))[:, None] * uty)
        b = y_mean - x_mean @ w
        probes.append(Probe("ridge", {"W": w.astype(np.float32), "b": b.astype(np.float32)}, {"alpha": float(alpha)}))
    return probes


def fit_mlp(x: np.ndarray, y: np.ndarray, config: FitConfig) -> Probe:
    """One hidden ReLU layer, full-batch Adam on standardized targets, fixed seed and epochs."""
    import torch

    y_mean, y_std = y.mean(0), np.maximum(y.std(0), 1e-6)
    gen = torch.Generator().manual_seed(config.seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(((y - y_mean) / y_std).astype(np.float32))
    d, h, t = xt.shape[1], config.mlp_hidden, yt.shape[1]
    w1 = (torch.randn(d, h, generator=gen) * math.sqrt(2.0 / d)).requires_grad_()
    b1 = torch.zeros(h, requires_grad=True)
    w2 = (torch.randn(h, t, generator=gen) * math.sqrt(1.0 / h)).requires_grad_()
    b2 = torch.zeros(t, requires_grad=True)
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=config.mlp_lr, weight_decay=config.mlp_weight_decay)
    for _ in range(config.mlp_epochs):
        opt.zero_grad()
        loss = ((torch.relu(xt @ w1 + b1) @ w2 + b2 - yt) ** 2).mean()
        loss.backward()
        opt.step()
    params = {k: v.detach().numpy().copy() for k, v in (("W1", w1), ("b1", b1), ("W2", w2), ("b2", b2))}
    params["y_mean"], params["y_std"] = y_mean.astype(np.float32), y_std.astype(np.float32)
    return Probe("mlp", params, {"hidden": h, "epochs": config.mlp_epochs, "final_train_mse": float(loss.detach())})


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-gamma * np.maximum(sq, 0.0))


def _kernel_solve(k: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Dual coefficients and intercept of kernel ridge (the intercept is the mean, unpenalised)."""
    from scipy.linalg import solve

    y_mean = y.mean(0)
    coef = solve(k + alpha * np.eye(k.shape[0]), y - y_mean, assume_a="pos")
    return coef, y_mean


def _kernel_candidates(config: FitConfig, with_words: bool) -> list[tuple[float, float, float]]:
    weights = [w for w in config.bow_weights if with_words or w == 0.0] or [0.0]
    return [(g, w, a) for g in config.kernel_gammas for w in weights for a in config.kernel_alphas]


def _kernel_name(gamma: float, weight: float, alpha: float) -> str:
    return f"kernel(gamma={gamma:g},bow={weight:g},alpha={alpha:g})"


def fit_kernel(z: np.ndarray, y: np.ndarray, words, idf: np.ndarray | None, gamma: float, weight: float,
               alpha: float) -> Probe:
    """Kernel ridge on the design rows `z` (RBF) plus `weight` x the linear kernel of the tf-idf rows
    `words`; the word part is kept in primal form (one weight per hashed word), so a prediction
    needs the training design rows but not their words."""
    k = _rbf(z, z, gamma)
    if weight > 0:
        k += weight * (words @ words.T).toarray()
    coef, b = _kernel_solve(k, y, alpha)
    params = {"X_fit": np.asarray(z, dtype=np.float32), "coef": coef.astype(np.float32),
              "b": b.astype(np.float32), "gamma": np.array(gamma, dtype=np.float64)}
    if weight > 0:
        params["bow_w"] = np.asarray(weight * (words.T @ coef), dtype=np.float32)
        params["bow_idf"] = idf.astype(np.float32)
    return Probe("kernel", params, {"gamma": gamma, "bow_weight": weight, "alpha": alpha})


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return [order[i::k] for i in range(k)]


def _mean_spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([spearman(pred[:, j], truth[:, j]) for j in range(truth.shape[1])]))


MODELS = ("auto", "ridge", "mlp", "kernel")


def cross_validate(x: np.ndarray, y: np.ndarray, config: FitConfig, words=None) -> dict[str, float]:
    """Mean out-of-fold Spearman (over both targets) of every candidate, on the training part only.

    `words`: the training rows' tf-idf (for the kernel candidates with a bag-of-words weight). Its
    idf is computed over the whole training part, test folds included: that uses their words but
    never their labels.
    """
    if config.model not in MODELS:
        raise DistillError(f"unknown probe model {config.model!r}; use {', '.join(MODELS)}")
    use = {m: config.model in ("auto", m) for m in MODELS[1:]}
    candidates = [f"ridge(alpha={a:g})" for a in config.ridge_alphas] if use["ridge"] else []
    if use["mlp"]:
        candidates.append(f"mlp(hidden={config.mlp_hidden})")
    kernels = _kernel_candidates(config, words is not None) \
        if use["kernel"] and x.shape[0] <= config.kernel_max_train else []
    candidates += [_kernel_name(*c) for c in kernels]
    if not candidates:
        raise DistillError(f"no candidate model to fit: model={config.model!r} with no ridge alphas, kernel gammas "
                           f"or alphas, or more than kernel_max_train={config.kernel_max_train} training rows")
    k = max(2, min(config.cv_folds, x.shape[0] // 5))
    folds = _folds(x.shape[0], k, config.seed)
    oof = {c: np.empty_like(y) for c in candidates}
    for test in folds:
        train = np.setdiff1d(np.arange(x.shape[0]), test)
        if use["ridge"]:
            for a, probe in zip(config.ridge_alphas, _ridge_path(x[train], y[train], config.ridge_alphas)):
                oof[f"ridge(alpha={a:g})"][test] = probe.predict_logits(x[test])
        if use["mlp"]:
            oof[f"mlp(hidden={config.mlp_hidden})"][test] = fit_mlp(x[train], y[train], config).predict_logits(x[test])
    # One n x n RBF matrix at a time (beside the word kernel), sliced for every fold.
    word_kernel = (words @ words.T).toarray() if kernels and words is not None else None
    for gamma in dict.fromkeys(c[0] for c in kernels):
        rbf = _rbf(x, x, gamma)
        for weight in dict.fromkeys(c[1] for c in kernels if c[0] == gamma):
            kk = rbf + weight * word_kernel if weight > 0 else rbf
            for test in folds:
                train = np.setdiff1d(np.arange(x.shape[0]), test)
                for alpha in config.kernel_alphas:
                    coef, b = _kernel_solve(kk[np.ix_(train, train)], y[train], alpha)
                    oof[_kernel_name(gamma, weight, alpha)][test] = kk[np.ix_(test, train)] @ coef + b
    return {c: _mean_spearman(pred, y) for c, pred in oof.items()}


def fit_probe(x: np.ndarray, judge_scores: np.ndarray, config: FitConfig,
              texts: Sequence[str] | None = None) -> Probe:
    """Fit on embeddings `x` [n, d] and the judge's (P(yes), normalized P(yes)) [n, 2]; `texts`
    (one per row) when the config reads the text (length, statistics or words).

    Rows where the judge could not score are dropped. The model (ridge alpha, the MLP, or a
    kernel's gamma, word weight and alpha) is the one with the best cross-validated Spearman on
    these rows; the caller keeps its held-out documents out of `x` so they stay unseen until measured.
    """
    x = np.asarray(x, dtype=np.float32)
    scores = np.asarray(judge_scores, dtype=np.float64)
    if x.ndim != 2 or scores.ndim != 2 or x.shape[0] != scores.shape[0]:
        raise DistillError(f"embeddings {list(x.shape)} and judge scores {list(scores.shape)} do not match")
    words_wanted = config.model in ("auto", "kernel") and any(w > 0 for w in config.bow_weights) and config.bow_dim > 0
    reads_text = config.length_feature or config.text_statistics or words_wanted
    if reads_text and (texts is None or len(texts) != x.shape[0]):
        raise DistillError("the fit config reads each document's text (length_feature, text_statistics or "
                           "bow_weights): pass one text per embedding row")
    keep = np.isfinite(scores).all(axis=1)
    x, y = x[keep], logit(scores[keep])
    texts = [t for t, k in zip(texts, keep) if k] if texts is not None else None
    check_labels(y, config.min_train)
    meta: dict[str, Any] = {"length_feature": config.length_feature, "text_statistics": config.text_statistics}
    side: dict[str, np.ndarray] = {}
    if config.text_statistics:
        stats = text_statistics(texts)
        side = {"stat_mean": stats.mean(0), "stat_std": np.maximum(stats.std(0), 1e-9),
                "stat_scale": np.array(config.statistics_scale, dtype=np.float64)}
    z = design(x, texts, meta, side) if reads_text else x
    words = idf = None
    if words_wanted:
        counts = hashed_bag_of_words(texts, config.bow_dim)
        df = np.bincount(counts.indices, minlength=config.bow_dim)
        idf = np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0
        words = _tfidf(counts, idf)
    cv = cross_validate(z, y, config, words)
    best = max(cv, key=lambda c: (cv[c], -list(cv).index(c)))  # first of equals: the simpler model
    if best.startswith("ridge"):
        probe = fit_ridge(z, y, config.ridge_alphas[list(cv).index(best)])
    elif best.startswith("mlp"):
        probe = fit_mlp(z, y, config)
    else:
        gamma, weight, alpha = next(c for c in _kernel_candidates(config, words is not None)
                                    if _kernel_name(*c) == best)
        probe = fit_kernel(z, y, words, idf, gamma, weight, alpha)
    probe.params.update(side)
    probe.meta.update(meta)
    if config.model in ("auto", "kernel") and z.shape[0] > config.kernel_max_train:
        probe.meta["kernel_skipped"] = f"{z.shape[0]} training rows > kernel_max_train={config.kernel_max_train}"
    probe.meta.update({"chosen": best, "cv_spearman": {c: round(v, 4) for c, v in cv.items()},
                       "train_documents": int(x.shape[0]), "dropped_unscorable": int((~keep).sum()),
                       "targets": list(TARGETS), "fit": config.identity(), "version": DISTILL_VERSION})
    return probe


# --------------------------------------------------------------------------- metrics


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(kendalltau(a[ok], b[ok]).statistic)


def topk_overlap(pred: np.ndarray, truth: np.ndarray, rate: float) -> float:
    """Share of the judge's top `rate` of documents that the probe's top `rate` also keeps:
    what a top-k selection at that rate would have in common (NaN rows left out)."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(truth)
    pred, truth = pred[ok], truth[ok]
    k = int(math.floor(rate * pred.size + 0.5))
    if k < 1:
        return float("nan")
    # Ties broken by position so the figure is reproducible.
    top_truth = np.lexsort((np.arange(truth.size), -truth))[:k]
    top_pred = np.lexsort((np.arange(pred.size), -pred))[:k]
    return float(np.intersect1d(top_truth, top_pred).size / k)


def agreement(pred: np.ndarray, truth: np.ndarray, ranked: int = 0) -> dict[str, float]:
    """Spearman and Kendall tau per target between probe predictions and the judge's scores,
    and the overlap of the two top-20% selections on target `ranked` (what selections rank by)."""
    out: dict[str, float] = {"documents": int(np.isfinite(truth).all(axis=1).sum())}
    for j, name in enumerate(TARGETS):
        out[f"spearman_{name}"] = spearman(pred[:, j], truth[:, j])
        out[f"kendall_{name}"] = kendall(pred[:, j], truth[:, j])
    out["top20_overlap"] = topk_overlap(pred[:, ranked], truth[:, ranked], 0.2)
    return out


def verdict(judge_auc: float, probe_auc: float, spearman_value: float, auc_margin: float,
            min_spearman: float) -> str:
    """One line for the UI: does the probe keep up with the judge it imitates?"""
    problems = []
    if not math.isnan(judge_auc) and not math.isnan(probe_auc) and judge_auc - probe_auc > auc_margin:
        problems.append(f"labelled-probe ROC-AUC {probe_auc:.3f} is {judge_auc - probe_auc:.3f} below the "
                        f"judge's {judge_auc:.3f} (margin {auc_margin})")
    if not math.isnan(spearman_value) and spearman_value < min_spearman:
        problems.append(f"held-out Spearman with the judge {spearman_value:.3f} < {min_spearman}")
    if problems:
        return "BEHIND THE JUDGE: " + "; ".join(problems) + ". Judge a larger sample, or select with ask_llm_topk."
    if math.isnan(judge_auc) or math.isnan(probe_auc) or math.isnan(spearman_value):
        return "NOT MEASURED: too few held-out or labelled documents to compare the probe with the judge"
    return (f"keeps up with the judge: ROC-AUC within {auc_margin} and held-out Spearman "
            f"{spearman_value:.3f} >= {min_spearman}")

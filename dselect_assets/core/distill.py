"""Ask-LLM at embedding cost: distil the judge into a small model over sentence embeddings.

The judge scores a seeded, stratified sample of the corpus; a probe (ridge
regression or a one-hidden-layer MLP) is fit on the sample's embeddings to
predict the judge's logit P(yes) and logit P(yes)/(P(yes)+P(no)), and then
scores every document from its embedding alone. This module has no Dagster
and no SQL: sample selection, the fit (with model choice by cross-validation
on the training part only), prediction, persistence and the agreement metrics.

Why logits: P(yes) of a small judge is squeezed near 0 or 1 for many documents,
and a linear model of the probability would spend its capacity on that
squashing; on the logit scale the judge's ranking is spread out evenly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from dselect_assets.core.hashing import normalize_text, producer_id

# Bump when the sample rule, the fit or the prediction changes the scores.
DISTILL_VERSION = "1"
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


# --------------------------------------------------------------------------- fit


@dataclass
class FitConfig:
    model: str = "auto"  # auto (choose by cross-validation) | ridge | mlp
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

    def identity(self) -> dict[str, Any]:
        out = asdict(self)
        out["ridge_alphas"] = [float(a) for a in self.ridge_alphas]
        return out


@dataclass
class Probe:
    """A fitted probe: logits = f(embedding) for each target, predictions = sigmoid(logits)."""

    kind: str  # ridge | mlp
    params: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_length(self) -> bool:
        return bool(self.meta.get("length_feature", False))

    @property
    def dim(self) -> int:
        """Embedding dimension (without the length column)."""
        return int(self.params["W" if self.kind == "ridge" else "W1"].shape[0]) - int(self.uses_length)

    def predict_logits(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DistillError(f"the probe takes [n, {self.dim}] embeddings, got {list(x.shape)}")
        if self.uses_length:
            if lengths is None or len(lengths) != x.shape[0]:
                raise DistillError("this probe also reads each document's length: pass one length per row")
            x = design(x, lengths)
        p = self.params
        if self.kind == "ridge":
            return x @ p["W"] + p["b"]
        hidden = np.maximum(x @ p["W1"] + p["b1"], 0.0)
        return (hidden @ p["W2"] + p["b2"]) * p["y_std"] + p["y_mean"]

    def predict(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """float64 [n, len(TARGETS)]: predicted P(yes) and normalized P(yes)."""
        return 1.0 / (1.0 + np.exp(-self.predict_logits(x, lengths).astype(np.float64)))

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


def text_lengths(texts: Sequence[str]) -> np.ndarray:
    """Characters of each normalized text: a function of the content hash, so the fit and
    every later prediction see the same value for the same document."""
    return np.array([len(normalize_text(t)) for t in texts], dtype=np.float64)


def design(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The embedding with a centred, scaled log-length column appended (float32)."""
    column = (np.log1p(np.asarray(lengths, dtype=np.float64)) - 6.0) / 2.0
    return np.hstack([np.asarray(x, dtype=np.float32), column[:, None].astype(np.float32)])


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


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    return [order[i::k] for i in range(k)]


def _mean_spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([spearman(pred[:, j], truth[:, j]) for j in range(truth.shape[1])]))


def cross_validate(x: np.ndarray, y: np.ndarray, config: FitConfig) -> dict[str, float]:
    """Mean out-of-fold Spearman (over both targets) of every candidate, on the training part only."""
    candidates = [f"ridge(alpha={a:g})" for a in config.ridge_alphas] if config.model in ("auto", "ridge") else []
    if config.model in ("auto", "mlp"):
        candidates.append(f"mlp(hidden={config.mlp_hidden})")
    if not candidates:
        raise DistillError(f"unknown probe model {config.model!r}; use auto, ridge or mlp")
    k = max(2, min(config.cv_folds, x.shape[0] // 5))
    oof = {c: np.empty_like(y) for c in candidates}
    for test in _folds(x.shape[0], k, config.seed):
        train = np.setdiff1d(np.arange(x.shape[0]), test)
        if config.model in ("auto", "ridge"):
            for a, probe in zip(config.ridge_alphas, _ridge_path(x[train], y[train], config.ridge_alphas)):
                oof[f"ridge(alpha={a:g})"][test] = probe.predict_logits(x[test])
        if config.model in ("auto", "mlp"):
            oof[f"mlp(hidden={config.mlp_hidden})"][test] = fit_mlp(x[train], y[train], config).predict_logits(x[test])
    return {c: _mean_spearman(pred, y) for c, pred in oof.items()}


def fit_probe(x: np.ndarray, judge_scores: np.ndarray, config: FitConfig,
              lengths: np.ndarray | None = None) -> Probe:
    """Fit on embeddings `x` [n, d] and the judge's (P(yes), normalized P(yes)) [n, 2];
    `lengths` (characters per document, see `text_lengths`) when config.length_feature.

    Rows where the judge could not score are dropped. The model (ridge alpha, or the
    MLP) is the one with the best cross-validated Spearman on these rows; the caller
    keeps its held-out documents out of `x` so they stay unseen until measured.
    """
    x = np.asarray(x, dtype=np.float32)
    scores = np.asarray(judge_scores, dtype=np.float64)
    if x.ndim != 2 or scores.ndim != 2 or x.shape[0] != scores.shape[0]:
        raise DistillError(f"embeddings {list(x.shape)} and judge scores {list(scores.shape)} do not match")
    if config.length_feature:
        if lengths is None or len(lengths) != x.shape[0]:
            raise DistillError("length_feature is on: pass one document length per embedding row")
        x = design(x, lengths)
    keep = np.isfinite(scores).all(axis=1)
    x, y = x[keep], logit(scores[keep])
    check_labels(y, config.min_train)
    cv = cross_validate(x, y, config)
    best = max(cv, key=lambda c: (cv[c], -list(cv).index(c)))  # first of equals: the simpler model
    if best.startswith("ridge"):
        probe = fit_ridge(x, y, config.ridge_alphas[list(cv).index(best)])
    else:
        probe = fit_mlp(x, y, config)
    probe.meta.update({"chosen": best, "cv_spearman": {c: round(v, 4) for c, v in cv.items()},
                       "train_documents": int(x.shape[0]), "dropped_unscorable": int((~keep).sum()),
                       "targets": list(TARGETS), "fit": config.identity(), "version": DISTILL_VERSION,
                       "length_feature": config.length_feature})
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

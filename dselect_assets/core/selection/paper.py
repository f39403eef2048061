"""The paper's 19 sampler configurations and the local stand-in each one runs as here.

Several paper configurations share one local stand-in (there are three instruction-tuned
judges here for five Flan-T5 sizes); a stand-in is one sampler, listing every paper
configuration it stands in for, so two configurations that would select the same documents
are never shown as different samplers. A stand-in whose model is not installed is kept
(its partitions exist) and says why it cannot run (`unavailable_reason`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dselect_assets.core.scoring import models

# Where the paper's T5-Large checkpoints sit in its 1M-step run (20k..700k; the notes give
# only the range, so the middle three are spread between), as shares of a training run.
CHECKPOINT_FRACTIONS = (0.02, 0.10, 0.30, 0.50, 0.70)

TINY_LM = "tiny-lm"  # dselect's own LM (core/lm/tiny_lm.py) trained on the full data


@dataclass(frozen=True)
class StandIn:
    """One sampler value of the selections' partitions.

    rule: the sampler function it runs (a key of samplers.SAMPLERS before stand-ins).
    signal: the score it ranks by ("ask_llm", "perplexity"), None for coverage samplers.
    model: the local model behind that score: a models.SPLIT_GGUF_JUDGES name, "gemma3-270m",
        "" for the configured default judge / LM, or TINY_LM with `fraction` of its run.
    stand_in: what runs here, in words. paper: the paper configurations it stands in for.
    """

    name: str
    rule: str
    signal: str | None
    model: str
    stand_in: str
    paper: tuple[str, ...]
    fraction: float | None = None


_EMBEDDER = "all-MiniLM-L6-v2 (384-d) instead of Sentence-T5-Base (768-d)"
_CLUSTERS = _EMBEDDER + "; k-means with ~sqrt(n) clusters instead of 10,000"
_QWEN_05 = "qwen2.5-coder-0.5b"
_QWEN_15 = "qwen2.5-coder-1.5b"
_GEMMA = "gemma3-270m"


def _checkpoint(fraction: float) -> StandIn:
    step = f"{round(fraction * 1000)}k"
    return StandIn(
        f"perplexity_tiny_lm_{round(fraction * 100):02d}pct", "perplexity_filter", "perplexity", TINY_LM,
        f"dselect's tiny LM trained on the full data, weights after {fraction:.0%} of its steps",
        (f"Perplexity filter, T5-Large checkpoint at {step} steps",), fraction,
    )


STAND_INS: list[StandIn] = [
    StandIn("random", "random", None, "", "uniform without replacement", ("Random",)),
    StandIn("density", "density", None, "", _EMBEDDER + " + RACE sketch", ("Density",)),
    StandIn("semdedup", "semdedup", None, "", _CLUSTERS, ("SemDeDup",)),
    StandIn("prototypes", "prototypes", None, "", _CLUSTERS + "; farthest from the nearest centroid, corpus-wide",
            ("SSL Prototypes",)),
    # Local LMs in order of size take the T5 sizes in order; the largest takes the rest.
    StandIn("perplexity_filter", "perplexity_filter", "perplexity", "",
            "SmolLM2-135M-Instruct scored as a plain LM (the configured perplexity LM)",
            ("Perplexity filter, T5-Small",)),
    StandIn("perplexity_gemma3_270m", "perplexity_filter", "perplexity", _GEMMA, "Gemma 3 270M base (Q4_K_M)",
            ("Perplexity filter, T5-Base",)),
    StandIn("perplexity_qwen05b", "perplexity_filter", "perplexity", _QWEN_05,
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) scored as a plain LM", ("Perplexity filter, T5-Large",)),
    StandIn("perplexity_qwen15b", "perplexity_filter", "perplexity", _QWEN_15,
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) scored as a plain LM",
            ("Perplexity filter, T5-XL", "Perplexity filter, T5-XXL")),
    *[_checkpoint(f) for f in CHECKPOINT_FRACTIONS],
    StandIn("ask_llm_topk", "ask_llm_topk", "ask_llm", "",
            "SmolLM2-135M-Instruct in its chat template (the configured judge)", ("Ask-LLM, Flan-T5-Small",)),
    StandIn("ask_llm_qwen05b", "ask_llm_topk", "ask_llm", _QWEN_05,
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) in its chat template", ("Ask-LLM, Flan-T5-Base",)),
    StandIn("ask_llm_qwen15b", "ask_llm_topk", "ask_llm", _QWEN_15,
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) in its chat template",
            ("Ask-LLM, Flan-T5-Large", "Ask-LLM, Flan-T5-XL", "Ask-LLM, Flan-T5-XXL")),
]
STAND_IN_BY_NAME = {s.name: s for s in STAND_INS}
# Paper configuration -> the sampler that stands in for it here.
PAPER_CONFIGURATIONS: dict[str, str] = {paper: s.name for s in STAND_INS for paper in s.paper}


def installed_model_spec(stand_in: StandIn) -> models.ModelSpec:
    """The model of a stand-in that scores with a model other than the configured default;
    ModelLoadError (saying how to install it) when it is not installed."""
    if stand_in.model == _GEMMA:
        return models.gemma3_spec()
    return models.split_gguf_spec(stand_in.model, chat_template=stand_in.signal == "ask_llm")


def unavailable_reason(name: str) -> str | None:
    """Why the stand-in `name` cannot run on this machine, or None when it can."""
    stand_in = STAND_IN_BY_NAME.get(name)
    if stand_in is None or stand_in.model in ("", TINY_LM):
        return None
    try:
        if stand_in.model == _GEMMA:
            models.package_files(models.GEMMA_PACKAGE)  # cheap: assembling the GGUF waits for a run
        else:
            installed_model_spec(stand_in)
    except models.ModelLoadError as exc:
        return f"{name} (stand-in for {'; '.join(stand_in.paper)}) is skipped: {exc}"
    return None


def extra_scorers() -> list[StandIn]:
    """The stand-ins whose scores come from a model other than the configured ones, one per
    (signal, model): each needs its own score producer."""
    seen, out = set(), []
    for s in STAND_INS:
        if s.signal and s.model and (s.signal, s.model, s.fraction) not in seen:
            seen.add((s.signal, s.model, s.fraction))
            out.append(s)
    return out


def tiny_lm_resource(fraction: float) -> str:
    """The name under which the tiny-LM checkpoint at `fraction` of its run registers as a producer."""
    return f"perplexity:{TINY_LM}@{fraction:.2f}"

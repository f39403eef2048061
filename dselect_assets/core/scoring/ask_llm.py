"""Ask-LLM quality scores: P("yes") from an instruction-tuned judge (paper Fig. 3).

One forward pass per document, no generation: the prompt is built so that the
answer is the next token, and the score is the softmax probability mass on the
"yes" tokens at that position. Two numbers per document:

  column 0: P(yes)                       -- the paper's score
  column 1: P(yes) / (P(yes) + P(no))    -- robust to mass leaking to other tokens

Documents that tokenize to nothing (empty or whitespace-only text) get NaN in
both columns; `unscorable(scores)` lists their indices. `score_with_doc_nll` adds a
third from the same pass: the mean NLL of the document's first tokens given the
prompt, which the perplexity filter uses by default (JudgeDocumentPerplexity).

Speed on CPU comes from: length-sorted batches with left padding (the answer
position is the last column of every row; core/scoring/batching.py, which also computes
exact duplicates once), only the last position's logits (the vocabulary
projection over every prompt token is skipped), the KV cache of the prompt
prefix shared by all documents (system prompt and turn header of the chat
template, or few-shot turns and "###"), bf16 GEMMs where the CPU has native bf16
(AUTO_CPU_BF16), and torch.inference_mode. benchmarks/bench_ask_llm.py measures
each against a naive loop and the peer nano-askllm.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dselect_assets.core.progress import Progress
from dselect_assets.core.scoring.batching import map_padded
from dselect_assets.core.scoring.models import (
    ModelSpec,
    default_judge_spec,
    load_causal_or_seq2seq,
    model_identity,
    pick_device,
    resolve_dtype,
)

CODE_VERSION = "ask_llm/1"
DOC_NLL_CODE_VERSION = "ask_llm_doc_nll/1"

# Verbatim from the paper (Fig. 3); {example} is replaced by the document.
PAPER_PROMPT = """###
{example}
###

Does the previous paragraph demarcated within ### and ### contain informative signal for pre-training a large-language model? An informative datapoint should be well-formatted, contain some usable knowledge of the world, and strictly NOT have any harmful, racist, sexist, etc. content.

OPTIONS:
- yes
- no"""

# The paper's words with the question moved before the document, so that it is part of the
# prefix whose KV cache every document shares: with SmolLM2's chat template, 8 tokens follow
# the document instead of 79. On the default corpus's labelled probe (400 documents, raw
# P(yes), bf16, 256 document tokens, one run at one thread): 1.62x faster, ROC AUC 0.806
# [0.76, 0.85] against 0.748 [0.70, 0.79] for the paper's order, paired difference +0.058
# [+0.002, +0.114]; Spearman 0.47 between the two rankings.
QUESTION_FIRST_PROMPT = """###

Does the previous paragraph demarcated within ### and ### contain informative signal for pre-training a large-language model? An informative datapoint should be well-formatted, contain some usable knowledge of the world, and strictly NOT have any harmful, racist, sexist, etc. content.

OPTIONS:
- yes
- no

###
{example}
###"""

PROMPTS = {"paper": PAPER_PROMPT, "question_first": QUESTION_FIRST_PROMPT}

# Appended after the prompt when no chat template is used, so the next token is the answer.
RAW_ANSWER_SUFFIX = "\n\nAnswer:"

YES_VARIANTS = ("yes", " yes", "Yes", " Yes")
NO_VARIANTS = ("no", " no", "No", " No")

# Demonstrations for few-shot prompting, written for dselect (not from any eval set).
FEW_SHOT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "The Danube is Europe's second-longest river. It rises in the Black Forest in Germany "
        "and flows for about 2,850 km through ten countries, including Austria, Hungary and "
        "Romania, before emptying into the Black Sea.",
        "yes",
    ),
    (
        "click here!!! best cheap deals buy now buy now free shipping lol >>> subscribe "
        "http://bit.ly/xx ||| home | about | login | cart (0)",
        "no",
    ),
)

# What dtype="auto" means on a CPU with native bf16: "bf16-matmul" (fp32 residual
# stream, bf16 linear layers) or "bfloat16" (the whole model in bf16); benchmarks/bench_ask_llm.py
# measures both against fp32. With the question-first prompt, on the 400 labelled probe
# documents at one thread, whole-model bf16 was 1.33x faster than bf16-matmul, ROC AUC 0.806
# [0.76, 0.85] vs 0.810 [0.77, 0.85], Spearman 0.991 between the two (both ~0.994 vs fp32).
AUTO_CPU_BF16 = "bfloat16"

_SENTINEL = "\u0000DSELECT_EXAMPLE\u0000"

def unscorable(scores: np.ndarray) -> np.ndarray:
    """Indices of documents the judge could not score (NaN rows)."""
    scores = np.asarray(scores)
    column = scores[:, 0] if scores.ndim == 2 else scores
    return np.flatnonzero(np.isnan(column))


@dataclass(frozen=True)
class PromptParts:
    """Rendered prompt around the document, as text (for identity) and token ids."""

    prefix_text: str
    suffix_text: str
    prefix_ids: list[int]
    suffix_ids: list[int]


def answer_token_ids(tokenizer: Any, variants: Sequence[str], other: Sequence[str]) -> list[int]:
    """Distinct first tokens of the answer variants, minus any shared with the other
    answer's variants or that decode to nothing (e.g. a bare SentencePiece space)."""

    def firsts(words: Sequence[str]) -> set[int]:
        found = set()
        for word in words:
            ids = tokenizer(word, add_special_tokens=False)["input_ids"]
            if ids:
                found.add(int(ids[0]))
        return found

    mine, theirs = firsts(variants), firsts(other)
    keep = sorted(t for t in mine - theirs if tokenizer.decode([t]).strip())
    if not keep:
        raise ValueError(f"no usable first token for answer variants {list(variants)}")
    return keep


class AskLLMJudge:
    """Scores documents with P("yes") from an instruction-tuned judge.

    spec: the judge model (default: models.default_judge_spec()).
    prompt: must contain "{example}" once; defaults to the paper's prompt.
    max_doc_tokens: documents are cut to this many tokens so the prompt stays whole.
    few_shot: (document, "yes"|"no") demonstrations placed before the query.
    dtype: "auto" (bf16 where the hardware has native bf16, else fp32), "float32", "bfloat16",
        or "bf16-matmul": fp32 model whose linear layers multiply in bf16 (bf16 weights,
        inputs cast down, outputs back to fp32), so the residual stream, norms, rotary
        and attention softmax stay fp32.
    """

    def __init__(
        self,
        spec: ModelSpec | None = None,
        prompt: str = PAPER_PROMPT,
        max_doc_tokens: int = 256,
        batch_size: int = 4,
        few_shot: Sequence[tuple[str, str]] = (),
        device: str | None = None,
        dtype: str = "auto",
        reuse_prefix_cache: bool = True,
        raw_answer_suffix: str = RAW_ANSWER_SUFFIX,
    ) -> None:
        import torch

        if prompt.count("{example}") != 1:
            raise ValueError("prompt must contain '{example}' exactly once")
        self.spec = spec or default_judge_spec()
        self.prompt = prompt
        self.max_doc_tokens = int(max_doc_tokens)
        self.batch_size = int(batch_size)
        self.few_shot = tuple((str(doc), str(answer)) for doc, answer in few_shot)
        self.raw_answer_suffix = raw_answer_suffix
        self.device, _ = pick_device(device)
        self.bf16_matmul = dtype == "bf16-matmul" or (
            dtype == "auto" and AUTO_CPU_BF16 == "bf16-matmul" and self.device.type == "cpu"
            and resolve_dtype(self.device, "auto") == torch.bfloat16
        )
        self.dtype = torch.float32 if self.bf16_matmul else resolve_dtype(self.device, dtype)
        self.model, self.tokenizer = load_causal_or_seq2seq(self.spec, self.device, self.dtype)
        if self.bf16_matmul:
            _bf16_linears(self.model)
        self.is_causal = self.spec.kind == "causal"
        self.uses_chat_template = bool(
            self.is_causal and self.spec.chat_template and getattr(self.tokenizer, "chat_template", None)
        )
        self.parts = self._render_prompt()
        self.yes_ids = answer_token_ids(self.tokenizer, YES_VARIANTS, NO_VARIANTS)
        self.no_ids = answer_token_ids(self.tokenizer, NO_VARIANTS, YES_VARIANTS)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.reuse_prefix_cache = bool(reuse_prefix_cache and self.is_causal and self.parts.prefix_ids)
        self._prefix_cache: Any = None
        self._prefix_next_log_probs: Any = None
        # Exact duplicates (same token ids) share one forward pass; results are equal.
        self.skip_duplicates = True
        self._identity: dict[str, Any] | None = None
        self._torch = torch

    # ------------------------------------------------------------------ prompt

    def _render_prompt(self) -> PromptParts:
        head, tail = self.prompt.split("{example}")
        if self.uses_chat_template:
            messages: list[dict[str, str]] = []
            for doc, answer in self.few_shot:
                messages.append({"role": "user", "content": self.prompt.replace("{example}", doc.strip())})
                messages.append({"role": "assistant", "content": answer})
            messages.append({"role": "user", "content": head + _SENTINEL + tail})
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prefix_text, suffix_text = rendered.split(_SENTINEL)
            add_special = False  # the template writes any BOS itself
        else:
            shots = "".join(
                self.prompt.replace("{example}", doc.strip()) + self.raw_answer_suffix + " " + answer + "\n\n"
                for doc, answer in self.few_shot
            )
            prefix_text = shots + head
            suffix_text = tail + (self.raw_answer_suffix if self.is_causal else "")
            add_special = True
        prefix_ids = list(self.tokenizer(prefix_text, add_special_tokens=False)["input_ids"])
        suffix_ids = list(self.tokenizer(suffix_text, add_special_tokens=False)["input_ids"])
        if add_special:
            # The tokenizer's own specials go around the whole prompt: a leading BOS;
            # a trailing EOS only for an encoder (a decoder must end on the answer slot).
            probe = self.tokenizer("x", add_special_tokens=True)["input_ids"]
            bare = self.tokenizer("x", add_special_tokens=False)["input_ids"]
            start = probe.index(bare[0]) if bare and bare[0] in probe else 0
            prefix_ids = list(probe[:start]) + prefix_ids
            if not self.is_causal:
                suffix_ids = suffix_ids + list(probe[start + len(bare) :])
        return PromptParts(prefix_text, suffix_text, prefix_ids, suffix_ids)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the full prompt for one document (after truncation); [] if the
        document tokenizes to nothing."""
        doc = self.doc_ids([text])[0]
        if not doc:
            return []
        return self.parts.prefix_ids + doc + self.parts.suffix_ids

    def doc_ids(self, texts: Sequence[str]) -> list[list[int]]:
        stripped = [t.strip() for t in texts]
        encoded = self.tokenizer(stripped, add_special_tokens=False)["input_ids"] if stripped else []
        return [list(ids[: self.max_doc_tokens]) for ids in encoded]

    # ------------------------------------------------------------------ identity

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes the scores; feed to hashing.producer_id."""
        if self._identity is None:
            self._identity = {
                "code": CODE_VERSION,
                "model": model_identity(self.spec),
                "prompt": self.prompt,
                "chat_template": self.uses_chat_template,
                "prefix_text": self.parts.prefix_text,
                "suffix_text": self.parts.suffix_text,
                "few_shot": [list(x) for x in self.few_shot],
                "max_doc_tokens": self.max_doc_tokens,
                "yes_ids": self.yes_ids,
                "no_ids": self.no_ids,
                "dtype": "float32+bf16-matmul" if self.bf16_matmul else str(self.dtype).removeprefix("torch."),
            }
        return self._identity

    # ------------------------------------------------------------------ scoring

    def score(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """float64 [n, 2]: (P(yes), P(yes)/(P(yes)+P(no))); NaN rows for empty documents.
        `progress(done, total, elapsed)` is called after each batch (core/progress.py)."""
        if not texts:
            return np.full((0, 2), np.nan, dtype=np.float64)
        docs = self.doc_ids(texts)
        if self.is_causal:
            # Left padding: the answer slot is the last column of every row.
            head = [] if self.reuse_prefix_cache else self.parts.prefix_ids
            seqs = [head + d + self.parts.suffix_ids if d else [] for d in docs]
            forward, side = self._causal_logits, "left"
        else:
            seqs = [self.parts.prefix_ids + d + self.parts.suffix_ids if d else [] for d in docs]
            forward, side = self._seq2seq_logits, "right"
        return map_padded(
            seqs, lambda ids, mask: self._answer_probs(forward(ids, mask)),
            batch_size=self.batch_size, pad_id=self.pad_id, side=side, width=2, dedupe=self.skip_duplicates,
            progress=progress,
        )

    @property
    def scores_doc_nll(self) -> bool:
        """Whether score_with_doc_nll works for this judge (causal, prompt prefix cached)."""
        return self.is_causal and self.reuse_prefix_cache

    def doc_nll_identity(self, nll_tokens: int) -> dict[str, Any]:
        """What changes score_with_doc_nll's third column: the judge and the tokens it averages."""
        return {"code": DOC_NLL_CODE_VERSION, "judge": self.identity, "nll_tokens": int(nll_tokens)}

    def score_with_doc_nll(self, texts: Sequence[str], nll_tokens: int,
                           progress: Progress | None = None) -> np.ndarray:
        """float64 [n, 3]: score()'s two columns and, from the same forward pass, the mean
        next-token NLL (nats) of the document's first `nll_tokens` tokens given the prompt
        before it: a perplexity score under the judge model for the cost of projecting those
        positions onto the vocabulary, instead of a second pass over every document.
        Needs a causal judge with the shared prefix cache (the first document token is
        predicted from the prefix's last position)."""
        if not self.scores_doc_nll:
            raise ValueError("document NLL needs a causal judge whose prompt prefix is cached")
        if nll_tokens < 1:
            raise ValueError(f"nll_tokens must be >= 1, got {nll_tokens}")
        if not texts:
            return np.full((0, 3), np.nan, dtype=np.float64)
        seqs = [d + self.parts.suffix_ids if d else [] for d in self.doc_ids(texts)]
        return map_padded(
            seqs, lambda ids, mask: self._answer_and_doc_nll(ids, mask, int(nll_tokens)),
            batch_size=self.batch_size, pad_id=self.pad_id, side="left", width=3, dedupe=self.skip_duplicates,
            progress=progress,
        )

    def _answer_and_doc_nll(self, ids: Any, mask: Any, nll_tokens: int) -> np.ndarray:
        torch = self._torch
        hidden = self._causal_forward(ids, mask, self.model.get_decoder()).last_hidden_state
        head = self.model.get_output_embeddings()
        # The last position as a [b, 1, d] slice, so the product is the one score() computes.
        answer = self._answer_probs(self._project(head, hidden[:, -1:, :])[:, -1, :])
        # Left padding: a row's document starts where its mask does and ends len(suffix) before
        # the last column. Position start+j predicts document token j+1.
        rows_n, width = ids.shape
        start = width - mask.sum(1)
        counts = (width - start - len(self.parts.suffix_ids)).clamp(max=nll_tokens)
        steps = torch.arange(max(nll_tokens - 1, 0))
        valid = steps.unsqueeze(0) < (counts - 1).unsqueeze(1)
        row_of = torch.arange(rows_n).unsqueeze(1).expand_as(valid)[valid]
        column = (start.unsqueeze(1) + steps.unsqueeze(0))[valid]
        nll = torch.zeros(rows_n, dtype=torch.float32)
        if column.numel():
            logits = self._project(head, hidden[row_of.to(self.device), column.to(self.device)])
            step_nll = torch.nn.functional.cross_entropy(logits, ids[row_of, column + 1].to(self.device),
                                                         reduction="none")
            nll.index_add_(0, row_of, step_nll.cpu())
        nll -= self._prefix_log_probs()[ids[torch.arange(rows_n), start]]
        mean_nll = (nll / counts.clamp(min=1).float()).double().numpy()
        return np.column_stack([answer, mean_nll])

    def _project(self, head: Any, hidden: Any) -> Any:
        """fp32 logits of hidden states, with the model's final soft-capping if it has one."""
        logits = head(hidden).float()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        return self._torch.tanh(logits / softcap) * softcap if softcap else logits

    def _prefix_log_probs(self) -> Any:
        """Log-probabilities of the token after the shared prefix (the document's first), on the CPU."""
        self._prefix()
        return self._prefix_next_log_probs

    def _answer_probs(self, logits: Any) -> np.ndarray:
        torch = self._torch
        probs = torch.softmax(logits.float(), dim=-1)
        p_yes = probs[:, self.yes_ids].sum(-1)
        p_no = probs[:, self.no_ids].sum(-1)
        normalized = p_yes / (p_yes + p_no).clamp(min=1e-30)
        return torch.stack([p_yes, normalized], dim=1).double().cpu().numpy()

    def _prefix(self) -> Any:
        """KV cache of the shared prompt prefix, computed once."""
        if self._prefix_cache is None:
            ids = self._torch.tensor([self.parts.prefix_ids], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            self._prefix_cache = out.cache
            self._prefix_next_log_probs = self._torch.log_softmax(out.logits[0, -1].float(), -1).cpu()
        return self._prefix_cache

    def _causal_logits(self, ids: Any, mask: Any) -> Any:
        """Next-token logits at the last column of left-padded prompts (without the
        shared prefix when its KV cache is reused)."""
        return self._causal_forward(ids, mask, self.model, logits_to_keep=1).logits[:, -1, :]

    def _causal_forward(self, ids: Any, mask: Any, module: Any, **extra: Any) -> Any:
        """`module` (the causal LM, or its decoder for hidden states) over left-padded prompts,
        after the shared prefix's KV cache when it is reused."""
        torch = self._torch
        use_cache = self.reuse_prefix_cache
        # Positions count real tokens only, so a padded row sees the same positions
        # as the same document scored alone.
        offset = len(self.parts.prefix_ids) if use_cache else 0
        positions = (mask.cumsum(1) - 1).clamp(min=0) + offset
        kwargs: dict[str, Any] = {}
        if use_cache:
            prefix_mask = torch.ones((ids.shape[0], offset), dtype=torch.long)
            mask = torch.cat([prefix_mask, mask], dim=1)
            kwargs["cache"] = _expand_cache(self._prefix(), ids.shape[0])
        return module(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=use_cache,
            **kwargs,
            **extra,
        )

    def _seq2seq_logits(self, ids: Any, mask: Any) -> Any:
        """First decoder step's logits for right-padded encoder inputs."""
        torch = self._torch
        start = self.model.config.decoder_start_token_id
        if start is None:
            start = self.pad_id
        decoder_ids = torch.full((ids.shape[0], 1), int(start), dtype=torch.long)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            decoder_input_ids=decoder_ids.to(self.device),
        )
        return out.logits[:, 0, :]


def _bf16_linears(module: Any) -> None:
    """Replace every nn.Linear under `module`, in place, by one with bf16 weights whose
    input is cast to bf16 and output back to the input's dtype: oneDNN's native bf16
    GEMM, with everything around it (residual stream, norms, rotary, softmax) in fp32."""
    import torch

    class Bf16Linear(torch.nn.Module):
        def __init__(self, linear: Any) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
            bias = linear.bias
            self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(torch.bfloat16),
                                                                     requires_grad=False)

        def forward(self, x: Any) -> Any:
            return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def swap(parent: Any) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, Bf16Linear(child))
            else:
                swap(child)

    swap(module)


def _expand_cache(cache: Any, batch: int) -> Any:
    """A copy of the prefix cache repeated `batch` times (the forward pass appends to
    the cache it is given, so the stored prefix must not be used in place)."""
    fresh = copy.deepcopy(cache)
    if batch > 1:
        fresh.batch_repeat_interleave(batch)
    return fresh


class JudgeDocumentPerplexity:
    """The perplexity filter's scorer made of a judge: mean NLL of each document's first
    `max_tokens` tokens given the judge's prompt (AskLLMJudge.score_with_doc_nll), with
    PerplexityScorer's interface. The pipeline's judge asset writes these numbers in its
    own pass; this computes only what that pass left out."""

    def __init__(self, judge: AskLLMJudge, max_tokens: int) -> None:
        if not judge.scores_doc_nll:
            raise ValueError(f"the perplexity filter's source 'judge' needs a causal judge with a cached prompt "
                             f"prefix, and {judge.spec.name} is not one: set PerplexityLMResource(source='model')")
        self.judge = judge
        self.max_tokens = int(max_tokens)
        self.spec = judge.spec
        self.identity = judge.doc_nll_identity(self.max_tokens)

    def score(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """float64 [n]: mean NLL (nats) per document; NaN for documents with no tokens."""
        return self.judge.score_with_doc_nll(texts, self.max_tokens, progress)[:, 2]

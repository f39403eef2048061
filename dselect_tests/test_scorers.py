"""Per-document scorers on the bundled offline models: embedder, Ask-LLM judge, perplexity."""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import torch

from dselect_assets.core.scoring.ask_llm import (
    FEW_SHOT_EXAMPLES,
    QUESTION_FIRST_PROMPT,
    AskLLMJudge,
    JudgeDocumentPerplexity,
    unscorable,
)
from dselect_assets.core.scoring.batching import length_sorted_batches, map_padded, pad
from dselect_assets.core.scoring.embed import SentenceEmbedder
from dselect_assets.core.scoring.judge_eval import roc_auc
from dselect_assets.core.scoring.models import (
    ModelLoadError,
    ModelSpec,
    default_embedder_path,
    model_identity,
    smollm2_spec,
)
from dselect_assets.core.scoring.perplexity import PerplexityScorer
from dselect_assets.resources import AskLLMJudgeResource

os.environ.setdefault("TQDM_DISABLE", "1")

NATURAL = [
    "The Danube is Europe's second-longest river. It rises in the Black Forest and flows east "
    "through ten countries before it empties into the Black Sea.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide "
    "to make glucose, releasing oxygen as a by-product.",
    "A compiler translates source code written in a high-level programming language into machine "
    "code that a processor can execute directly.",
]
JUNK = "click here!!! free free free >>> buy now cheap deals lol"
# Paraphrase pairs on five unrelated topics, with few words in common inside a pair.
PARAPHRASES = [
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("Interest rates were raised by the central bank to fight inflation.",
     "To curb rising prices, the monetary authority increased borrowing costs."),
    ("He scored the winning goal in the final minute of the match.",
     "In the last minute of the game, his strike won it for the team."),
    ("Boil the pasta in salted water for ten minutes.",
     "Cook the noodles in boiling, salty water for about ten minutes."),
    ("The patient was given antibiotics for a bacterial infection.",
     "Doctors prescribed the sick man medicine to kill the bacteria."),
]


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder(batch_size=4, dtype="float32")


@pytest.fixture(scope="module")
def judge():
    # fp32 so batched and single-document results can be compared tightly.
    # Chat template on: the longer shared prefix exercises the prefix KV cache.
    return AskLLMJudge(smollm2_spec(chat_template=True), max_doc_tokens=48, batch_size=4, dtype="float32")


@pytest.fixture(scope="module")
def lm():
    return PerplexityScorer(max_tokens=64, batch_size=4, dtype="float32")


# --------------------------------------------------------------------------- batching


def test_pad_left_and_right():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=9, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[1, 2, 3], [4]], pad_id=9, side="left")
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        pad([[1]], pad_id=0, side="middle")


def test_length_sorted_batches_longest_first_stable():
    batches = length_sorted_batches([2, 5, 5, 1, 3], batch_size=2)
    assert [b.tolist() for b in batches] == [[1, 2], [4, 0], [3]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], batch_size=0)


def test_map_padded_restores_order_skips_empty_and_duplicates():
    seqs = [[5, 1], [], [2, 2, 2, 2], [5, 1], [7], [3, 3, 3], [5, 1]]
    seen: list[list[int]] = []

    def forward(ids, mask):  # row -> (sum of real tokens, real length); padding must not count
        seen.extend((ids[r][mask[r].bool()]).tolist() for r in range(ids.shape[0]))
        assert ids.shape[0] <= 2
        return torch.stack([(ids * mask).sum(1), mask.sum(1)], dim=1).double()

    for side in ("left", "right"):
        seen.clear()
        out = map_padded(seqs, forward, batch_size=2, pad_id=99, side=side, width=2)
        expected = [[sum(s), len(s)] if s else [np.nan, np.nan] for s in seqs]
        np.testing.assert_array_equal(out, np.array(expected, dtype=float))
        # Each distinct non-empty sequence once, longest first.
        assert seen == [[2, 2, 2, 2], [3, 3, 3], [5, 1], [7]]
    seen.clear()
    again = map_padded(seqs, forward, batch_size=2, pad_id=99, width=2, dedupe=False)
    np.testing.assert_array_equal(again, out)
    assert len(seen) == 6  # every non-empty sequence, duplicates included
    assert map_padded([], forward, batch_size=2, pad_id=0).shape == (0,)


def test_map_padded_reports_progress_per_batch():
    seqs = [[5, 1], [], [2, 2, 2, 2], [5, 1], [7], [3, 3, 3], [5, 1]]
    calls: list[tuple[int, int, float]] = []
    map_padded(seqs, lambda ids, mask: mask.sum(1).double(), batch_size=2, pad_id=0,
               progress=lambda done, total, elapsed: calls.append((done, total, elapsed)))
    # The empty row and two duplicates are done from the start; then 2 distinct rows per batch.
    assert [(done, total) for done, total, _ in calls] == [(5, 7), (7, 7)]
    assert 0 <= calls[0][2] <= calls[1][2]


# --------------------------------------------------------------------------- embedder


def test_embedder_shape_norm_and_batch_invariance(embedder):
    texts = NATURAL + [JUNK, "short", "word " * 400]  # the last one is truncated to the window
    vectors = embedder.embed(texts)
    assert vectors.shape == (len(texts), embedder.dim) == (len(texts), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):  # alone (no padding) vs in a length-sorted batch
        np.testing.assert_allclose(embedder.embed([text])[0], vectors[i], atol=1e-5)
    shuffled = embedder.embed(texts[::-1])[::-1]
    np.testing.assert_allclose(shuffled, vectors, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_embedder_puts_paraphrases_closer_than_unrelated_sentences(embedder):
    """sim(a, a') > sim(a, b) for every pair: each sentence's nearest other sentence is its paraphrase."""
    texts = [text for pair in PARAPHRASES for text in pair]
    vectors = embedder.embed(texts)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    partner = np.arange(len(texts)) ^ 1  # 0<->1, 2<->3, ...
    for i, text in enumerate(texts):
        nearest = int(np.argmax(similarity[i]))
        assert nearest == partner[i], (
            f"{text!r}: nearest is {texts[nearest]!r} ({similarity[i, nearest]:.3f}), "
            f"not its paraphrase ({similarity[i, partner[i]]:.3f})"
        )


def test_embedder_matches_sentence_transformers(embedder):
    # A declared test dependency (pyproject `test` extra): a missing install fails here, never skips.
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_embedder_path()), device="cpu")
    texts = NATURAL + [JUNK, "short"]  # different lengths: the batch is padded
    expected = reference.encode(texts, normalize_embeddings=True, batch_size=len(texts))
    np.testing.assert_allclose(embedder.embed(texts), expected, atol=1e-5)


def test_bf16_embedder_stays_near_fp32_and_names_itself(embedder):
    bf16 = SentenceEmbedder(batch_size=4, dtype="bfloat16")
    texts = NATURAL + [JUNK, "short"]
    cosine = (bf16.embed(texts) * embedder.embed(texts)).sum(1)
    assert cosine.min() > 0.999
    assert bf16.identity["dtype"] == "bfloat16" and embedder.identity["dtype"] == "float32"


def test_embedder_identity_names_model_hash(embedder):
    identity = embedder.identity
    assert identity["pooling"] == "mean" and identity["max_length"] == embedder.max_length
    assert any(len(h) == 64 for h in identity["model"]["file_sha256"].values())


def test_embedder_missing_path_names_it(tmp_path):
    missing = tmp_path / "no-such-embedder"
    with pytest.raises(ModelLoadError, match=str(missing)):
        SentenceEmbedder(model_path=missing)


# --------------------------------------------------------------------------- Ask-LLM


def _reference_probs(judge: AskLLMJudge, text: str) -> tuple[float, float]:
    """P(yes), P(no) from a plain full forward pass over the one document's prompt."""
    ids = torch.tensor([judge.prompt_ids(text)])
    with torch.no_grad():
        probs = torch.softmax(judge.model(input_ids=ids).logits[0, -1].float(), dim=-1)
    return float(probs[judge.yes_ids].sum()), float(probs[judge.no_ids].sum())


# Different lengths, so a batch has left padding.
JUDGED = [NATURAL[0], JUNK, NATURAL[2][:40]]


@pytest.fixture(scope="module")
def judged(judge):
    return judge.score(JUDGED)


def test_judge_probabilities_match_plain_forward(judge, judged):
    assert judged.shape == (len(JUDGED), 2)
    assert np.all((judged >= 0) & (judged <= 1))
    for i, text in enumerate(JUDGED):
        p_yes, p_no = _reference_probs(judge, text)
        assert judged[i, 0] == pytest.approx(p_yes, abs=1e-4)
        assert judged[i, 1] == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
        assert judged[i, 1] >= judged[i, 0]  # P(yes) + P(no) <= 1


def test_judge_batch_equals_single_and_prefix_cache(judge, judged):
    single = np.vstack([judge.score([t]) for t in JUDGED[:2]])
    np.testing.assert_allclose(judged[:2], single, atol=1e-4)
    judge.reuse_prefix_cache = False
    try:
        no_cache = judge.score(JUDGED)
    finally:
        judge.reuse_prefix_cache = True
    np.testing.assert_allclose(judged, no_cache, atol=1e-4)


def test_question_first_prompt_puts_the_question_in_the_cached_prefix(judge):
    first = AskLLMJudge(smollm2_spec(chat_template=True), prompt=QUESTION_FIRST_PROMPT, max_doc_tokens=48,
                        batch_size=4, dtype="float32")
    assert "OPTIONS:" in first.parts.prefix_text and "OPTIONS:" not in first.parts.suffix_text
    assert len(first.parts.suffix_ids) < len(judge.parts.suffix_ids) / 4
    cached = first.score(JUDGED)
    first.reuse_prefix_cache = False
    np.testing.assert_allclose(first.score(JUDGED), cached, atol=1e-4)
    assert first.identity["prompt"] == QUESTION_FIRST_PROMPT != judge.identity["prompt"]


def test_judge_resource_names_an_unknown_prompt():
    with pytest.raises(ValueError, match="'question-last'"):
        AskLLMJudgeResource(prompt="question-last").load()


def test_judge_duplicates_share_a_forward_pass_with_equal_scores(judge, judged):
    texts = [JUDGED[1], JUDGED[0], JUDGED[1], JUDGED[2], JUDGED[0]]
    with_skip = judge.score(texts)
    np.testing.assert_allclose(with_skip, judged[[1, 0, 1, 2, 0]], atol=1e-4)
    assert np.array_equal(with_skip[0], with_skip[2]) and np.array_equal(with_skip[1], with_skip[4])
    judge.skip_duplicates = False
    try:
        np.testing.assert_allclose(judge.score(texts), with_skip, atol=1e-4)
    finally:
        judge.skip_duplicates = True


def test_bf16_matmul_judge_keeps_scores_and_names_itself(judge, judged):
    """The bf16-GEMM judge (fp32 residual stream) is a different scorer: its identity says
    so, its linear layers hold bf16 weights, and its scores stay near fp32's."""
    mixed = AskLLMJudge(judge.spec, max_doc_tokens=judge.max_doc_tokens, batch_size=4, dtype="bf16-matmul")
    assert mixed.bf16_matmul and mixed.identity["dtype"] == "float32+bf16-matmul" != judge.identity["dtype"]
    assert mixed.model.lm_head.weight.dtype == torch.bfloat16
    assert mixed.model.model.embed_tokens.weight.dtype == torch.float32
    scores = mixed.score(JUDGED)
    np.testing.assert_allclose(scores, judged, atol=0.03)
    assert not np.array_equal(scores, judged)  # bf16 GEMMs really ran


def test_gguf_conversion_is_cached(judge):
    from dselect_assets.core.scoring.models import converted_gguf_dir

    converted = converted_gguf_dir(judge.spec)
    assert (converted / "model.safetensors").is_file() and (converted / "config.json").is_file()


def test_judge_answer_tokens_are_yes_no_variants(judge):
    yes = {judge.tokenizer.decode([t]).strip().lower() for t in judge.yes_ids}
    no = {judge.tokenizer.decode([t]).strip().lower() for t in judge.no_ids}
    assert yes == {"yes"} and no == {"no"}
    assert len(judge.yes_ids) >= 2  # e.g. "yes", " yes", "Yes", " Yes" are distinct tokens


def test_judge_truncation_keeps_prompt_intact(judge):
    long_doc = " ".join(f"word{i}" for i in range(2000))
    ids = judge.prompt_ids(long_doc)
    prefix, suffix = judge.parts.prefix_ids, judge.parts.suffix_ids
    assert len(ids) == len(prefix) + judge.max_doc_tokens + len(suffix)
    assert ids[: len(prefix)] == prefix and ids[-len(suffix) :] == suffix
    text = judge.tokenizer.decode(ids)
    assert "Does the previous paragraph demarcated within ### and ###" in text
    assert text.rstrip().endswith("assistant")  # chat template: answer comes right after


def test_raw_prompt_ends_on_answer_slot():
    # Paper prompt without the chat template (the default judge now uses the template, models.py).
    raw = AskLLMJudge(smollm2_spec(chat_template=False), max_doc_tokens=16, dtype="float32")
    assert not raw.uses_chat_template
    text = raw.tokenizer.decode(raw.prompt_ids(NATURAL[0]))
    assert text.startswith("###\nThe Danube") and text.endswith("- no\n\nAnswer:")
    assert raw.identity["chat_template"] is False


def test_judge_empty_documents_are_nan(judge):
    scores = judge.score(["", JUNK, "   \n\t "])
    assert np.isnan(scores[0]).all() and np.isnan(scores[2]).all()
    assert np.isfinite(scores[1]).all()
    assert unscorable(scores).tolist() == [0, 2]
    assert judge.score([]).shape == (0, 2)


def test_judge_identity_changes_with_prompt_inputs(judge):
    identity = judge.identity
    assert identity["prompt"] == judge.prompt and identity["chat_template"] is True
    assert identity["dtype"] == "float32" and identity["max_doc_tokens"] == 48
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in identity["model"]["file_sha256"]


def test_missing_or_corrupt_model_raises_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DSELECT_CACHE_DIR", str(tmp_path / "cache"))
    missing = ModelSpec(path=tmp_path / "absent", gguf_file="judge.gguf")
    with pytest.raises(ModelLoadError, match=str(tmp_path / "absent")):
        AskLLMJudge(missing)
    corrupt_dir = tmp_path / "corrupt"
    corrupt_dir.mkdir()
    (corrupt_dir / "judge.gguf").write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ModelLoadError, match=str(corrupt_dir / "judge.gguf")):
        AskLLMJudge(ModelSpec(path=corrupt_dir, gguf_file="judge.gguf"))
    with pytest.raises(ModelLoadError, match=str(tmp_path / "absent")):
        PerplexityScorer(missing)


def test_seq2seq_judge_path(tmp_path):
    """Encoder-decoder judges (Flan-T5 style) score at the first decoder step; a tiny
    random T5 with the MiniLM WordPiece tokenizer exercises that path offline."""
    from transformers import T5Config, T5ForConditionalGeneration

    source = default_embedder_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, tmp_path / name)
    torch.manual_seed(0)
    config = T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=102)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    judge = AskLLMJudge(ModelSpec(path=tmp_path, kind="seq2seq"), max_doc_tokens=32, batch_size=3,
                        dtype="float32")
    texts = NATURAL + [JUNK, ""]
    scores = judge.score(texts)
    assert np.isnan(scores[-1]).all()
    assert np.all((scores[:-1] >= 0) & (scores[:-1] <= 1))
    single = np.vstack([judge.score([t]) for t in texts[:-1]])
    np.testing.assert_allclose(scores[:-1], single, atol=1e-5)
    # It has no causal document NLL, so the perplexity filter's default source says what to set.
    assert not judge.scores_doc_nll
    with pytest.raises(ValueError, match="source='model'"):
        JudgeDocumentPerplexity(judge, 16)


@pytest.mark.heavy
def test_few_shot_judge_reuses_prefix_and_matches_uncached():
    judge = AskLLMJudge(smollm2_spec(), max_doc_tokens=32, batch_size=2, few_shot=FEW_SHOT_EXAMPLES,
                        dtype="float32")
    assert FEW_SHOT_EXAMPLES[0][0] in judge.parts.prefix_text
    cached = judge.score(NATURAL[:2] + [JUNK])
    judge.reuse_prefix_cache = False
    np.testing.assert_allclose(judge.score(NATURAL[:2] + [JUNK]), cached, atol=1e-4)


# --------------------------------------------------------------------------- perplexity


def test_perplexity_natural_beats_shuffled(lm):
    rng = random.Random(0)
    shuffled = []
    for text in NATURAL:
        words = text.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    nll = lm.score(NATURAL + shuffled)
    assert np.isfinite(nll).all()
    assert np.all(nll[:3] < nll[3:])
    single = np.array([lm.score([t])[0] for t in (NATURAL[0], shuffled[1])])
    np.testing.assert_allclose(nll[[0, 4]], single, atol=1e-4)


def _reference_doc_nll(judge: AskLLMJudge, text: str, tokens: int) -> float:
    """Mean NLL of the document's first `tokens` tokens from a plain full forward pass over
    the whole prompt (no prefix cache, no padding, every position's logits)."""
    doc = judge.doc_ids([text])[0]
    ids = judge.parts.prefix_ids + doc + judge.parts.suffix_ids
    with torch.no_grad():
        log_probs = torch.log_softmax(judge.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    start = len(judge.parts.prefix_ids)
    n = min(tokens, len(doc))
    return -float(np.mean([log_probs[start + i - 1, doc[i]].item() for i in range(n)]))


def test_judge_document_nll_comes_with_unchanged_answers(judge, judged):
    """One left-padded, prefix-cached pass gives the judge's answer columns unchanged and each
    document's NLL as a plain forward pass computes it, also for documents shorter than the cut."""
    texts = [*JUDGED, "Hi", ""]
    fused = judge.score_with_doc_nll(texts, 12)
    assert fused.shape == (len(texts), 3)
    np.testing.assert_array_equal(fused[:, :2], judge.score(texts))  # the same batches, the same numbers
    for i, text in enumerate(texts[:4]):
        assert fused[i, 2] == pytest.approx(_reference_doc_nll(judge, text, 12), abs=1e-3)
    assert np.isnan(fused[4]).all()
    shuffled = " ".join(random.Random(0).sample(NATURAL[0].split(), len(NATURAL[0].split())))
    natural, scrambled = judge.score_with_doc_nll([NATURAL[0], shuffled], 40)[:, 2]
    assert natural < scrambled
    assert judge.doc_nll_identity(12) != judge.doc_nll_identity(40)


def test_document_nll_needs_the_cached_prefix(judge):
    judge.reuse_prefix_cache = False
    try:
        with pytest.raises(ValueError, match="prefix"):
            judge.score_with_doc_nll(JUDGED, 12)
    finally:
        judge.reuse_prefix_cache = True


def test_perplexity_short_documents_are_nan(lm):
    scores = lm.score(["", "Hi", NATURAL[0]])
    assert np.isnan(scores[0]) and np.isnan(scores[1])
    assert np.isfinite(scores[2]) and scores[2] > 0
    assert len(lm.token_ids([NATURAL[0] * 20])[0]) == lm.max_tokens


# --------------------------------------------------------------------------- identity + eval


def test_model_identity_hash_is_cached_and_tracks_changes(tmp_path, monkeypatch):
    from dselect_assets.core.scoring import models

    monkeypatch.setenv("DSELECT_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    weights = model_dir / "w.gguf"
    weights.write_bytes(b"a" * 1000)
    calls = []
    real = models.file_sha256
    monkeypatch.setattr(models, "file_sha256", lambda p: calls.append(p) or real(p))
    spec = ModelSpec(path=model_dir, gguf_file="w.gguf")
    first = model_identity(spec)
    models._memory_hashes.clear()  # a new process: only the disk cache is left
    assert model_identity(spec) == first and len(calls) == 1
    weights.write_bytes(b"b" * 1001)
    assert model_identity(spec)["file_sha256"] != first["file_sha256"]
    assert str(model_dir) not in str(first)  # same weights elsewhere -> same identity


def test_roc_auc():
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert roc_auc([0.9, float("nan"), 0.1], [1, 1, 0]) == 1.0
    assert np.isnan(roc_auc([0.1, 0.2], [1, 1]))

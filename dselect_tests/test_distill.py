"""Distilled Ask-LLM: sample, fit, identity, and a new shard scored by the probe alone."""

import shutil

import dagster as dg
import numpy as np
import pytest

from dselect_assets.assets import corpus, distill, scoring, selection
from dselect_assets.assets.scoring import perplexity_key, resource_key
from dselect_assets.core.scoring import distill as core
from dselect_assets.core.scoring.models import ModelLoadError
from dselect_assets.core.selection import samplers
from dselect_assets.resources import AskLLMJudgeResource
from dselect_assets.store import attributes
from dselect_tests.pipeline_fixtures import build_source_corpus, materialization_metadata, small_resources, write_slice

FIT = {"judge": "ask_llm:aaaa", "embedder": "embedding:bbbb", "fit": core.FitConfig().identity()}
# The embedding alone: no length, statistics or words (so no texts needed).
EMB_ONLY = {"length_feature": False, "text_statistics": False, "bow_weights": (0.0,)}


def probe_id(judge="ask_llm:aaaa", embedder="embedding:bbbb", train=("h1", "h2", "h3"), heldout=("h4",), fit=None):
    return core.probe_producer_id(judge, embedder, list(train), list(heldout), fit or core.FitConfig().identity())


def test_producer_id_changes_with_judge_embedder_sample_and_fit():
    base = probe_id()
    assert base.startswith("ask_llm_distilled:")
    assert probe_id() == base
    assert probe_id(train=("h3", "h1", "h2")) == base  # the sample is a set, not an order
    changed = [
        probe_id(judge="ask_llm:cccc"),
        probe_id(embedder="embedding:dddd"),
        probe_id(train=("h1", "h2", "h5")),
        probe_id(train=("h1", "h2"), heldout=("h3", "h4")),
        probe_id(fit=core.FitConfig(model="ridge", length_feature=False).identity()),
        probe_id(fit=core.FitConfig(seed=1).identity()),
        probe_id(fit=core.FitConfig(length_feature=False).identity()),
        probe_id(fit=core.FitConfig(text_statistics=False).identity()),
        probe_id(fit=core.FitConfig(bow_weights=(0.0,)).identity()),
        probe_id(fit=core.FitConfig(kernel_gammas=(1.0,)).identity()),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_stratified_sample_is_proportional_seeded_and_exact():
    hashes = [f"{i:064x}" for i in range(400)]
    strata = ["a"] * 300 + ["b"] * 100
    picked = core.stratified_sample(hashes, strata, 40, seed=0)
    assert len(picked) == 40 and len(set(picked.tolist())) == 40
    assert (picked < 300).sum() == 30 and (picked >= 300).sum() == 10
    assert np.array_equal(picked, core.stratified_sample(hashes, strata, 40, seed=0))
    assert not np.array_equal(picked, core.stratified_sample(hashes, strata, 40, seed=1))
    assert np.array_equal(core.stratified_sample(hashes, strata, 1000, seed=0), np.arange(400))
    # The corpus grows by a new stratum and the sample by its share: stratum a keeps its quota
    # (300 * 50 / 500 = 30) and the very same documents, since a document's key does not move.
    grown = core.stratified_sample(hashes + [f"{i:064x}" for i in range(400, 500)], strata + ["c"] * 100, 50, seed=0)
    assert set(picked[picked < 300].tolist()) == set(grown[grown < 300].tolist())
    assert (grown >= 400).sum() == 10
    mask = core.heldout_mask(hashes[:40], 0.25, seed=0)
    assert mask.sum() == 10


def test_length_strata_split_each_shard_by_corpus_quartile():
    labels = core.length_strata(["s1"] * 4 + ["s2"] * 4, [10, 20, 30, 40, 10, 20, 30, 40])
    assert labels[:4] == ["s1|len0", "s1|len1", "s1|len2", "s1|len3"]
    assert labels[4:] == ["s2|len0", "s2|len1", "s2|len2", "s2|len3"]


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_fit_refuses_too_few_or_one_class_labels():
    rng = np.random.default_rng(0)
    x = unit_rows(rng, 50, 16)
    varied = sigmoid(rng.normal(size=(50, 2)))
    with pytest.raises(core.DistillError, match=r"too few judged documents.*5 usable, at least 20"):
        core.fit_probe(x[:5], varied[:5], core.FitConfig(**EMB_ONLY))
    with pytest.raises(core.DistillError, match="same score .one class"):
        core.fit_probe(x, np.full((50, 2), 0.7), core.FitConfig(**EMB_ONLY))
    # Unscorable rows (NaN) are dropped before counting.
    holes = varied.copy()
    holes[10:] = np.nan
    with pytest.raises(core.DistillError, match="10 usable"):
        core.fit_probe(x, holes, core.FitConfig(**EMB_ONLY))


def test_fit_recovers_a_known_linear_signal():
    rng = np.random.default_rng(1)
    n, d = 500, 32
    x = unit_rows(rng, n, d)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    z = 3.0 * np.sqrt(d) * (x @ w)  # logit P(yes), spread over about +-6
    scores = np.stack([sigmoid(z + rng.normal(0, 0.3, n)), sigmoid(0.5 * z + rng.normal(0, 0.3, n))], axis=1)
    train, test = slice(0, 375), slice(375, None)
    probe = core.fit_probe(x[train], scores[train], core.FitConfig(model="ridge", **EMB_ONLY))
    direction = probe.params["W"][:, 0] / np.linalg.norm(probe.params["W"][:, 0])
    assert float(direction @ w) > 0.95
    agree = core.agreement(probe.predict(x[test]), scores[test])
    assert agree["spearman_value"] > 0.95 and agree["spearman_value_norm"] > 0.85
    # The same features with the labels shuffled carry no signal, and the fit must not invent one.
    shuffled = scores[rng.permutation(n)]
    noise = core.fit_probe(x[train], shuffled[train], core.FitConfig(model="ridge", **EMB_ONLY))
    assert abs(core.agreement(noise.predict(x[test]), shuffled[test])["spearman_value"]) < 0.3


def test_model_choice_picks_a_nonlinear_model_for_a_nonlinear_signal():
    rng = np.random.default_rng(2)
    n, d = 600, 8
    x = unit_rows(rng, n, d)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    z = 12.0 * (x @ w) ** 2 - 2.0  # symmetric in x . w: no linear model can rank it
    scores = np.stack([sigmoid(z + rng.normal(0, 0.2, n))] * 2, axis=1)
    mlp_config = dict(mlp_hidden=64, mlp_epochs=400, mlp_lr=1e-2, **EMB_ONLY)
    probe = core.fit_probe(x[:450], scores[:450], core.FitConfig(kernel_gammas=(), **mlp_config))
    assert probe.kind == "mlp" and probe.meta["chosen"].startswith("mlp")
    assert max(v for k, v in probe.meta["cv_spearman"].items() if k.startswith("ridge")) < 0.3
    assert core.agreement(probe.predict(x[450:]), scores[450:])["spearman_value"] > 0.7
    # With the kernel candidates as well: an RBF kernel ranks it too, and no ridge is chosen.
    both = core.fit_probe(x[:450], scores[:450], core.FitConfig(**mlp_config))
    assert both.kind in ("mlp", "kernel")
    assert max(v for k, v in both.meta["cv_spearman"].items() if k.startswith("kernel")) > 0.7
    assert core.agreement(both.predict(x[450:]), scores[450:])["spearman_value"] > 0.7


def test_topk_overlap_counts_shared_selections():
    truth = np.arange(10.0)
    assert core.topk_overlap(truth, truth, 0.2) == 1.0
    assert core.topk_overlap(-truth, truth, 0.2) == 0.0
    swapped = truth.copy()
    swapped[[9, 0]] = swapped[[0, 9]]  # the judge's best ranked last by the probe
    assert core.topk_overlap(swapped, truth, 0.2) == 0.5
    assert np.isnan(core.topk_overlap(truth[:2], truth[:2], 0.2))


def word_texts(rng, n, vocabulary=("alpha", "beta", "gamma", "delta", "Epsilon", "ZETA", "eta", "42")):
    return [" ".join(rng.choice(vocabulary, size=int(k))) + "." * int(rng.integers(0, 2))
            for k in rng.integers(3, 40, n)]


def test_probe_file_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x = unit_rows(rng, 60, 16)
    scores = sigmoid(np.stack([x @ rng.normal(size=16)] * 2, axis=1) * 4)
    texts = word_texts(rng, 60)
    for model in ("ridge", "mlp", "kernel"):
        probe = core.fit_probe(x, scores, core.FitConfig(model=model, mlp_epochs=20, bow_weights=(1.0,), bow_dim=1024),
                               texts)
        probe.save(tmp_path / f"{model}.npz")
        loaded = core.Probe.load(tmp_path / f"{model}.npz")
        assert loaded.kind == model and loaded.meta["chosen"] == probe.meta["chosen"] and loaded.uses_length
        assert loaded.dim == 16 and loaded.uses_text
        assert np.allclose(loaded.predict(x, texts), probe.predict(x, texts), atol=1e-6)
    assert "bow_w" in loaded.params  # the kernel probe keeps its word weights
    with pytest.raises(core.DistillError, match=r"\[n, 16\]"):
        loaded.predict(x[:, :8], texts)
    with pytest.raises(core.DistillError, match="text"):
        loaded.predict(x)


def test_length_feature_carries_a_length_driven_judge():
    """A judge that mostly rewards longer text: the embedding alone (unit norm, no length)
    cannot rank it, the log-length column can."""
    rng = np.random.default_rng(4)
    n, d = 400, 16
    x = unit_rows(rng, n, d)
    texts = ["word " * int(k) for k in rng.integers(2, 400, n)]
    lengths = core.text_lengths(texts)
    assert lengths[0] == len(texts[0].strip())  # normalized: the trailing space is stripped
    scores = np.stack([sigmoid(2.0 * (np.log(lengths) - 5.0) + rng.normal(0, 0.3, n))] * 2, axis=1)
    length_only = {"text_statistics": False, "bow_weights": (0.0,)}
    with_length = core.fit_probe(x[:300], scores[:300], core.FitConfig(model="ridge", **length_only), texts[:300])
    without = core.fit_probe(x[:300], scores[:300], core.FitConfig(model="ridge", **EMB_ONLY))
    assert core.agreement(with_length.predict(x[300:], texts[300:]), scores[300:])["spearman_value"] > 0.9
    assert abs(core.agreement(without.predict(x[300:]), scores[300:])["spearman_value"]) < 0.3
    with pytest.raises(core.DistillError, match="pass one text per embedding row"):
        core.fit_probe(x, scores, core.FitConfig())


def stat(texts, name):
    return core.text_statistics(texts)[:, core.TEXT_STATISTICS.index(name)]


def test_text_statistics_of_known_texts():
    texts = ["Hello World. See http://x.org and <b>this</b>!", "abc 123", "", "the the the the cat"]
    table = core.text_statistics(texts)
    assert table.shape == (4, len(core.TEXT_STATISTICS))
    assert stat(texts, "frac_upper")[0] == pytest.approx(3 / len(texts[0]))  # H, W, S
    assert stat(texts, "frac_digits")[1] == pytest.approx(3 / 7)
    assert stat(texts, "log_urls")[0] == pytest.approx(np.log(2)) and stat(texts, "log_urls")[1] == 0
    assert stat(texts, "log_markup")[0] == pytest.approx(np.log(3))  # <b> and </b>
    assert stat(texts, "top_word_share")[3] == pytest.approx(4 / 5)
    assert stat(texts, "type_token_ratio_100")[3] == pytest.approx(2 / 5)
    assert stat(texts, "mean_word_length")[1] == pytest.approx(3.0)
    assert list(stat(texts, "ends_with_punctuation")) == [1.0, 0.0, 0.0, 0.0]
    assert np.all(table[2] == 0)  # an empty text has only zeros, no division by zero
    assert np.isfinite(table).all()
    # A function of the normalized text: whitespace variants of a document (one content hash) agree.
    assert np.array_equal(core.text_statistics(["  a\tB\n\n c  "]), core.text_statistics(["a B c"]))


def test_hashed_bag_of_words_counts_words_and_pairs_stably():
    bag = core.hashed_bag_of_words(["Red fish red  fish", "red\nfish red fish", "blue"], 1 << 12)
    assert bag.shape == (3, 1 << 12)
    assert (bag[0] != bag[1]).nnz == 0  # the same normalized text
    # red, fish (twice each), "red fish" (twice), "fish red" (once): four entries.
    assert sorted(bag[0].data.round(6)) == sorted(np.round([1 + np.log(2)] * 3 + [1.0], 6))
    assert bag[2].nnz == 1 and bag[2].data[0] == 1.0
    import zlib
    assert bag[2].indices[0] == zlib.crc32(b"blue") % (1 << 12)  # no per-process salt


def test_text_statistics_carry_a_judge_that_reads_them():
    """A judge that rewards digits and penalises shouting, with embeddings that say nothing about
    either: the probe with the statistics ranks it, the embedding (and length) alone cannot."""
    rng = np.random.default_rng(5)
    n = 400
    x = unit_rows(rng, n, 16)
    texts = []
    for _ in range(n):
        words = [rng.choice(["price", "total", "sum", "value"]) for _ in range(int(rng.integers(20, 60)))]
        digits, shout = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
        words = [str(rng.integers(10, 999)) if rng.uniform() < digits else w.upper() if rng.uniform() < shout else w
                 for w in words]
        texts.append(" ".join(words))
    z = 6.0 * stat(texts, "frac_digits") - 4.0 * stat(texts, "frac_upper")
    scores = np.stack([sigmoid(z + rng.normal(0, 0.1, n))] * 2, axis=1)
    train, test = slice(0, 300), slice(300, None)
    config = {"model": "ridge", "bow_weights": (0.0,)}
    with_stats = core.fit_probe(x[train], scores[train], core.FitConfig(**config), texts[train])
    without = core.fit_probe(x[train], scores[train], core.FitConfig(text_statistics=False, **config), texts[train])
    got = core.agreement(with_stats.predict(x[test], texts[test]), scores[test])["spearman_value"]
    base = core.agreement(without.predict(x[test], texts[test]), scores[test])["spearman_value"]
    assert got > 0.85 and base < 0.5
    assert with_stats.meta["text_statistics"] and not without.meta["text_statistics"]


def test_kernel_with_words_carries_a_judge_that_reads_words():
    """A judge that likes two words and dislikes a third, embeddings unrelated to them: the kernel's
    bag-of-words part ranks it, the kernel without words cannot, and the CV chooses the words."""
    rng = np.random.default_rng(6)
    n = 360
    x = unit_rows(rng, n, 16)
    vocabulary = [f"w{i}" for i in range(60)]
    texts = word_texts(rng, n, vocabulary)
    def has(word):
        return np.array([word in t.split() for t in texts])
    z = 1.5 * has("w1") + 1.5 * has("w2") - 2.0 * has("w3")
    scores = np.stack([sigmoid(z + rng.normal(0, 0.2, n))] * 2, axis=1)
    train, test = slice(0, 270), slice(270, None)
    config = {"model": "kernel", "text_statistics": False, "length_feature": False, "bow_dim": 1 << 16}
    words = core.fit_probe(x[train], scores[train], core.FitConfig(bow_weights=(0.0, 1.0), **config), texts[train])
    no_words = core.fit_probe(x[train], scores[train], core.FitConfig(bow_weights=(0.0,), **config), texts[train])
    assert "bow=1" in words.meta["chosen"] and "bow_w" in words.params and "bow_w" not in no_words.params
    got = core.agreement(words.predict(x[test], texts[test]), scores[test])["spearman_value"]
    base = core.agreement(no_words.predict(x[test]), scores[test])["spearman_value"]
    assert got > 0.5 and abs(base) < 0.2, (got, base)


def test_kernel_candidates_stop_above_kernel_max_train():
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 80, 8)
    scores = sigmoid(np.stack([x @ rng.normal(size=8)] * 2, axis=1) * 4)
    capped = core.fit_probe(x, scores, core.FitConfig(kernel_max_train=50, mlp_epochs=20, **EMB_ONLY))
    assert not any(c.startswith("kernel") for c in capped.meta["cv_spearman"])
    assert capped.kind != "kernel" and "80 training rows" in capped.meta["kernel_skipped"]
    full = core.fit_probe(x, scores, core.FitConfig(mlp_epochs=20, **EMB_ONLY))
    assert any(c.startswith("kernel") for c in full.meta["cv_spearman"]) and "kernel_skipped" not in full.meta
    with pytest.raises(core.DistillError, match="no candidate model"):
        core.fit_probe(x, scores, core.FitConfig(model="kernel", kernel_max_train=50, **EMB_ONLY))


def test_a_version_1_probe_file_still_predicts_from_the_text(tmp_path):
    """Probes saved before the text statistics read the length only; they load and predict from texts."""
    w = np.zeros((5, 2), dtype=np.float32)
    w[4] = [1.0, -1.0]  # only the length column counts
    old = core.Probe("ridge", {"W": w, "b": np.zeros(2, dtype=np.float32)}, {"length_feature": True, "version": "1"})
    old.save(tmp_path / "v1.npz")
    loaded = core.Probe.load(tmp_path / "v1.npz")
    assert loaded.dim == 4 and loaded.uses_text
    texts = ["short", "a much longer text " * 20]
    logits = loaded.predict_logits(np.zeros((2, 4), dtype=np.float32), texts)
    assert np.allclose(logits[:, 0], core.length_column(core.text_lengths(texts)))


# ------------------------------------------------------------------ assets, real small models


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_source_corpus(tmp_path_factory.mktemp("source"))


def judge_rows(resources):
    return resources["store"].query(
        "SELECT count(*) FROM scores s JOIN producers p USING (producer_id) WHERE p.kind = 'ask_llm'")[0][0]


@pytest.mark.heavy
def test_probe_fits_on_judged_sample_and_a_new_shard_needs_no_judge(source, tmp_path, instance):
    src_corpus, src_eval = source
    home, corpus_dir = tmp_path / "home", tmp_path / "corpus"
    corpus_dir.mkdir()
    (home / "eval").mkdir(parents=True)
    shutil.copy(src_eval / "judge_probe.jsonl", home / "eval" / "judge_probe.jsonl")
    resources = small_resources(home, corpus_dir)
    write_slice(src_corpus / "shard-000.jsonl", corpus_dir / "a.jsonl", 0, 32)
    instance.add_dynamic_partitions("shards", ["a.jsonl"])
    dg.materialize([corpus.documents, scoring.embeddings], partition_key="a.jsonl", instance=instance,
                   resources=resources)
    n_a = resources["store"].query("SELECT count(*) FROM contents")[0][0]

    # Too few documents for the configured minimum: a clear failure, and the judge's
    # scores of the sample are kept for the next attempt.
    too_few = dg.materialize([distill.ask_llm_probe], instance=instance, resources=resources, raise_on_error=False,
                             run_config={"ops": {"ask_llm_probe": {"config": {"min_train_documents": 1000}}}})
    assert not too_few.success
    failure = next(e for e in too_few.all_events if e.is_step_failure)
    assert "too few judged documents" in str(failure.event_specific_data.error)
    assert judge_rows(resources) == n_a

    config = {"min_train_documents": 10, "mlp_epochs": 50, "timing_documents": 4, "cv_folds": 3}
    fit = dg.materialize([distill.ask_llm_probe], instance=instance, resources=resources,
                         run_config={"ops": {"ask_llm_probe": {"config": config}}})
    meta = materialization_metadata(fit, "ask_llm_probe")
    assert meta["sample_documents"] == n_a and meta["judge_scored_now"] == 0
    assert meta["train_documents"] + meta["heldout_documents"] == n_a
    assert meta["producer_id"].startswith("ask_llm_distilled:")
    assert meta["judge_seconds_per_1000_docs"] > 0 and meta["probe_seconds_per_1000_docs"] > 0
    assert meta["verdict"] and "judge_vs_probe" in meta
    store = resources["store"]
    assert distill.resolve_distilled(store, meta["judge_producer"], meta["embedding_producer"]) == meta["producer_id"]
    (check,) = fit.get_asset_check_evaluations()
    assert check.check_name == "probe_keeps_up" and check.metadata["verdict"].value == meta["verdict"]

    # Without a labelled probe file the fit still succeeds and says what it could not measure.
    unlabelled = {**config, "labelled_probe_path": str(tmp_path / "no-probe.jsonl")}
    bare = materialization_metadata(dg.materialize(
        [distill.ask_llm_probe], instance=instance, resources=resources,
        run_config={"ops": {"ask_llm_probe": {"config": unlabelled}}}), "ask_llm_probe")
    assert bare["labelled_probe_documents"] == 0 and "judge_roc_auc" not in bare
    assert bare["producer_id"] == meta["producer_id"]  # the labelled set is measurement, not identity
    assert bare["verdict"].startswith(("NOT MEASURED", "BEHIND"))

    scored_a = dg.materialize([distill.ask_llm_distilled_scores], partition_key="a.jsonl", instance=instance,
                              resources=resources)
    meta_a = materialization_metadata(scored_a, "ask_llm_distilled_scores")
    assert meta_a["scored_now"] == n_a and meta_a["producer_id"] == meta["producer_id"]
    assert meta_a["fit_verdict"] == bare["verdict"]  # the latest fit's measurement travels with the scores

    # A new shard after the fit, with a judge that cannot even be loaded: scored by the probe alone.
    write_slice(src_corpus / "shard-001.jsonl", corpus_dir / "b.jsonl", 0, 24)
    instance.add_dynamic_partitions("shards", ["b.jsonl"])
    no_judge = AskLLMJudgeResource(model_path=str(tmp_path / "no-judge-here"))
    with pytest.raises(ModelLoadError):
        no_judge.load()
    broken = {**resources, "judge": no_judge}
    judged_before = judge_rows(resources)
    grown = dg.materialize([corpus.documents, scoring.embeddings, distill.ask_llm_distilled_scores],
                           partition_key="b.jsonl", instance=instance, resources=broken)
    meta_b = materialization_metadata(grown, "ask_llm_distilled_scores")
    n_b = resources["store"].query("SELECT count(DISTINCT content_hash) FROM documents WHERE shard = 'b.jsonl'")[0][0]
    assert meta_b["documents"] == n_b > 0 and meta_b["producer_id"] == meta["producer_id"]
    assert judge_rows(resources) == judged_before
    values = resources["store"].query(
        "SELECT s.value, s.value_norm FROM scores s JOIN documents d USING (content_hash)"
        " WHERE d.shard = 'b.jsonl' AND s.producer_id = ?", [meta["producer_id"]])
    assert len({v for v, _ in values}) > 1 and all(0 < v < 1 and 0 < w < 1 for v, w in values)
    assert {c.check_name: c.passed for c in grown.get_asset_check_evaluations()}["score_range"]

    again = dg.materialize([distill.ask_llm_distilled_scores], partition_key="b.jsonl", instance=instance,
                           resources=broken)
    assert materialization_metadata(again, "ask_llm_distilled_scores")["reused_from_cache"] == meta_b["documents"]

    # The distilled samplers rank by these scores; ask_llm_topk still reads the judge's own.
    sources = selection.ScoreSources(resource_key("ask_llm", resources["judge"]),
                                     perplexity_key(resources["perplexity_lm"], resources["judge"]),
                                     resource_key("embedding", resources["embedder"]))
    hashes = sorted(r[0] for r in store.query("SELECT content_hash FROM contents"))
    config = selection.SelectionConfig()
    with attributes.DocumentSignals(store.attributes, hashes) as signals:
        inputs, producers, rows = selection.sampler_inputs(store, "ask_llm_distilled", signals, config, sources)
    assert producers == {"ask_llm": meta["producer_id"]} and rows.size == len(hashes) == n_a + n_b
    stored = dict(store.query("SELECT content_hash, value FROM scores WHERE producer_id = ?", [meta["producer_id"]]))
    assert np.allclose(inputs.quality, [stored[hashes[i]] for i in rows])
    kept = samplers.SAMPLERS["ask_llm_distilled"](inputs, 0.25, 0)
    assert np.array_equal(kept, samplers.SAMPLERS["ask_llm_topk"](inputs, 0.25, 0))
    in_a = sorted(r[0] for r in store.query("SELECT DISTINCT content_hash FROM documents WHERE shard = 'a.jsonl'"))
    with attributes.DocumentSignals(store.attributes, in_a) as signals:
        assert selection.sampler_inputs(store, "ask_llm_topk", signals, config, sources)[1] == \
            {"ask_llm": meta["judge_producer"]}

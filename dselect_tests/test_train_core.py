"""Tiny-LM core: tokenizer, training (determinism, resume), perplexity, report."""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from dselect_assets.core.hashing import file_sha256
from dselect_assets.core.lm.evaluate import perplexity, token_perplexity, unigram_perplexity
from dselect_assets.core.lm.lm_tokenizer import (
    END_OF_TEXT,
    encode_documents,
    end_of_text_id,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from dselect_assets.core.lm.report import build_report, relative_to_random
from dselect_assets.core.lm.tiny_lm import GPTConfig, TinyGPT, load_model, save_model
from dselect_assets.core.lm.train import (
    RESUME_STATE_FILE,
    TrainConfig,
    learning_rate_at,
    train_lm,
)
from dselect_assets.core.progress import format_duration, format_progress, throttled

STDLIB_MODULES = (
    "argparse", "ast", "asyncio", "bisect", "calendar", "collections", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "doctest", "email.message", "enum", "fractions", "functools", "heapq",
    "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "pydoc", "random", "re",
    "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap",
    "threading", "unittest", "urllib.parse", "zipfile",
)  # fmt: skip


def stdlib_docstrings(min_chars: int = 200) -> list[str]:
    """Real English technical prose, available offline: docstrings of stdlib modules and their members."""
    seen: set[str] = set()
    docs: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in STDLIB_MODULES:
            module = importlib.import_module(name)
            objects = [module, *(getattr(module, attr) for attr in sorted(dir(module)) if not attr.startswith("_"))]
            for obj in objects:
                members = [obj]
                if inspect.isclass(obj):
                    members += [getattr(obj, attr, None) for attr in sorted(vars(obj)) if not attr.startswith("_")]
                for member in members:
                    doc = inspect.getdoc(member) if member is not None else None
                    if doc and len(doc) >= min_chars and doc not in seen:
                        seen.add(doc)
                        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def corpus():
    docs = stdlib_docstrings()
    train_texts = [d for i, d in enumerate(docs) if i % 10]
    eval_texts = [d for i, d in enumerate(docs) if i % 10 == 0]
    tokenizer = train_tokenizer(train_texts, vocab_size=1024)
    return {
        "tokenizer": tokenizer,
        "train_docs": encode_documents(tokenizer, train_texts),
        "eval_texts": eval_texts,
        "eval_docs": encode_documents(tokenizer, eval_texts),
    }


@pytest.fixture(scope="module")
def small_config(corpus) -> TrainConfig:
    vocab_size = corpus["tokenizer"].get_vocab_size()
    model = GPTConfig(vocab_size=vocab_size, context_length=64, d_model=64, n_layers=2, n_heads=4)
    return TrainConfig(token_budget=16 * 64 * 120, batch_size=16, learning_rate=3e-3, checkpoint_every=25, model=model)


@pytest.fixture(scope="module")
def trained(corpus, small_config, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run_seed0")
    return train_lm(corpus["train_docs"], small_config, out_dir, seed=0, num_threads=1)


def test_tokenizer_is_deterministic_and_round_trips(corpus, tmp_path):
    texts = stdlib_docstrings()[:200]
    first, second = train_tokenizer(texts, vocab_size=512), train_tokenizer(texts, vocab_size=512)
    assert first.to_str() == second.to_str()
    reloaded = load_tokenizer(save_tokenizer(first, tmp_path / "tokenizer.json"))
    docs = encode_documents(reloaded, texts[:3])
    eot = end_of_text_id(reloaded)
    assert reloaded.id_to_token(eot) == END_OF_TEXT
    for doc, text in zip(docs, texts[:3]):
        assert doc.dtype == np.int32 and doc[-1] == eot and eot not in doc[:-1]
        assert reloaded.decode(doc[:-1].tolist()) == text


def test_learning_rate_warms_up_then_decays_to_floor():
    config = TrainConfig(token_budget=100 * 16 * 128, batch_size=16, warmup_fraction=0.1,
                         model=GPTConfig(context_length=128))
    rates = [learning_rate_at(step, config) for step in range(config.total_steps)]
    assert rates[0] < rates[5] < rates[9] == pytest.approx(config.learning_rate)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(config.learning_rate * config.min_learning_rate_ratio, rel=0.01)


def test_training_lowers_loss_and_beats_unigram(corpus, trained, small_config):
    assert trained.completed and trained.steps == small_config.total_steps == 120
    assert trained.tokens_seen == 120 * 16 * 64
    assert len(trained.loss_history) == trained.steps
    first, last = np.mean(trained.loss_history[:10]), np.mean(trained.loss_history[-10:])
    assert first > math.log(small_config.model.vocab_size) - 0.5  # starts near uniform
    assert last < first - 0.7
    assert file_sha256(trained.weights_path) == trained.weights_sha256
    assert not (Path(trained.model_dir) / RESUME_STATE_FILE).exists()

    lm = perplexity(trained.model_dir, corpus["tokenizer"], corpus["eval_texts"])
    unigram = unigram_perplexity(corpus["train_docs"], corpus["eval_docs"], small_config.model.vocab_size)
    n_eval_tokens = sum(len(d) for d in corpus["eval_docs"])
    assert lm["n_tokens"] == unigram["n_tokens"] == n_eval_tokens
    assert math.isfinite(lm["ppl"]) and lm["ppl"] == pytest.approx(math.exp(lm["mean_nll"]))
    assert lm["ppl"] < unigram["ppl"]


def test_same_seed_reproduces_and_other_seed_differs(corpus, trained, small_config, tmp_path):
    again = train_lm(corpus["train_docs"], small_config, tmp_path / "again", seed=0, num_threads=1)
    assert again.loss_history == trained.loss_history
    assert again.weights_sha256 == trained.weights_sha256
    other = train_lm(corpus["train_docs"], small_config, tmp_path / "other", seed=1, num_threads=1)
    assert other.loss_history != trained.loss_history
    assert other.weights_sha256 != trained.weights_sha256
    # a finished run is returned from disk, not retrained
    cached = train_lm(corpus["train_docs"], small_config, trained.model_dir, seed=0)
    assert cached.weights_sha256 == trained.weights_sha256 and cached.wall_seconds == trained.wall_seconds


def test_bf16_autocast_on_the_cpu_is_its_own_reproducible_run(corpus, trained, small_config, tmp_path):
    """cpu_bf16 really trains in bf16 (other weights than fp32), learns as well, and is as
    reproducible; it is part of the config a checkpoint records."""
    config = replace(small_config, cpu_bf16=True)
    assert config.to_dict() != small_config.to_dict()
    first = train_lm(corpus["train_docs"], config, tmp_path / "a", seed=0, num_threads=1)
    again = train_lm(corpus["train_docs"], config, tmp_path / "b", seed=0, num_threads=1)
    assert first.weights_sha256 == again.weights_sha256 and first.loss_history == again.loss_history
    assert first.weights_sha256 != trained.weights_sha256
    assert abs(first.loss_history[-1] - trained.loss_history[-1]) < 0.1
    model = load_model(first.model_dir)
    eot = end_of_text_id(corpus["tokenizer"])
    fp32 = token_perplexity(model, corpus["eval_docs"], eot)["ppl"]
    assert token_perplexity(model, corpus["eval_docs"], eot, bf16=True)["ppl"] == pytest.approx(fp32, rel=1e-2)


def test_interrupted_run_resumes_to_identical_weights(corpus, trained, small_config, tmp_path):
    out_dir = tmp_path / "interrupted"
    partial = train_lm(corpus["train_docs"], small_config, out_dir, seed=0, stop_at_step=57, num_threads=1)
    assert not partial.completed and partial.steps == 57 and partial.weights_path is None
    assert (out_dir / RESUME_STATE_FILE).is_file()
    resumed = train_lm(corpus["train_docs"], small_config, out_dir, seed=0)  # thread count comes from the checkpoint
    assert resumed.completed and resumed.resumed_from_step == 57 and resumed.steps == trained.steps
    assert resumed.loss_history == trained.loss_history
    assert resumed.weights_sha256 == trained.weights_sha256
    # a checkpoint written for another seed is refused, not silently continued
    train_lm(corpus["train_docs"], small_config, tmp_path / "mixed", seed=0, stop_at_step=5)
    with pytest.raises(ValueError, match="other data/config/seed"):
        train_lm(corpus["train_docs"], small_config, tmp_path / "mixed", seed=1)


def test_progress_counts_the_steps_of_each_invocation(corpus, small_config, tmp_path):
    calls: list[tuple[int, int, float]] = []
    record = lambda done, total, elapsed: calls.append((done, total, elapsed))  # noqa: E731
    train_lm(corpus["train_docs"], small_config, tmp_path, seed=0, stop_at_step=4, num_threads=1, progress=record)
    assert [(d, t) for d, t, _ in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(a[2] <= b[2] for a, b in zip(calls, calls[1:]))
    calls.clear()
    train_lm(corpus["train_docs"], small_config, tmp_path, seed=0, stop_at_step=6, progress=record)
    assert [(d, t) for d, t, _ in calls] == [(1, 2), (2, 2)]  # resumed from step 4


def test_format_progress_and_throttle():
    assert format_progress(0, 50, 0.0) == "0/50 docs (0%), rate ?, time left ?"
    assert format_progress(10, 50, 5.0) == "10/50 docs (20%), 2 docs/s, 20s left"
    assert format_progress(30, 5000, 10.0, unit="steps") == "30/5000 steps (1%), 3 steps/s, 27m37s left"
    assert format_duration(7325) == "2h02m" and format_duration(float("nan")) == "?"
    # Weighted by work: 10 cheap items of 50 took 5 s, but they were 1/10 of the work.
    work = [0.0, *range(1, 11), *(10 + 2.25 * i for i in range(1, 41))]
    assert format_progress(10, 50, 5.0, work=work) == "10/50 docs (20%), 2 docs/s, 45s left"
    with pytest.raises(ValueError, match="-1/5"):
        format_progress(-1, 5, 1.0)
    now = [0.0]
    seen: list[int] = []
    tick = throttled(lambda done, total, elapsed: seen.append(done), every_seconds=10, clock=lambda: now[0])
    for done in range(1, 6):
        tick(done, 5, now[0])
        now[0] += 4.0
    assert seen == [1, 4, 5]  # first, once per 10 s, and the last


def test_perplexity_of_uniform_model_is_vocab_size(corpus):
    config = GPTConfig(vocab_size=corpus["tokenizer"].get_vocab_size(), context_length=32, d_model=32, n_layers=1)
    model = TinyGPT(config)
    with torch.no_grad():
        model.token_embedding.weight.zero_()  # tied head -> all-zero logits -> uniform prediction
    docs = corpus["eval_docs"][:7]
    result = token_perplexity(model, docs, end_of_text_id(corpus["tokenizer"]), batch_size=4)
    assert result["n_tokens"] == sum(len(d) for d in docs)  # every token scored once, ragged tail included
    assert result["ppl"] == pytest.approx(config.vocab_size, rel=1e-4)


def test_unigram_perplexity_by_hand():
    train = [np.array([0, 0, 1, 2])]
    evaluation = [np.array([0, 1]), np.array([3])]
    # add-one counts over vocab 4: [3, 2, 2, 1] / 8
    expected_nll = -(math.log(3 / 8) + math.log(2 / 8) + math.log(1 / 8)) / 3
    result = unigram_perplexity(train, evaluation, vocab_size=4)
    assert result["mean_nll"] == pytest.approx(expected_nll)
    assert result["ppl"] == pytest.approx(math.exp(expected_nll))
    with pytest.raises(ValueError, match="outside"):
        unigram_perplexity(train, [np.array([4])], vocab_size=4)


def test_model_round_trips_through_safetensors(trained, tmp_path):
    model = load_model(trained.model_dir)
    assert model.token_embedding.weight.abs().sum() > 0
    copy_path = save_model(model, tmp_path / "copy")
    assert file_sha256(copy_path) == trained.weights_sha256
    assert load_model(tmp_path / "copy").config == model.config


def _results_frame() -> pl.DataFrame:
    rows = []
    for eval_set, shift in (("val", 0.0), ("hq", 10.0)):
        for seed, noise in ((0, -0.5), (1, 0.5)):
            rows += [
                ("random", 0.2, seed, eval_set, 20.0 + shift + noise),
                ("random", 0.5, seed, eval_set, 18.0 + shift),
                ("density", 0.2, seed, eval_set, 18.0 + shift + 2 * noise),  # mean 19 over the two seeds
                ("density", 0.5, seed, eval_set, 19.0 + shift),
                ("full", 1.0, seed, eval_set, 16.0 + shift),
            ]
    return pl.DataFrame(rows, schema=["sampler", "rate", "seed", "eval_set", "ppl"], orient="row")


def test_report_relative_numbers_table_and_plots(tmp_path):
    report = build_report(_results_frame(), tmp_path)
    summary = report.summary
    def row(sampler: str, rate: float, eval_set: str) -> dict:
        hits = summary.filter(
            (pl.col("sampler") == sampler) & (pl.col("rate") == rate) & (pl.col("eval_set") == eval_set)
        )
        assert hits.height == 1
        return hits.row(0, named=True)

    density_20 = row("density", 0.2, "val")
    assert density_20["ppl"] == pytest.approx(18.0) and density_20["n_runs"] == 2
    # Paired by seed: (17 - 19.5) / 19.5 and (19 - 20.5) / 20.5, averaged.
    assert density_20["rel_change_vs_random_pct"] == pytest.approx(50 * (-2.5 / 19.5 - 1.5 / 20.5))
    assert density_20["gap_closed_pct"] == pytest.approx(50 * (2.5 / 3.5 + 1.5 / 4.5))
    density_50 = row("density", 0.5, "hq")
    assert density_50["rel_change_vs_random_pct"] == pytest.approx(100 * (29 - 28) / 28)
    assert density_50["rel_change_ci"] == pytest.approx(0.0)  # the same difference on both seeds
    assert density_50["verdict"] == "worse than random"
    assert density_50["gap_closed_pct"] == pytest.approx(-50.0)  # (28 - 29) / (28 - 26)
    random_rows = summary.filter(pl.col("sampler") == "random")
    assert random_rows["rel_change_vs_random_pct"].to_list() == [0.0] * 4

    assert set(report.plot_paths) == {"val", "hq"}
    for path in report.plot_paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.markdown_path.read_text() == report.markdown
    assert "2 seed(s) per configuration" in report.markdown
    assert "| full | 100% | 26.00 ± 0.00 | 16.00 ± 0.00 |" in report.markdown
    assert "| density | 50% | hq | +3.6 ± 0.0 | -50.0 ± 0.0 | worse than random |" in report.markdown
    assert pl.read_csv(report.summary_path).height == summary.height


def test_paired_interval_separates_a_real_difference_from_seed_noise():
    rows = []
    for seed, noise in enumerate([-3.0, 0.0, 3.0, 1.0]):  # seed noise far larger than the effect
        rows += [("random", 0.2, seed, "val", 40.0 + noise), ("steady", 0.2, seed, "val", 39.0 + noise),
                 ("noisy", 0.2, seed, "val", 40.0 - noise)]
    summary = relative_to_random(pl.DataFrame(rows, schema=["sampler", "rate", "seed", "eval_set", "ppl"],
                                              orient="row"))
    verdicts = dict(zip(summary["sampler"], summary["verdict"]))
    assert verdicts["steady"] == "better than random"  # 1 lower on every seed: pairing removes the noise
    assert verdicts["noisy"] == "not distinguishable from random"
    single = relative_to_random(pl.DataFrame(rows[:3], schema=["sampler", "rate", "seed", "eval_set", "ppl"],
                                             orient="row"))
    assert set(single.filter(pl.col("sampler") != "random")["verdict"]) == {"one seed: no interval"}


def test_gap_closed_is_null_without_a_gap_and_bad_rows_are_named():
    frame = pl.DataFrame(
        [("random", 0.5, "val", 16.01), ("density", 0.5, "val", 15.0), ("full", 1.0, "val", 16.0)],
        schema=["sampler", "rate", "eval_set", "ppl"],
        orient="row",
    )
    summary = relative_to_random(frame)
    assert summary.filter(pl.col("sampler") == "density")["gap_closed_pct"][0] is None
    with pytest.raises(ValueError, match="row 1: ppl"):
        relative_to_random(frame.with_columns(pl.Series("ppl", [16.0, float("nan"), 16.0])))
    with pytest.raises(ValueError, match="lacks columns"):
        relative_to_random(frame.drop("rate"))
    with pytest.raises(ValueError, match="row 1: more than one row"):
        relative_to_random(pl.concat([frame.head(1), frame.head(1)]))


def test_bad_inputs_are_rejected(corpus, small_config, tmp_path):
    with pytest.raises(ValueError, match="outside"):
        train_lm([np.array([0, 1, 99_999])], small_config, tmp_path, seed=0)
    with pytest.raises(ValueError, match="fewer than one training window"):
        train_lm([np.array([0, 1, 2])], small_config, tmp_path, seed=0)
    with pytest.raises(ValueError, match="below one step"):
        replace(small_config, token_budget=10)


@pytest.mark.heavy
def test_killed_process_resumes_from_last_checkpoint(corpus, trained, small_config, tmp_path):
    import multiprocessing
    import time

    out_dir = tmp_path / "killed"
    child = multiprocessing.get_context("spawn").Process(
        target=train_lm, args=(corpus["train_docs"], small_config, out_dir, 0), kwargs={"num_threads": 1}
    )
    child.start()
    deadline = time.monotonic() + 120
    while not (out_dir / RESUME_STATE_FILE).exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    child.kill()  # SIGKILL: no cleanup runs, as when a worker is OOM-killed
    child.join()
    assert (out_dir / RESUME_STATE_FILE).is_file(), "child finished or died before its first checkpoint"
    resumed = train_lm(corpus["train_docs"], small_config, out_dir, seed=0)
    assert resumed.resumed_from_step > 0 and resumed.resumed_from_step % small_config.checkpoint_every == 0
    assert resumed.weights_sha256 == trained.weights_sha256

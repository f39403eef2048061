"""The paper's 19 configurations as selection partitions, what happens when a stand-in's model is
missing, the `dselect run` profiles' plans, and the tiny-LM checkpoints the perplexity filter reads."""

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from dselect_assets import definitions
from dselect_assets.assets import paper_scores, scoring, selection, training
from dselect_assets.core.lm import checkpoint_lm, report, train
from dselect_assets.core.lm.evaluate import token_perplexity
from dselect_assets.core.lm.tiny_lm import GPTConfig, TinyGPT, load_model
from dselect_assets.core.scoring import models
from dselect_assets.core.selection import paper
from dselect_assets.resources import AskLLMJudgeResource
from dselect_assets.store import selections as selection_store


@pytest.fixture
def no_extra_models(tmp_path, monkeypatch):
    """Neither Qwen judge nor Gemma installed, whatever this machine has."""
    monkeypatch.setenv("DSELECT_JUDGES_DIR", str(tmp_path / "no_judges"))
    real = models.package_files

    def package_files(package):
        if package == models.GEMMA_PACKAGE:
            raise models.ModelLoadError(f"model package {package!r} is not installed (pip install {package})")
        return real(package)

    monkeypatch.setattr(models, "package_files", package_files)


@pytest.fixture
def qwen_installed(tmp_path, monkeypatch):
    """Both Qwen judges 'installed': sparse files of the pinned size (nothing loads them here)."""
    monkeypatch.setenv("DSELECT_JUDGES_DIR", str(tmp_path / "judges"))
    (tmp_path / "judges").mkdir()
    for judge in models.SPLIT_GGUF_JUDGES.values():
        with open(tmp_path / "judges" / judge.gguf_name, "wb") as f:
            f.truncate(judge.size_bytes)


def test_the_19_paper_configurations_are_selection_partitions():
    assert len(paper.PAPER_CONFIGURATIONS) == 19
    samplers = selection.selection_partitions.get_partition_keys()
    for config, sampler in paper.PAPER_CONFIGURATIONS.items():
        for rate in selection.DEFAULT_RATES:
            assert selection.selection_partition(selection.selection_key(sampler, rate)) in samplers, config
    assert set(paper.PAPER_CONFIGURATIONS.values()) == set(paper.STAND_IN_BY_NAME)


def test_configurations_that_would_coincide_are_one_sampler():
    # Two stand-ins are the same selection when they run the same rule over the same scores.
    what_runs = [(s.rule, s.signal, s.model, s.fraction) for s in paper.STAND_INS]
    assert len(set(what_runs)) == len(what_runs)
    shared = paper.STAND_IN_BY_NAME["ask_llm_qwen15b"].paper
    assert shared == ("Ask-LLM, Flan-T5-Large", "Ask-LLM, Flan-T5-XL", "Ask-LLM, Flan-T5-XXL")


def test_a_stand_in_whose_model_is_missing_fails_saying_so(no_extra_models, resources, instance):
    result = dg.materialize([selection.selections], partition_key=selection.selection_partition("ask_llm_qwen05b@0.20"),
                            instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("selections").error.message
    assert "ask_llm_qwen05b (stand-in for Ask-LLM, Flan-T5-Base) is skipped" in message
    assert "is not installed" in message and "scripts/setup.sh --judges" in message
    # Its producer cannot run either, with the same reason.
    result = dg.materialize([paper_scores.SCORE_ASSETS["ask_llm_qwen05b"]], partition_key="s.jsonl",
                            instance=_with_shard(instance), resources=resources, raise_on_error=False)
    assert "scripts/setup.sh --judges" in result.failure_data_for_node("ask_llm_scores_qwen05b").error.message


def _with_shard(instance):
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    return instance


def test_a_cell_of_the_cross_product_that_is_no_selection_fails(resources, instance):
    for key in ("density@1.00", "full@0.20"):
        result = dg.materialize([selection.selections], partition_key=selection.selection_partition(key),
                                instance=instance, resources=resources, raise_on_error=False)
        assert "is no selection" in result.failure_data_for_node("selections").error.message
    with pytest.raises(ValueError, match="unknown selection 'density@0.30'"):
        selection.selection_partition("density@0.30")


def test_a_stand_in_reads_the_scores_its_own_producer_registers(qwen_installed):
    configured = selection.ScoreSources("judge-now", "lm-now", "embedder-now")
    judge = paper.STAND_IN_BY_NAME["ask_llm_qwen15b"]
    sources = paper_scores.stand_in_sources(judge.name, configured)
    # the name the producer asset registers under (resource_as), computed without loading a model
    assert sources.ask_llm == scoring.resource_key("ask_llm", paper_scores.stand_in_resource(judge))
    assert sources.ask_llm != scoring.resource_key("ask_llm", AskLLMJudgeResource())
    assert (sources.perplexity, sources.embedding) == ("lm-now", "embedder-now")
    lm = paper_scores.stand_in_sources("perplexity_qwen05b", configured)
    assert lm.ask_llm == "judge-now" and lm.perplexity.startswith("perplexity:")
    assert paper_scores.stand_in_sources("perplexity_tiny_lm_30pct", configured).perplexity == \
        paper.tiny_lm_resource(0.30)
    assert paper_scores.stand_in_sources("density", configured) == configured


def _selection_keys(plan):
    (stage,) = [s for s in plan.stages if s.job_name == "selection_job"]
    return {selection.partition_selection_key(k) for k in stage.partition_keys([])}


def _training_keys(plan):
    (stage,) = [s for s in plan.stages if s.job_name == "training_job"]
    return sorted(str(k) for k in stage.partition_keys([]))


def test_default_plan_trains_the_headline_samplers_at_20_percent_with_3_seeds():
    plan = definitions.default_plan()
    assert plan.skipped == []
    assert _selection_keys(plan) == {selection.selection_key(s, 0.2) for s in selection.DEFAULT_SAMPLERS} | {
        selection.FULL_DATA_KEY}
    trained = {"random", "density", "ask_llm_topk", "perplexity_filter", "ask_llm_density", "ask_llm_distilled"}
    expected = [str(training.training_partition(k, s)) for k in
                [selection.selection_key(t, 0.2) for t in trained] + [selection.FULL_DATA_KEY] for s in "012"]
    assert _training_keys(plan) == sorted(expected)
    assert [s.job_name for s in plan.stages][0] == "shard_job"


def test_paper_plan_runs_what_is_installed_and_says_why_it_skips_the_rest(no_extra_models):
    plan = definitions.paper_plan()
    missing = {"ask_llm_qwen05b", "ask_llm_qwen15b", "perplexity_qwen05b", "perplexity_qwen15b",
               "perplexity_gemma3_270m"}
    assert sorted(r.split(" ")[0] for r in plan.skipped) == sorted(missing)
    assert all("is not installed" in r for r in plan.skipped)
    runnable = [s.name for s in paper.STAND_INS if s.name not in missing]
    keys = {selection.selection_key(s, r) for s in runnable for r in selection.DEFAULT_RATES}
    assert _selection_keys(plan) == keys | {selection.FULL_DATA_KEY}
    assert _training_keys(plan) == sorted(str(training.training_partition(k, s))
                                          for k in keys | {selection.FULL_DATA_KEY} for s in "012")
    jobs = [s.job_name for s in plan.stages]
    assert not [j for j in jobs if "qwen" in j or "gemma" in j]
    # the tiny-LM checkpoints are trained and score the shards before anything is selected
    assert jobs.index("tiny_lm_steps_job") < jobs.index("tiny_lm_scores_job") < jobs.index("selection_job")


def test_paper_plan_scores_with_an_installed_judge_first(qwen_installed):
    jobs = [s.job_name for s in definitions.paper_plan().stages]
    for name in ("ask_llm_qwen05b", "ask_llm_qwen15b", "perplexity_qwen05b", "perplexity_qwen15b"):
        assert jobs.index(definitions.paper_score_jobs[name].name) < jobs.index("selection_job")


def test_a_checkpoint_maps_onto_exactly_its_selection():
    graph = definitions.defs.resolve_asset_graph()
    parents = graph.get_parent_partition_keys_for_child(
        training.training_partition("density@0.40", 2), dg.AssetKey("selections"), dg.AssetKey("checkpoints"))
    assert set(parents.partitions_subset.get_partition_keys()) == {selection.selection_partition("density@0.40")}


# ------------------------------------------------------------ tiny-LM checkpoints


def _docs(n=60, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, size=int(rng.integers(20, 90))).astype(np.int32) for _ in range(n)]


def test_checkpoints_are_the_weights_of_one_run_at_each_share(tmp_path):
    config = train.TrainConfig(token_budget=50 * 4 * 32, batch_size=4,
                               model=GPTConfig(vocab_size=50, context_length=32, d_model=16, n_layers=1, n_heads=2))
    fractions = (0.02, 0.1, 0.3, 0.5, 0.7)
    dirs = checkpoint_lm.train_with_checkpoints(_docs(), config, tmp_path / "steps", 0, fractions)
    assert [d.name for d in dirs] == [f"step-{s:06d}" for s in (1, 5, 15, 25, 35)]
    # The weights at step 25 equal a run stopped there directly.
    train.train_lm(_docs(), config, tmp_path / "direct", seed=0, stop_at_step=25)
    direct = torch.load(tmp_path / "direct" / train.RESUME_STATE_FILE, weights_only=True)["model"]
    kept = load_model(dirs[3]).state_dict()
    for name, tensor in direct.items():
        torch.testing.assert_close(kept[name], tensor)
    assert not torch.equal(load_model(dirs[0]).state_dict()["token_embedding.weight"],
                           kept["token_embedding.weight"])
    with pytest.raises(ValueError, match="distinct steps"):
        # 3 steps in all cannot hold five distinct checkpoints
        checkpoint_lm.checkpoint_steps(train.TrainConfig(token_budget=3 * 4 * 32, batch_size=4, model=config.model),
                                       fractions)


def test_document_nll_is_each_documents_own_perplexity():
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=50, context_length=64, d_model=16, n_layers=1, n_heads=2)).eval()
    docs = _docs(n=5) + [np.array([], dtype=np.int32)]
    nll = checkpoint_lm.document_nll(model, docs, start_token_id=0, batch_size=2)
    for doc, value in zip(docs[:5], nll):
        assert value == pytest.approx(token_perplexity(model, [doc[:64]], 0)["mean_nll"], rel=1e-5)
    assert np.isnan(nll[5])


def test_the_cli_names_what_the_paper_profile_skips_and_why(no_extra_models, workspace, capsys, monkeypatch):
    from dselect_assets import cli

    monkeypatch.setenv("DAGSTER_HOME", str(workspace[0] / "dagster_home"))  # restored after the test
    (workspace[1] / "s.jsonl").write_text('{"id": "a", "text": "a line"}\n', encoding="utf-8")
    cli.run_pipeline(stages=["no_such_job"], profile="paper")  # every stage filtered out: nothing runs
    out = capsys.readouterr().out
    assert "dselect: perplexity_gemma3_270m (stand-in for Perplexity filter, T5-Base) is skipped: model package " \
        f"'{models.GEMMA_PACKAGE}' is not installed" in out
    assert "dselect: ask_llm_qwen15b (stand-in for Ask-LLM, Flan-T5-Large; Ask-LLM, Flan-T5-XL; Ask-LLM, " \
        "Flan-T5-XXL) is skipped" in out


def test_the_report_names_each_stand_in_and_the_full_data_against_unigram(tmp_path):
    rows = [(s, r, seed, "high_quality", ppl, 900.0)
            for s, r, ppl in (("random", 0.2, 500.0), ("ask_llm_qwen15b", 0.2, 480.0), ("full", 1.0, 450.0))
            for seed in (0, 1, 2)]
    results = pl.DataFrame(rows, schema=["sampler", "rate", "seed", "eval_set", "ppl", "unigram_ppl"], orient="row")
    markdown = report.build_report(results, tmp_path).markdown
    assert "| ask_llm_qwen15b | Ask-LLM, Flan-T5-Large; Ask-LLM, Flan-T5-XL; Ask-LLM, Flan-T5-XXL | " \
        "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) in its chat template |" in markdown
    assert "high_quality: full data 450.0 vs unigram 900.0, ratio 0.50 (3 run(s))" in markdown


@pytest.mark.heavy
def test_the_perplexity_filter_over_a_tiny_lm_checkpoint_end_to_end(workspace, resources, instance):
    from dselect_assets.assets import corpus, tiny_lm_scores

    words = ("the", "river", "flows", "north", "past", "old", "mills", "and", "green", "fields", "where")
    lines = [json.dumps({"id": f"d{i}", "text": f"Note {i}: " + " ".join(words[(i * 7 + j * (1 + i % 3)) % len(words)]
                                                                 for j in range(30)) + "."}) for i in range(200)]
    (workspace[1] / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    run = lambda assets, **kw: dg.materialize(assets, instance=instance, resources=resources, **kw)  # noqa: E731
    run([corpus.documents], partition_key="s.jsonl")
    run([selection.eval_sets], run_config={"ops": {"eval_sets": {"config": {"validation_fraction": 0.1}}}})
    run([training.lm_tokenizer_file], run_config={"ops": {"lm_tokenizer_file": {"config": {"vocab_size": 300}}}})
    context = training.TrainingConfig().train_config(300).model.context_length
    budget = {"token_budget": 50 * 4 * context, "batch_size": 4}  # 50 steps
    steps = run([tiny_lm_scores.tiny_lm_step_checkpoints],
                run_config={"ops": {"tiny_lm_step_checkpoints": {"config": budget}}})
    assert steps.asset_materializations_for_node("tiny_lm_step_checkpoints")[0].metadata["steps"].value == {
        "2%": 1, "10%": 5, "30%": 15, "50%": 25, "70%": 35}
    scores = tiny_lm_scores.SCORE_ASSETS["perplexity_tiny_lm_30pct"]
    run([scores], partition_key="s.jsonl", run_config={"ops": {scores.key.path[-1]: {"config": budget}}})

    key = "perplexity_tiny_lm_30pct@0.20"
    (event,) = run([selection.selections], partition_key=selection.selection_partition(key)) \
        .asset_materializations_for_node("selections")
    store = resources["store"]
    (producers,) = store.query("SELECT producer_ids_json FROM selections WHERE selection_key = ?", [key])[0]
    producer = json.loads(producers)["perplexity"]
    assert producer == store.query("SELECT producer_id FROM resource_producers WHERE resource = ?",
                                   [paper.tiny_lm_resource(0.30)])[0][0]
    # the filter kept the documents this checkpoint finds most likely
    with store.connect(read_only=True) as con:
        kept = set(pl.read_parquet(selection_store.members_file(con, event.metadata["selection_id"].value))
                   ["content_hash"])
    nll = dict(store.query("SELECT s.content_hash, s.value FROM scores s JOIN contents c USING (content_hash)"
                           " WHERE s.producer_id = ? AND c.content_hash NOT IN (SELECT content_hash FROM eval_documents)",
                           [producer]))
    assert max(nll[h] for h in kept) <= min(v for h, v in nll.items() if h not in kept)

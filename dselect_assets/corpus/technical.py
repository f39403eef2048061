"""The optional technical corpus (the default before corpus.build's web-like one): real text, mixed quality.

Everything comes from Debian packages (install them with `scripts/setup.sh --technical`)
or from the running Python's standard library; nothing is generated. Sources, by category:

informative (judge probe label 1)
  foldoc             FOLDOC, the Free On-line Dictionary of Computing (dict-foldoc)
  jargon             the Jargon File 4.4.7 (dict-jargon)
  gcide              GNU Collaborative International Dictionary of English (dict-gcide)
  python-docstring   module/class/function docstrings of the CPython stdlib, parsed with `ast`
unlabelled
  devils-dictionary  Ambrose Bierce's satirical definitions (dict-devil); neither clean knowledge
                     nor junk, so it stays out of the judge probe
junk (label 0)
  licence            chunks of /usr/share/doc/*/copyright (many near-identical GPL/Apache texts)
  debian-changelog   entries of /usr/share/doc/*/changelog.Debian.gz
  file-list          windows of /var/lib/dpkg/info/*.list (installed file paths)
  word-list          runs of GCIDE headwords, one per line
  dict-index         raw lines of foldoc.index (headword, base64 offset, base64 length)
  python-code        docstring-less stdlib functions, code only
  package-blurb      one-line package descriptions from /var/lib/dpkg/status (very short fragments)
  fortune            quotes and jokes of the fortunes/fortunes-min cookie files
  offensive-quote    the fortunes `ethnic` file: jokes built on ethnic stereotypes. Debian 12 no
                     longer ships the English fortunes-off package, and this file is the closest
                     real text to what the Ask-LLM prompt tells a judge to reject as harmful.
Some documents are then copied under a new id (exact duplicates), and long texts are split at
paragraph boundaries into pieces of at most `MAX_DOCUMENT_CHARS` characters.

High-quality evaluation set (`high_quality.jsonl`), held out of the corpus entirely: prose
paragraphs of Perl's own manuals (perlfaq1-9 and the tutorial/reference perl*.pod files of
the perl-doc package), POD markup rendered to plain text, code blocks and author/licence
sections dropped, one document per section. No Perl documentation is in the corpus.

Shards: `shard-NNN.jsonl` ({"id", "text", "source"} per line), the second-to-last shard as
`.parquet` (columns id, text, source) and the last as `.txt` (documents separated by blank
lines, so only single-paragraph documents go there; ingest names them `<file>:<first line>`,
and the probe set uses those ids). Given the same installed packages, Python and seed, every
output file is byte-identical.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import html
import json
import os
import random
import re
import sys
import sysconfig
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dselect_assets.core.hashing import content_hash

MAX_DOCUMENT_CHARS = 2000
INSTALL_HINT = "run scripts/install_corpus_sources.sh (as root) to install the corpus sources"

# Documents per source before exact duplicates are added; ~3,100 in all, so that the
# whole default pipeline (two LM scorers over every document) runs in under an hour on
# 2 CPU cores.
SOURCE_BUDGETS: dict[str, int] = {
    "foldoc": 480,
    "jargon": 270,
    "gcide": 300,
    "python-docstring": 330,
    "devils-dictionary": 150,
    "licence": 360,
    "debian-changelog": 270,
    "file-list": 120,
    "word-list": 72,
    "dict-index": 48,
    "python-code": 180,
    "package-blurb": 150,
    "fortune": 270,
    "offensive-quote": 120,
}
N_EXACT_DUPLICATES = 60

INFORMATIVE_SOURCES = ("foldoc", "jargon", "gcide", "python-docstring")
JUNK_SOURCES = (
    "licence",
    "debian-changelog",
    "file-list",
    "word-list",
    "dict-index",
    "python-code",
    "package-blurb",
    "fortune",
    "offensive-quote",
)
PROBE_PER_LABEL = 100

HIGH_QUALITY_SOURCE = "perl-doc"
HIGH_QUALITY_MAX_DOCS = 500
HIGH_QUALITY_POD_FILES = (
    *(f"perlfaq{i}" for i in range(1, 10)),
    "perlintro", "perlsyn", "perldata", "perlop", "perlsub", "perlref", "perlreftut", "perldsc",
    "perllol", "perlretut", "perlrequick", "perlre", "perlobj", "perlootut", "perlmod", "perlstyle",
    "perltrap", "perlport", "perlsec", "perlunitut", "perluniintro", "perlunifaq", "perlunicode",
    "perlipc", "perlnumber", "perlfork", "perlthrtut", "perlpacktut", "perlopentut", "perllocale",
    "perldebtut", "perlperf", "perlpolicy", "perlcommunity", "perlmodstyle", "perlnewmod",
)
_SKIPPED_POD_SECTIONS = re.compile(r"^(NAME|VERSION|AUTHORS?|COPYRIGHT|LICEN[CS]E|SEE ALSO)\b", re.I)

# Fortune files that are not plain quotes of the "fortune" source.
_OFFENSIVE_FORTUNE_FILES = ("ethnic",)
_EXCLUDED_FORTUNE_FILES = ("ethnic", "men-women")


class CorpusSourceMissing(FileNotFoundError):
    """A Debian package the default corpus reads from is not installed."""


@dataclass(frozen=True)
class CorpusSources:
    """Where the source texts live; the defaults are the Debian/CPython install paths."""

    dictd_dir: Path = Path("/usr/share/dictd")
    fortunes_dir: Path = Path("/usr/share/games/fortunes")
    perl_pod_dirs: tuple[Path, ...] = field(default_factory=lambda: tuple(sorted(Path("/usr/share/perl").glob("5*/pod"))))
    doc_dir: Path = Path("/usr/share/doc")
    dpkg_dir: Path = Path("/var/lib/dpkg")
    python_stdlib: Path = Path(sysconfig.get_paths()["stdlib"])

    def perl_pod_dir(self) -> Path:
        for candidate in self.perl_pod_dirs:
            if (candidate / "perlfaq1.pod").is_file():
                return candidate
        raise CorpusSourceMissing(
            f"no Perl manuals (perlfaq1.pod) under {[str(p) for p in self.perl_pod_dirs] or '/usr/share/perl/5*/pod'}"
            f": package perl-doc is missing; {INSTALL_HINT}"
        )

    def check(self) -> None:
        """Raise CorpusSourceMissing naming the first missing file and its package."""
        required = [
            (self.dictd_dir / f"{name}.{ext}", package)
            for name, package in (("foldoc", "dict-foldoc"), ("jargon", "dict-jargon"),
                                  ("gcide", "dict-gcide"), ("devil", "dict-devil"))
            for ext in ("index", "dict.dz")
        ]
        required += [(self.fortunes_dir / "computers", "fortunes"), (self.fortunes_dir / "ethnic", "fortunes"),
                     (self.fortunes_dir / "fortunes", "fortunes-min"),
                     (self.doc_dir, "Debian's /usr/share/doc"), (self.dpkg_dir / "status", "dpkg"),
                     (self.python_stdlib / "os.py", "the Python standard library")]
        for path, package in required:
            if not path.exists():
                raise CorpusSourceMissing(f"{path} not found: package {package} is missing; {INSTALL_HINT}")
        self.perl_pod_dir()


# ---------------------------------------------------------------- text helpers

_LINE_BREAKS = str.maketrans({"\r": "\n", "\u2028": "\n", "\u2029": "\n", "\x85": "\n"})
_BLANK_LINES = re.compile(r"\n{3,}")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # category Cc less tab and newline


def clean_text(text: str) -> str:
    """Unify line breaks, drop control characters, trailing spaces and extra blank lines."""
    text = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
    text = _CONTROL_CHARS.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def is_single_paragraph(text: str) -> bool:
    return "\n\n" not in text


def _pack(parts: Sequence[str], joiner: str, max_chars: int) -> list[str]:
    """Greedily join parts into pieces of at most max_chars (a part over the limit stands alone)."""
    pieces: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{joiner}{part}" if current else part
        if current and len(candidate) > max_chars:
            pieces.append(current)
            current = part
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def split_long_text(text: str, max_chars: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """Split at paragraph boundaries, then lines, then sentences, then whitespace, so no piece
    is longer than max_chars."""
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for piece in _pack(_PARAGRAPH_SPLIT.split(text), "\n\n", max_chars):
        if len(piece) <= max_chars:
            pieces.append(piece)
            continue
        for block in _pack(piece.split("\n"), "\n", max_chars):
            if len(block) <= max_chars:
                pieces.append(block)
                continue
            for sentences in _pack(_SENTENCE_END.split(block), " ", max_chars):
                pieces.extend(textwrap.wrap(sentences, max_chars, break_long_words=True,
                                            break_on_hyphens=False, replace_whitespace=False,
                                            drop_whitespace=True)
                              if len(sentences) > max_chars else [sentences])
    return [p.strip() for p in pieces if p.strip()]


def _unwrap_paragraphs(text: str) -> str:
    """Join each paragraph's hard-wrapped lines into one line, as a web page would show it."""
    paragraphs = (" ".join(line.strip() for line in para.split("\n") if line.strip())
                  for para in _PARAGRAPH_SPLIT.split(text))
    return "\n\n".join(p for p in paragraphs if p)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _sorted_files(paths: Iterable[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file()), key=lambda p: str(p))


def _take(rng: random.Random, items: Sequence, budget: int, to_docs: Callable[[object], list[str]]) -> list[str]:
    """Visit items in a seeded random order, turning each into documents, until budget are made."""
    order = list(items)
    rng.shuffle(order)
    docs: list[str] = []
    for item in order:
        docs.extend(to_docs(item))
        if len(docs) >= budget:
            break
    return docs[:budget]


# ---------------------------------------------------------------- dictd databases

_B64 = {ch: i for i, ch in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64_number(digits: str) -> int:
    value = 0
    for ch in digits:
        value = value * 64 + _B64[ch]
    return value


@dataclass(frozen=True)
class DictDatabase:
    """A dictd database: its index lines and its uncompressed body (the .dict.dz is gzip)."""

    index_lines: list[str]
    body: bytes

    @classmethod
    def load(cls, dictd_dir: Path, name: str) -> "DictDatabase":
        index = (dictd_dir / f"{name}.index").read_text(encoding="utf-8").splitlines()
        return cls(index, gzip.decompress((dictd_dir / f"{name}.dict.dz").read_bytes()))

    def entries(self) -> list[tuple[str, int, int]]:
        """(headword, offset, length) of each distinct entry, in index order, minus metadata."""
        seen: set[int] = set()
        entries = []
        for line in self.index_lines:
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00"):  # 00-database-info etc. are metadata
                continue
            offset = _b64_number(parts[1])
            if offset in seen:
                continue
            seen.add(offset)
            entries.append((parts[0], offset, _b64_number(parts[2])))
        return entries

    def text(self, offset: int, length: int) -> str:
        return self.body[offset : offset + length].decode("utf-8", errors="replace")


def _dict_docs(db: DictDatabase, rng: random.Random, budget: int, min_chars: int,
               max_raw_bytes: int = 12_000) -> list[str]:
    def to_docs(entry: tuple[str, int, int]) -> list[str]:
        # {Term} marks a cross-reference (or GCIDE's inflected form); a page shows just the text.
        raw = db.text(entry[1], entry[2]).replace("{", "").replace("}", "")
        text = clean_text(_unwrap_paragraphs(clean_text(raw)))
        return split_long_text(text) if len(text) >= min_chars else []

    candidates = [e for e in db.entries() if e[2] <= max_raw_bytes]
    return _take(rng, candidates, budget, to_docs)


def _index_windows(lines: Sequence[str], rng: random.Random, budget: int, low: int, high: int) -> list[str]:
    starts = range(0, max(1, len(lines) - high), high)

    def to_docs(start: int) -> list[str]:
        size = rng.randint(low, high)
        return split_long_text(clean_text("\n".join(lines[start : start + size])))

    return _take(rng, starts, budget, to_docs)


# ---------------------------------------------------------------- Python stdlib

_SKIPPED_STDLIB_PARTS = {"test", "tests", "idle_test", "idlelib", "site-packages", "turtledemo",
                         "lib2to3", "__pycache__", "dist-packages"}


def _stdlib_files(stdlib: Path) -> list[Path]:
    return _sorted_files(p for p in stdlib.rglob("*.py")
                         if not _SKIPPED_STDLIB_PARTS.intersection(p.relative_to(stdlib).parts))


def _module_name(stdlib: Path, path: Path) -> str:
    parts = list(path.relative_to(stdlib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _python_docs(stdlib: Path, rng: random.Random, doc_budget: int, code_budget: int) -> tuple[list[str], list[str]]:
    """Docstrings (as `dotted.name` + docstring) and docstring-less function bodies, a few per file."""
    files = _stdlib_files(stdlib)
    rng.shuffle(files)
    docstrings: list[str] = []
    code: list[str] = []
    for path in files:
        if len(docstrings) >= doc_budget and len(code) >= code_budget:
            break
        source = _read_text(path)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        module = _module_name(stdlib, path)
        lines = source.splitlines()
        file_docs: list[str] = []
        file_code: list[str] = []
        doc = ast.get_docstring(tree)
        if doc and len(doc) >= 200:
            file_docs.append(f"{module}\n\n{doc}")
        for qualname, node in _named_definitions(tree):
            doc = ast.get_docstring(node)
            if doc:
                if len(doc) >= 200:
                    file_docs.append(f"{module}.{qualname}\n\n{doc}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and 6 <= node.end_lineno - node.lineno < 40:
                file_code.append(textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno])))
        for text in rng.sample(file_docs, min(4, len(file_docs))):
            docstrings.extend(split_long_text(clean_text(text)))
        for text in rng.sample(file_code, min(2, len(file_code))):
            code.extend(split_long_text(clean_text(text)))
    return docstrings[:doc_budget], code[:code_budget]


def _named_definitions(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    found: list[tuple[str, ast.AST]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                found.append((name, child))
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{name}.")

    visit(tree, "")
    return found


# ---------------------------------------------------------------- Debian package files

_CHANGELOG_HEADER = re.compile(r"^(?=\S+ \([^)]*\) [^;\n]*; *urgency=)", re.M)


def _doc_dirs(doc_dir: Path) -> list[Path]:
    # A symlinked doc dir repeats another package's files; follow only real dirs.
    return sorted((p for p in doc_dir.iterdir() if p.is_dir() and not p.is_symlink()), key=lambda p: p.name)


def _licence_docs(doc_dir: Path, rng: random.Random, budget: int) -> list[str]:
    files = [d / "copyright" for d in _doc_dirs(doc_dir) if (d / "copyright").is_file()]

    def to_docs(path: Path) -> list[str]:
        pieces = split_long_text(clean_text(_read_text(path)))
        return rng.sample(pieces, min(2, len(pieces)))

    return _take(rng, files, budget, to_docs)


def _changelog_docs(doc_dir: Path, rng: random.Random, budget: int) -> list[str]:
    files = [d / "changelog.Debian.gz" for d in _doc_dirs(doc_dir) if (d / "changelog.Debian.gz").is_file()]

    def to_docs(path: Path) -> list[str]:
        entries = [e for e in _CHANGELOG_HEADER.split(_read_text(path), maxsplit=13)[:13] if " -- " in e]
        entries = [clean_text(e) for e in entries[:12]]
        chosen = rng.sample(entries, min(2, len(entries)))
        return [piece for entry in chosen for piece in split_long_text(entry)]

    return _take(rng, files, budget, to_docs)


def _file_list_docs(dpkg_dir: Path, rng: random.Random, budget: int) -> list[str]:
    files = _sorted_files((dpkg_dir / "info").glob("*.list"))

    def to_docs(path: Path) -> list[str]:
        lines = [line for line in _read_text(path).splitlines() if line.strip() and line != "/."]
        if len(lines) < 5:
            return []
        size = rng.randint(8, 30)
        start = rng.randint(0, max(0, len(lines) - size))
        return split_long_text(clean_text("\n".join(lines[start : start + size])))

    return _take(rng, files, budget, to_docs)


def _package_blurbs(dpkg_dir: Path, rng: random.Random, budget: int) -> list[str]:
    blurbs = [clean_text(line[len("Description:"):]) for line in _read_text(dpkg_dir / "status").splitlines()
              if line.startswith("Description:")]
    return _take(rng, [b for b in blurbs if b], budget, lambda blurb: [blurb])


# ---------------------------------------------------------------- fortunes

def _fortune_entries(path: Path) -> list[str]:
    return [t for t in (clean_text(e) for e in re.split(r"(?m)^%\s*$", _read_text(path))) if t]


def _fortune_docs(fortunes_dir: Path, rng: random.Random, budget: int, names: Sequence[str] | None,
                  excluded: Sequence[str] = ()) -> list[str]:
    files = _sorted_files(fortunes_dir.iterdir())
    files = [p for p in files if not p.suffix and p.name not in excluded and (names is None or p.name in names)]
    entries = [piece for p in files for entry in _fortune_entries(p) for piece in split_long_text(entry)]
    return _take(rng, entries, budget, lambda entry: [entry])


# ---------------------------------------------------------------- Perl manuals (held-out HQ set)

_UNRESOLVED_POD_CODE = re.compile(r"[A-Z]<")
_POD_CODE = re.compile(r"([A-Z])<(?:<+\s+(.*?)\s+>+|([^<>]*))>", re.S)


def _render_pod_code(match: re.Match) -> str:
    code, inner = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
    if code in "XZ":
        return ""
    if code == "E":
        named = {"lt": "<", "gt": ">", "sol": "/", "verbar": "|"}
        if inner in named:
            return named[inner]
        if inner.isdigit():
            return chr(int(inner))
        if inner.lower().startswith("0x"):
            return chr(int(inner, 16))
        return html.unescape(f"&{inner};")
    if code == "L":  # L<text|target>, L<name/"section">, L</section>, L<url>
        if "|" in inner:
            return inner.split("|", 1)[0]
        if "://" in inner:
            return inner
        name, _, section = inner.partition("/")
        section = section.strip('"')
        if section:
            return f'"{section}" in {name}' if name else f'"{section}"'
        return name
    return inner


def render_pod_markup(text: str) -> str:
    """Replace POD formatting codes (B<...>, C<< ... >>, L<...|...>, E<gt> ...) with plain text."""
    previous = None
    while previous != text:  # innermost codes first, so nested ones unwrap layer by layer
        previous, text = text, _POD_CODE.sub(_render_pod_code, text)
    return text


def _pod_prose(paragraph: str) -> list[str]:
    """The paragraph as plain text, or nothing when a bare < inside a code left markup behind
    (such paragraphs are symbol-heavy operator lists, not prose)."""
    rendered = render_pod_markup(paragraph)
    return [] if _UNRESOLVED_POD_CODE.search(rendered) else [_unwrap_paragraphs(rendered)]


def pod_prose_sections(pod: str) -> list[tuple[str, list[str]]]:
    """(heading, prose paragraphs) per =head section; verbatim code and =begin blocks dropped."""
    sections: list[tuple[str, list[str]]] = []
    heading, paragraphs, skipping_block = "", [], False
    for para in re.split(r"\n(?:[ \t]*\n)+", pod.replace("\r\n", "\n")):
        para = para.lstrip("\n")
        if not para.strip():
            continue
        if para.startswith("="):
            command, _, rest = para.partition(" ")
            command = command.split("\n", 1)[0]
            if command == "=begin":
                skipping_block = True
            elif command == "=end":
                skipping_block = False
            elif command.startswith("=head"):
                if paragraphs:
                    sections.append((heading, paragraphs))
                heading, paragraphs = _unwrap_paragraphs(render_pod_markup(rest)), []
            elif command == "=item" and rest.strip() not in ("", "*") and not rest.strip().rstrip(".").isdigit():
                paragraphs.extend(_pod_prose(rest))
            continue
        if skipping_block or para[0] in " \t":
            continue
        paragraphs.extend(_pod_prose(para))
    if paragraphs:
        sections.append((heading, paragraphs))
    return sections


def high_quality_docs(pod_dir: Path, rng: random.Random, max_docs: int = HIGH_QUALITY_MAX_DOCS) -> list[tuple[str, str]]:
    """(source, text) documents of Perl manual prose, one per section, at least 200 characters."""
    docs: list[tuple[str, str]] = []
    for name in HIGH_QUALITY_POD_FILES:
        path = pod_dir / f"{name}.pod"
        if not path.is_file():
            continue
        for heading, paragraphs in pod_prose_sections(_read_text(path)):
            if _SKIPPED_POD_SECTIONS.match(heading):
                continue
            body = "\n\n".join(paragraphs)
            if len(body) < 200:
                continue
            text = clean_text(f"{heading}\n\n{body}" if heading else body)
            docs.extend((f"{HIGH_QUALITY_SOURCE}/{name}", piece) for piece in split_long_text(text)
                        if len(piece) >= 200)  # a split's short tail is too little text to score
    if len(docs) > max_docs:
        keep = sorted(rng.sample(range(len(docs)), max_docs))
        docs = [docs[i] for i in keep]
    return docs


# ---------------------------------------------------------------- assembling the corpus

@dataclass(frozen=True)
class CorpusDocument:
    id: str
    text: str
    source: str


def collect_source_documents(sources: CorpusSources, seed: int) -> dict[str, list[str]]:
    """Texts per corpus source, each list sampled with its own seeded generator."""
    sources.check()

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    budgets = SOURCE_BUDGETS
    gcide = DictDatabase.load(sources.dictd_dir, "gcide")
    foldoc = DictDatabase.load(sources.dictd_dir, "foldoc")
    docstrings, code = _python_docs(sources.python_stdlib, rng("python"), budgets["python-docstring"],
                                    budgets["python-code"])
    headwords = [line.split("\t", 1)[0] for line in gcide.index_lines if not line.startswith("00")]
    return {
        "foldoc": _dict_docs(foldoc, rng("foldoc"), budgets["foldoc"], min_chars=250),
        "jargon": _dict_docs(DictDatabase.load(sources.dictd_dir, "jargon"), rng("jargon"), budgets["jargon"],
                             min_chars=200),
        "gcide": _dict_docs(gcide, rng("gcide"), budgets["gcide"], min_chars=300),
        "python-docstring": docstrings,
        "devils-dictionary": _dict_docs(DictDatabase.load(sources.dictd_dir, "devil"), rng("devil"),
                                        budgets["devils-dictionary"], min_chars=60),
        "licence": _licence_docs(sources.doc_dir, rng("licence"), budgets["licence"]),
        "debian-changelog": _changelog_docs(sources.doc_dir, rng("changelog"), budgets["debian-changelog"]),
        "file-list": _file_list_docs(sources.dpkg_dir, rng("file-list"), budgets["file-list"]),
        "word-list": _index_windows(headwords, rng("word-list"), budgets["word-list"], 30, 80),
        "dict-index": _index_windows(foldoc.index_lines, rng("dict-index"), budgets["dict-index"], 20, 50),
        "python-code": code,
        "package-blurb": _package_blurbs(sources.dpkg_dir, rng("package-blurb"), budgets["package-blurb"]),
        "fortune": _fortune_docs(sources.fortunes_dir, rng("fortune"), budgets["fortune"], None,
                                 excluded=_EXCLUDED_FORTUNE_FILES),
        "offensive-quote": _fortune_docs(sources.fortunes_dir, rng("offensive"), budgets["offensive-quote"],
                                         _OFFENSIVE_FORTUNE_FILES),
    }


def _shard_names(n_shards: int) -> list[str]:
    """All JSONL but the second-to-last (Parquet) and the last (plain text)."""
    suffixes = ["jsonl"] * (n_shards - 2) + ["parquet", "txt"]
    return [f"shard-{i:03d}.{suffix}" for i, suffix in enumerate(suffixes)]


def _assign_shards(pool: list[tuple[str, str]], names: list[str]) -> list[list[tuple[str, str]]]:
    """Cut the shuffled pool into near-equal shards; the .txt shard takes single-paragraph texts only
    (evenly spaced among them), so it is short of shards' share only if too few exist."""
    n_shards = len(names)
    sizes = [len(pool) // n_shards + (1 if i < len(pool) % n_shards else 0) for i in range(n_shards)]
    txt_index = n_shards - 1
    eligible = [i for i, item in enumerate(pool) if is_single_paragraph(item[1])]
    # Spread the picks over the whole pool so the other shards keep similar mixes.
    stride = max(1.0, len(eligible) / max(1, sizes[txt_index]))
    picked = {eligible[int(k * stride)] for k in range(min(sizes[txt_index], len(eligible)))}
    txt_members = [item for i, item in enumerate(pool) if i in picked]
    rest = [item for i, item in enumerate(pool) if i not in picked]
    shards, start = [], 0
    for i in range(n_shards):
        if i == txt_index:
            shards.append(txt_members)
            continue
        size = sizes[i] + (sizes[txt_index] - len(txt_members) if i == txt_index - 1 else 0)
        shards.append(rest[start : start + size])
        start += size
    return shards


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    # A sensor watching the directory must never see a half-written shard: write a hidden
    # temporary file, then rename it into place.
    tmp = path.with_name(f".{path.name}.partial")
    write(tmp)
    os.replace(tmp, path)


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    _atomic_write(path, write)


def _write_parquet(path: Path, docs: list[CorpusDocument]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [d.id for d in docs], "text": [d.text for d in docs], "source": [d.source for d in docs]},
                     schema=pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string())]))
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def _write_txt(path: Path, docs: list[CorpusDocument]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text("\n\n".join(d.text for d in docs) + "\n", encoding="utf-8", newline="\n")

    _atomic_write(path, write)


def _txt_ids(name: str, texts: list[str]) -> list[str]:
    """Ids as ingest names a .txt shard's paragraphs: `<file name>:<1-based first line>`."""
    ids, line = [], 1
    for text in texts:
        ids.append(f"{name}:{line}")
        line += text.count("\n") + 2
    return ids


def existing_shards(corpus_dir: Path) -> list[Path]:
    return _sorted_files(p for p in Path(corpus_dir).glob("shard-*") if p.suffix in (".jsonl", ".parquet", ".txt"))


def balanced_probe(docs: list[CorpusDocument], seed: int, informative: Sequence[str], junk: Sequence[str],
                   per_label: int) -> list[dict]:
    """`per_label` documents per label, spread evenly over that label's sources; only texts
    that occur once, so a duplicate cannot be counted twice."""
    hash_counts = Counter(content_hash(d.text) for d in docs)
    unique = [d for d in docs if hash_counts[content_hash(d.text)] == 1]
    rng = random.Random(f"{seed}:probe")
    rows = []
    for label, source_names in ((1, informative), (0, junk)):
        quota = [per_label // len(source_names) + (1 if i < per_label % len(source_names) else 0)
                 for i in range(len(source_names))]
        for source, k in zip(source_names, quota):
            members = [d for d in unique if d.source == source]
            for d in rng.sample(members, min(k, len(members))):
                rows.append({"id": d.id, "text": d.text, "source": d.source, "label": label})
    return sorted(rows, key=lambda r: r["id"])


def build_default_corpus(corpus_dir: Path, eval_dir: Path, n_shards: int = 6, seed: int = 0, *,
                         sources: CorpusSources | None = None, overwrite: bool = False) -> dict:
    """Write the corpus shards, the high-quality eval set, the judge probe set and a manifest.

    Returns the manifest (also written to eval_dir/corpus_manifest.json). Raises
    CorpusSourceMissing when a source package is not installed, FileExistsError when
    corpus_dir already has shards and overwrite is False.
    """
    if n_shards < 3:
        raise ValueError(f"n_shards must be at least 3 (JSONL, Parquet and text shards), got {n_shards}")
    corpus_dir, eval_dir = Path(corpus_dir), Path(eval_dir)
    sources = sources or CorpusSources()
    stale = existing_shards(corpus_dir) if corpus_dir.exists() else []
    if stale and not overwrite:
        raise FileExistsError(f"{corpus_dir} already holds {len(stale)} shard files (pass overwrite=True to rebuild)")

    per_source = collect_source_documents(sources, seed)
    hq = high_quality_docs(sources.perl_pod_dir(), random.Random(f"{seed}:high-quality"))

    pool = [(source, text) for source in SOURCE_BUDGETS for text in per_source[source]]
    rng = random.Random(f"{seed}:duplicates")
    duplicates = [pool[i] for i in sorted(rng.sample(range(len(pool)), min(N_EXACT_DUPLICATES, len(pool))))]
    pool += duplicates
    random.Random(f"{seed}:shuffle").shuffle(pool)

    names = _shard_names(n_shards)
    shard_docs: list[list[CorpusDocument]] = []
    for name, members in zip(names, _assign_shards(pool, names)):
        stem = name.rsplit(".", 1)[0]
        if name.endswith(".txt"):
            ids = _txt_ids(name, [text for _, text in members])
        else:
            ids = [f"{stem}-{i:05d}" for i in range(len(members))]
        shard_docs.append([CorpusDocument(doc_id, text, source) for doc_id, (source, text) in zip(ids, members)])

    corpus_dir.mkdir(parents=True, exist_ok=True)
    eval_dir.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.unlink()
    for name, docs in zip(names, shard_docs):
        path = corpus_dir / name
        if name.endswith(".jsonl"):
            _write_jsonl(path, ({"id": d.id, "text": d.text, "source": d.source} for d in docs))
        elif name.endswith(".parquet"):
            _write_parquet(path, docs)
        else:
            _write_txt(path, docs)

    all_docs = [d for docs in shard_docs for d in docs]
    hq_rows = [{"id": f"hq-{i:05d}", "text": text, "source": source} for i, (source, text) in enumerate(hq)]
    _write_jsonl(eval_dir / "high_quality.jsonl", hq_rows)
    probe = balanced_probe(all_docs, seed, INFORMATIVE_SOURCES, JUNK_SOURCES, PROBE_PER_LABEL)
    _write_jsonl(eval_dir / "judge_probe.jsonl", probe)

    hashes = Counter(content_hash(d.text) for d in all_docs)
    manifest = {
        "seed": seed,
        "n_shards": n_shards,
        "total_documents": len(all_docs),
        "distinct_texts": len(hashes),
        "exact_duplicates_added": len(duplicates),
        "shards": [
            {"file": name, "format": name.rsplit(".", 1)[1], "documents": len(docs),
             "sources": dict(sorted(Counter(d.source for d in docs).items()))}
            for name, docs in zip(names, shard_docs)
        ],
        "sources": {source: sum(1 for d in all_docs if d.source == source) for source in SOURCE_BUDGETS},
        "categories": {"informative": list(INFORMATIVE_SOURCES), "junk": list(JUNK_SOURCES),
                       "unlabelled": sorted(set(SOURCE_BUDGETS) - set(INFORMATIVE_SOURCES) - set(JUNK_SOURCES))},
        "high_quality": {"file": "high_quality.jsonl", "documents": len(hq_rows),
                         "sources": dict(sorted(Counter(r["source"] for r in hq_rows).items()))},
        "judge_probe": {"file": "judge_probe.jsonl", "documents": len(probe),
                        "labels": {str(k): v for k, v in sorted(Counter(r["label"] for r in probe).items())},
                        "sources": dict(sorted(Counter(r["source"] for r in probe).items()))},
        "python": sys.version.split()[0],
    }
    _atomic_write(eval_dir / "corpus_manifest.json",
                  lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8"))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build dselect's default corpus from installed Debian text.")
    parser.add_argument("--corpus-dir", type=Path, default=Path("data/corpus"))
    parser.add_argument("--eval-dir", type=Path, default=Path("data/eval"))
    parser.add_argument("--n-shards", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if shards already exist")
    args = parser.parse_args(argv)

    existing = existing_shards(args.corpus_dir) if args.corpus_dir.exists() else []
    if existing and not args.force:
        print(f"{args.corpus_dir} already holds {len(existing)} shard files; skipping (use --force to rebuild)")
        return 0
    try:
        manifest = build_default_corpus(args.corpus_dir, args.eval_dir, args.n_shards, args.seed, overwrite=True)
    except CorpusSourceMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for shard in manifest["shards"]:
        print(f"{shard['file']}: {shard['documents']} documents")
    for source, count in manifest["sources"].items():
        print(f"  {source}: {count}")
    print(f"total: {manifest['total_documents']} documents ({manifest['distinct_texts']} distinct texts)")
    print(f"high_quality: {manifest['high_quality']['documents']} documents -> {args.eval_dir / 'high_quality.jsonl'}")
    print(f"judge_probe: {manifest['judge_probe']['documents']} documents, labels {manifest['judge_probe']['labels']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

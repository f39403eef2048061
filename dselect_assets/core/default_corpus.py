"""The default corpus lives in `dselect_assets.corpus` (sources, archives, build); this module
keeps the old import path and `python -m dselect_assets.core.default_corpus` working.

`DictDatabase` is the dictd reader of the earlier technical corpus (FOLDOC, Jargon File,
GCIDE), kept in `dselect_assets.corpus.technical` as an optional corpus for benchmarks.
"""

from dselect_assets.corpus.archives import CorpusSourceMissing
from dselect_assets.corpus.build import build_default_corpus, existing_shards, main
from dselect_assets.corpus.technical import DictDatabase

__all__ = ["CorpusSourceMissing", "DictDatabase", "build_default_corpus", "existing_shards", "main"]

if __name__ == "__main__":
    raise SystemExit(main())

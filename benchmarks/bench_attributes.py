"""Embedding attribute files: read speed of a Parquet FIXED_SIZE_LIST<float32> column (zstd) against
an .npy beside a Parquet file of hashes (what `attributes.write_vectors` writes), for the two
reads dselect makes.

- whole: every vector of a shard file, in file order (k-means, sketches of a whole shard);
- wanted: the vectors of a random half of the shard's documents, in a given order (what
  `attributes.read_vectors` does for a sketch of the texts a shard owns, or a selection).

Both layouts are written and read in the same process, interleaved, best of --repeats; the
ratio is what to read, not the seconds (the machine is shared).

    python benchmarks/bench_attributes.py [--docs 100000] [--dim 384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dselect_assets.store import attributes


PRODUCER = "embedding:0000000000000000"


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.docs)]
    vectors = rng.standard_normal((args.docs, args.dim), dtype=np.float32)
    wanted = [hashes[i] for i in rng.permutation(args.docs)[: args.docs // 2]]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The alternative: the vectors as a FIXED_SIZE_LIST<float32> column beside the hashes.
        parquet_file = root / "fixed_size_list.parquet"
        flat = pa.array(vectors.reshape(-1), pa.float32())
        pq.write_table(pa.table({"hash": attributes.hash_keys(hashes),
                                 "vector": pa.FixedSizeListArray.from_arrays(flat, args.dim)}),
                       parquet_file, compression="zstd")
        # What dselect writes: an .npy beside a Parquet file of hashes (float32 here, as the column:
        # the layouts are compared, not the precisions; dselect stores float16, half the bytes).
        hash_file = attributes.write_vectors(root, PRODUCER, "s", hashes, vectors, np.float32)

        def parquet_block():
            column = pq.read_table(parquet_file, columns=["vector"])["vector"].combine_chunks()
            return column.flatten().to_numpy().reshape(len(column), -1)

        def parquet_whole():
            return parquet_block()

        def npy_whole():
            return np.load(hash_file.with_suffix(".npy"))

        def parquet_wanted():
            with duckdb.connect() as con:
                con.register("w", pa.table({"content_hash": pa.array(wanted)}))
                found = con.sql(f"SELECT w.position, a.file_row_number AS row FROM"
                                f" (SELECT (row_number() OVER () - 1) AS position, content_hash FROM w) w"
                                f" JOIN read_parquet(?, file_row_number = true) a"
                                f" ON a.hash = {attributes.key_sql('w.content_hash')}",
                                params=[str(parquet_file)]).to_arrow_table()
            out = np.empty((len(wanted), args.dim), dtype=np.float32)
            out[found["position"].to_numpy()] = parquet_block()[found["row"].to_numpy()]
            return out

        def npy_wanted():
            with duckdb.connect() as con:
                return attributes.read_vectors(con, root, PRODUCER, wanted)

        results = {}
        for name, fn in (("parquet_whole", parquet_whole), ("npy_whole", npy_whole),
                         ("parquet_wanted", parquet_wanted), ("npy_wanted", npy_wanted)) * 2:
            seconds, _ = best(fn, args.repeats)
            results[name] = min(seconds, results.get(name, float("inf")))
        assert np.array_equal(npy_wanted(), parquet_wanted())
        sizes = {"parquet_bytes": parquet_file.stat().st_size,
                 "npy_plus_hashes_bytes": hash_file.with_suffix(".npy").stat().st_size + hash_file.stat().st_size}
    for name, seconds in results.items():
        print(f"{name} docs={args.docs} dim={args.dim} seconds={seconds:.4f}")
    print(f"ratio_whole parquet/npy={results['parquet_whole'] / results['npy_whole']:.2f}")
    print(f"ratio_wanted parquet/npy={results['parquet_wanted'] / results['npy_wanted']:.2f}")
    for name, size in sizes.items():
        print(f"{name}={size}")


if __name__ == "__main__":
    main()

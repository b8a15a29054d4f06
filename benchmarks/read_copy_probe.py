"""How fast can a group of rows leave the page cache? pread vs mmap, one process.

The random-access reader copies each group (256 rows of 64x64 float32, read as
64 blocks of 4 rows at random positions) out of the page cache with `preadv`
and then checks every record's CRC32C. This probe times three ways of doing
that same work on one shard of `read_throughput.py`'s 64x64 dataset (built by
it first), all in the page cache:

  reader        GroupReader.read: preadv scatter reads + CRC, as shipped
  mmap          the shard mapped once, rows copied out with numpy, then CRC;
                the mapping stays, so the shard's pages count in the RSS
  mmap+dontneed the same, then madvise(MADV_DONTNEED) on the rows read, as a
                reader with flat RSS would have to

    .venv/bin/python benchmarks/read_copy_probe.py   # prints a markdown table
"""

from __future__ import annotations

import glob
import mmap
import os
import pathlib
import sys
import time

import numpy as np

GROUPS = 300
BLOCK_ROWS, BLOCKS = 4, 64
WORK = pathlib.Path("/tmp/tfds_bigarrays_bench/image/ours/ours_image/1.0.0")


def main() -> None:
    from tfds_bigarrays import _native, _rowread
    from tfds_bigarrays._layout import read_layout

    shards = sorted(glob.glob(str(WORK / "*-train.tfrecord-*")))
    if not shards:
        sys.exit(f"No shards under {WORK}: run benchmarks/read_throughput.py first.")
    codec = read_layout(WORK).codec()
    frame = codec.frame_bytes
    path = shards[0]
    size = os.path.getsize(path)
    rows = size // frame
    reader = _rowread.GroupReader(
        _rowread.RowSpace.from_reads([(path, 0, rows, rows)]),
        codec,
        block_rows=BLOCK_ROWS,
        verify=True,
    )
    fd = os.open(path, os.O_RDONLY)
    mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    matrix = np.frombuffer(mapped, np.uint8).reshape(rows, frame)
    out = np.empty((BLOCK_ROWS * BLOCKS, frame), np.uint8)
    crcs = np.empty(len(out), np.uint32)
    page = mmap.PAGESIZE

    def with_reader(blocks: np.ndarray) -> None:
        reader.read(blocks, np.zeros(0, np.int64))

    def with_mmap(blocks: np.ndarray) -> None:
        index = (blocks[:, None] * BLOCK_ROWS + np.arange(BLOCK_ROWS)).ravel()
        np.take(matrix, index, axis=0, out=out, mode="clip")
        _native.crc32c_rows(out, crcs, frame, 12, codec.record_bytes)

    def with_mmap_dontneed(blocks: np.ndarray) -> None:
        with_mmap(blocks)
        for b in blocks.tolist():
            lo = b * BLOCK_ROWS * frame // page * page
            hi = min(size, (b + 1) * BLOCK_ROWS * frame)
            mapped.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    os.pread(fd, size, 0)  # into the page cache
    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {}
    for _ in range(2):  # two turns each, alternating
        for name, fn in (
            ("reader (preadv + CRC, as shipped)", with_reader),
            ("mmap, mapping kept (RSS grows)", with_mmap),
            ("mmap + MADV_DONTNEED (flat RSS)", with_mmap_dontneed),
        ):
            start = time.perf_counter()
            for _ in range(GROUPS):
                fn(rng.integers(0, rows // BLOCK_ROWS, BLOCKS))
            results.setdefault(name, []).append((time.perf_counter() - start) / GROUPS)
    print(
        f"One group = {BLOCKS} random blocks of {BLOCK_ROWS} rows of {frame} bytes "
        f"({BLOCKS * BLOCK_ROWS * frame / 2**20:.1f} MiB), page cache warm, {GROUPS} groups "
        "per turn, best of two turns; command: `.venv/bin/python benchmarks/read_copy_probe.py`.\n"
    )
    print("| copy out + CRC32C | ms per group |\n|---|---:|")
    for name, times in results.items():
        print(f"| {name} | {min(times) * 1e3:.3f} |")


if __name__ == "__main__":
    main()

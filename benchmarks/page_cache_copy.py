"""The limits in the page cache: how fast one core copies a cached file out.

A reader that gathers rows copies them out of the page cache (`pread`): how
fast that copy goes depends on the pages the cache holds, which depend on how
the file got there. Rows, all on one core, side by side in one run:

  memcpy              np.copyto of 256 MiB (glibc uses non-temporal stores):
                      read_throughput's reference for "of memcpy"
  memcpy, 64 KiB      the same bytes in 64 KiB copies
  pread, 4 KiB pages  the file cached by random 128 KiB preads announced by
                      POSIX_FADV_WILLNEED (the core's cold reads without
                      fill_pieces)
  pread, huge pages   the file cached by 2 MiB huge-page faults in a shuffled
                      order (fill_pieces)
  pread, read in order  the file cached by one front-to-back read
  CRC32C              the core's CRC of 256 KiB pieces held in the L2 cache

Each pread row copies the whole file in 1 MiB preads at shuffled offsets into
a 16 MiB buffer (best of 3 passes), and gives how fast filling the cache read
the disk (the file's pages are dropped first; no root needed).

    .venv/bin/python benchmarks/page_cache_copy.py     # writes docs/page_cache_copy.md
"""

from __future__ import annotations

import argparse
import mmap
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import evict_files, huge_cached_bytes, memcpy_bytes_per_s, write_report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
MiB = 1 << 20
PIECE = 2 * MiB


def fill_random_preads(path: pathlib.Path, size: int, rng) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(128 << 10)
        for off in rng.permutation(size // len(buf)) * len(buf):
            os.posix_fadvise(fd, int(off), len(buf), os.POSIX_FADV_WILLNEED)
            os.preadv(fd, [buf], int(off))
    finally:
        os.close(fd)


def fill_huge_pages(path: pathlib.Path, size: int, rng) -> None:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        m.madvise(mmap.MADV_RANDOM)  # else a fault reads the next piece too
        m.madvise(mmap.MADV_HUGEPAGE)
        for piece in rng.permutation(-(-size // PIECE)):
            m[int(piece) * PIECE]  # one fault reads the piece as one huge folio


def fill_in_order(path: pathlib.Path, size: int, rng) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * MiB)
        while f.readinto(buf):
            pass


def pread_bytes_per_s(path: pathlib.Path, size: int, rng, *, passes: int = 3) -> float:
    """One core copying the cached file out in shuffled 1 MiB preads."""
    buf = np.empty(16 * MiB, np.uint8)
    views = [memoryview(buf[i : i + MiB]) for i in range(0, len(buf), MiB)]
    offsets = [int(o) for o in rng.permutation(size // MiB) * MiB]
    fd = os.open(path, os.O_RDONLY)
    best = float("inf")
    try:
        for _ in range(passes):
            start = time.perf_counter()
            for k, off in enumerate(offsets):
                os.preadv(fd, [views[k % len(views)]], off)
            best = min(best, time.perf_counter() - start)
    finally:
        os.close(fd)
    return len(offsets) * MiB / best


def memcpy_chunked_bytes_per_s(nbytes: int = 256 * MiB, chunk: int = 64 << 10) -> float:
    src = np.ones(nbytes, np.uint8)
    dst = np.empty(16 * MiB, np.uint8)
    best = float("inf")
    for _ in range(4):
        start = time.perf_counter()
        for i in range(0, nbytes, chunk):
            j = i % len(dst)
            np.copyto(dst[j : j + chunk], src[i : i + chunk])
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def crc_bytes_per_s(nbytes: int = 256 << 10, repeats: int = 4000) -> float:
    from tfds_bigarrays._read import core

    data = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    core.crc32c(data)
    start = time.perf_counter()
    for _ in range(repeats):
        core.crc32c(data)
    return nbytes * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_bench/page_cache")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the file read")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "data.bin"
    size = int(args.gb * 1e9) // PIECE * PIECE
    if not path.exists() or path.stat().st_size != size:
        rng = np.random.default_rng(1)
        with open(path, "wb") as f:
            for _ in range(size // (64 * MiB)):
                f.write(rng.integers(0, 255, 64 * MiB, dtype=np.uint8).tobytes())
            f.write(bytes(size % (64 * MiB)))
    memcpy = memcpy_bytes_per_s()
    rows = [
        ("memcpy", memcpy, None, None),
        ("memcpy, 64 KiB copies", memcpy_chunked_bytes_per_s(), None, None),
    ]
    fills = {
        "pread, 4 KiB pages (random preads after WILLNEED)": fill_random_preads,
        "pread, huge pages (2 MiB faults, shuffled; fill_pieces)": fill_huge_pages,
        "pread, read in order": fill_in_order,
    }
    for name, fill in fills.items():
        rng = np.random.default_rng(7)
        evict_files([path])
        start = time.perf_counter()
        fill(path, size, rng)
        fill_rate = size / (time.perf_counter() - start)
        huge = huge_cached_bytes(path) / size
        rows.append((name, pread_bytes_per_s(path, size, rng), fill_rate, huge))
        print(
            f"{name}: {rows[-1][1] / 1e9:.2f} GB/s, filled at {fill_rate / 1e9:.2f} GB/s",
            flush=True,
        )
    crc = crc_bytes_per_s()
    rows.append(("CRC32C, 256 KiB in L2 (the core)", crc, None, None))
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on one core, a {size / 1e9:.2f} GB file; "
        "command: `.venv/bin/python benchmarks/page_cache_copy.py`. *Time per byte / memcpy*: "
        "the row's time per byte on one core over memcpy's. Read by "
        "[read_throughput](read_benchmark.md)'s CPU / memcpy column: gathering rows costs at "
        "least one pread copy and one CRC pass per byte.",
        "",
        "| copy | GB/s | time per byte / memcpy | filling the cache read the disk at | of it in huge pages |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate, fill_rate, huge in rows:
        fill_cell = f"{fill_rate / 1e9:.2f} GB/s" if fill_rate else ""
        huge_cell = f"{huge:.0%}" if huge is not None else ""
        lines.append(
            f"| {name} | {rate / 1e9:.2f} | {memcpy / rate:.2f}x | {fill_cell} | {huge_cell} |"
        )
    best_pread = max(r[1] for r in rows if r[0].startswith("pread"))
    lines += [
        "",
        f"A pread copy and a CRC pass per byte, at best: {memcpy / best_pread + memcpy / crc:.2f}x "
        "memcpy's time per byte, before TensorFlow's own work.",
    ]
    text = "\n".join(lines) + "\n"
    write_report(args.out, "page_cache_copy.md", text)


if __name__ == "__main__":
    main()

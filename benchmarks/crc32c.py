"""CRC32C implementations side by side: what each costs per record.

The read core checks every record's CRC32C right after reading it. This
measures that check inside the core (`core.decode` of frames in memory, with
CRCs minus without, so the copy and the other checks cancel out) at each of
its levels (0: a table, 1: four streams of the CRC32 instruction, 2: AVX-512
folding), against google-crc32c (Google's crc32c library, which the format
core uses to write frames) called per record from Python, minus the cost of
the same loop doing nothing.

    .venv/bin/python benchmarks/crc32c.py      # writes docs/crc32c_benchmark.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import google_crc32c
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import write_report  # noqa: E402

from tfds_bigarrays._format.records import RecordCodec  # noqa: E402
from tfds_bigarrays._format.spec import FeatureSpec  # noqa: E402
from tfds_bigarrays._read import core  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROWS = {"128 B": (32,), "16 KiB": (64, 64), "64 KiB": (128, 128)}
TOTAL_BYTES = 64 << 20


def _best(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(shape: tuple[int, ...]) -> dict[str, float]:
    codec = RecordCodec({"x": FeatureSpec(dtype=np.float32, shape=shape)})
    n = max(64, TOTAL_BYTES // codec.frame_bytes)
    rows = np.random.default_rng(0).standard_normal((n, *shape), dtype=np.float32)
    framed = codec.frame(codec.encode({"x": rows}))
    out = {}
    best = core.crc_level()
    try:
        core.set_crc_level(0)
        base = _best(lambda: core.decode(codec, [framed], ["bench"], verify=False))
        for level in range(best + 1):
            core.set_crc_level(level)
            t = _best(lambda: core.decode(codec, [framed], ["bench"], verify=True))
            out[f"core level {level}"] = (t - base) / n * 1e6
    finally:
        core.set_crc_level(best)
    frame = codec.frame_bytes
    records = [framed[i * frame + 12 : (i + 1) * frame - 4] for i in range(n)]
    empty = _best(lambda: [len(r) for r in records], repeats=3)
    t = _best(lambda: [google_crc32c.value(r) for r in records], repeats=3)
    out["google-crc32c"] = (t - empty) / n * 1e6
    out["record_bytes"] = codec.record_bytes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    names = ["core level 0", "core level 1", "core level 2", "google-crc32c"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: `.venv/bin/python benchmarks/crc32c.py`. "
        f"Microseconds of CRC32C per record (best of 7 passes over {TOTAL_BYTES >> 20} MiB of "
        f"records); this CPU's best core level is {core.crc_level()} (0 table, 1 CRC32 "
        "instruction x4 streams, 2 AVX-512 folding).",
        "",
        "| record | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, shape in ROWS.items():
        r = measure(shape)
        cells = [f"{r[k]:.3f}" if k in r else "n/a" for k in names]
        lines.append(f"| {label} ({r['record_bytes']} bytes) | " + " | ".join(cells) + " |")
    write_report(args.docs, "crc32c_benchmark.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

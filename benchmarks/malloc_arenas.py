"""Peak RSS of reading with glibc's default malloc arenas vs MALLOC_ARENA_MAX=2.

tf.data runs many threads; glibc gives threads their own malloc arenas and
keeps freed memory in them, so a reader's peak RSS carries allocator slack
beyond its buffers. Same contenders and rows (64x64 float32, 20,000 rows) as
`read_throughput.py`, each in a fresh process, with and without the setting.

    .venv/bin/python benchmarks/malloc_arenas.py   # writes docs/malloc_arenas.md
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import write_report  # noqa: E402
from read_throughput import HERE as READ_SCRIPT  # noqa: E402
from read_throughput import measure, prepare  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_bench")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    work = pathlib.Path(args.workdir)
    prepare(work, "image", 20_000, stock=False)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: "
        "`.venv/bin/python benchmarks/malloc_arenas.py`. Rows of 64x64 float32, batch 256, "
        f"2 epochs, each run a fresh process of `{READ_SCRIPT.name}`.",
        "",
        "| contender | malloc arenas | examples/s | peak RSS |",
        "|---|---|---:|---:|",
    ]
    for contender in ("seed", "ours"):
        for arenas in (None, "2"):
            if arenas is None:
                os.environ.pop("MALLOC_ARENA_MAX", None)
            else:
                os.environ["MALLOC_ARENA_MAX"] = arenas
            r = measure(contender, "image", work, epochs=2)
            label = "glibc default" if arenas is None else f"MALLOC_ARENA_MAX={arenas}"
            lines.append(
                f"| {contender} | {label} | {r['examples_per_s']:,.0f} | "
                f"{r['peak_rss'] / 1e9:.2f} GB |"
            )
            print(lines[-1], flush=True)
    os.environ.pop("MALLOC_ARENA_MAX", None)
    write_report(args.docs, "malloc_arenas.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

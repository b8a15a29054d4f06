"""What a per-record placement stamp would cost the read path, measured.

Records in the wrong place (two records or two shards swapped, a shard of
another dataset with the same widths) read back as valid data: every record
is well formed. One way to catch them while reading is a stamp in every
record (the split row index and a dataset tag, in a field stock TFDS
ignores), checked by the read core. This measures the price of such a stamp
without building it: the same rows read with and without one more 8-byte
feature per record (an int64 that the pipeline reads, CRCs and drops, as it
would a stamp), side by side in fresh processes, rounds alternating. The
decision it informs is in docs/reliability.md.

    .venv/bin/python benchmarks/stamp_cost.py      # writes docs/stamp_cost.md
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import emit, measure_epochs, peak_rss_bytes, run_child, write_report  # noqa: E402

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
KINDS = {"32 float32": ((32,), 1_000_000), "64x64 float32": ((64, 64), 20_000)}


def prepare(work: pathlib.Path, label: str) -> None:
    import tfds_bigarrays as tb

    shape, rows = KINDS[label]
    done = work / f"{'x'.join(map(str, shape))}.done"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, *shape), dtype=np.float32)
    y = (x.reshape(rows, -1)[:, 0] > 0).astype(np.float32)
    for variant, extra in (("plain", {}), ("stamped", {"stamp": np.arange(rows, dtype=np.int64)})):
        tb.build(
            "stamp_bench",
            data_dir=work / variant / "x".join(map(str, shape)),
            splits={"train": {"x": x, "y": y, **extra}},
            supervised_keys=("x", "y"),
            overwrite=True,
        )
    done.write_text("ok")


def child(args) -> None:
    import tensorflow_datasets as tfds

    import tfds_bigarrays  # noqa: F401

    ds = tfds.load(
        "stamp_bench",
        data_dir=args.src,
        split="train",
        shuffle_files=True,
        batch_size=256,
        as_supervised=True,
    )
    result = measure_epochs(ds, min_epochs=2, min_seconds=args.seconds, warmup_batches=20)
    emit({**result, "peak_rss": peak_rss_bytes()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--src")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_stamp")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = pathlib.Path(args.workdir)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: `.venv/bin/python "
        f"benchmarks/stamp_cost.py`. Shuffled epochs, batch 256, random access; {args.rounds} "
        "alternating rounds in fresh processes, medians; 'stamped' adds one 8-byte feature "
        "(plus its Example framing) to every record.",
        "",
        "| rows | plain examples/s | stamped examples/s | stamped / plain | each round |",
        "|---|---:|---:|---:|---|",
    ]
    for label, (shape, _) in KINDS.items():
        prepare(work, label)
        sub = "x".join(map(str, shape))
        runs: dict[str, list[float]] = {"plain": [], "stamped": []}
        for _ in range(args.rounds):
            for variant in runs:
                r = run_child(
                    str(HERE), "--src", str(work / variant / sub), "--seconds", str(args.seconds)
                )
                runs[variant].append(r["examples_per_s"])
        plain, stamped = statistics.median(runs["plain"]), statistics.median(runs["stamped"])
        ratios = ", ".join(
            f"{s / p:.3f}" for p, s in zip(runs["plain"], runs["stamped"], strict=True)
        )
        lines.append(
            f"| {label} | {plain:,.0f} | {stamped:,.0f} | {stamped / plain:.3f} | {ratios} |"
        )
        print(lines[-1], flush=True)
    write_report(args.docs, "stamp_cost.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

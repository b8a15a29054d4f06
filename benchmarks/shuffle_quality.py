"""Shuffle quality against memory: how random is an epoch, for what budget?

For N rows whose identity we know, reads two epochs through `tfds.load(...,
shuffle_files=True)` and reports, per configuration:

  epoch corr   correlation of an example's position in epoch 1 and epoch 2
               (0 for independent permutations)
  stored corr  correlation of position in the epoch with position on disk
               (0 when the epoch forgets the stored order)
  batch spread std of the stored positions inside a batch, over the std of a
               uniform sample (1.0 for a perfect shuffle, ~0 for none)
  neighbours   share of rows stored next to each other that land in the same
               batch (batch/N for a perfect shuffle, 1.0 for none)

Configurations: array-order and permuted writes (`--permute`), read with
random access (the default for local files: a full permutation of blocks,
no shuffle buffer, so the budget does not change the order) and with
sequential access (`access="sequential"`: interleaved shards and a shuffle
buffer bounded by the budget) at several memory budgets; plus tf.data
shuffle(3000) and a full in-memory shuffle(N) as references.

Then per row size, from 32 B to 128 KiB (`--sizes`): the default read of an
array-order build against tf.data's shuffle(3000) over the same rows, with
the uniform share (batch / N) beside them. Bigger rows come in fewer rows
(the datasets stay near 300-700 MB), so their uniform share is larger.

    .venv/bin/python benchmarks/shuffle_quality.py   # writes docs/shuffle_quality.md
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import write_report  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MiB = 1 << 20
BATCH = 256


def metrics(epochs: list[np.ndarray], n: int) -> dict:
    pos = [np.empty(n, np.int64) for _ in epochs]
    for p, order in zip(pos, epochs, strict=True):
        assert sorted(order.tolist()) == list(range(n)), "not exactly once"
        p[order] = np.arange(n)
    usable = n // BATCH * BATCH
    spread = epochs[0][:usable].reshape(-1, BATCH).std(axis=1).mean() / (n / np.sqrt(12))
    batch_of = pos[0] // BATCH
    return {
        "neighbours": float(np.mean(batch_of[1:] == batch_of[:-1])),
        "epoch_corr": float(np.corrcoef(pos[0], pos[1])[0, 1]),
        "stored_corr": float(np.corrcoef(np.arange(n), pos[0])[0, 1]),
        "batch_spread": float(spread),
    }


def two_epochs(ds) -> tuple[list[np.ndarray], float]:
    import tensorflow_datasets as tfds

    out = []
    start = time.perf_counter()
    for _ in range(2):
        out.append(
            np.concatenate([b["i"] if isinstance(b, dict) else b for b in tfds.as_numpy(ds)])
        )
    return out, 2 * len(out[0]) / (time.perf_counter() - start)


# Row bytes -> rows read (about 300-700 MB of rows, and at least 5,000).
SIZES = {
    32: 1_000_000,
    128: 1_000_000,
    512: 500_000,
    3 * 1024: 100_000,
    16 * 1024: 20_000,
    64 * 1024: 10_000,
    128 * 1024: 5_000,
}


def by_row_size(work: pathlib.Path, sizes: list[int]) -> list[str]:
    """The default read against tf.data's shuffle(3000), per row size."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    import tfds_bigarrays as tb
    from tfds_bigarrays._read.plan import plan_groups

    lines = [
        "",
        f"Per row size: an array-order build (uint8 rows plus the int64 index), read by "
        f"`tfds.load(..., shuffle_files=True, batch_size={BATCH})` with the defaults, against "
        f"tf.data's `shuffle(3000).batch({BATCH})` over the same rows in memory.",
        "",
        "| row bytes | rows | block rows, window groups | stored neighbours in one batch, ours "
        "| tf.data shuffle(3000) | uniform (batch / rows) | epoch-to-epoch corr, ours "
        "| corr with stored order, ours | batch spread, ours |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        n = SIZES[size]
        i = np.arange(n, dtype=np.int64)
        x = np.random.default_rng(size).integers(0, 256, (n, size - 8), dtype=np.uint8)
        name = f"rows{size}"
        builder = tb.build(name, data_dir=work, splits={"train": {"i": i, "x": x}})
        frame = builder.info.splits["train"].num_bytes // n
        plan = plan_groups(frame_bytes=frame, num_examples=n, batch_rows=BATCH)
        ds = tfds.load(name, data_dir=work, split="train", shuffle_files=True, batch_size=BATCH)
        ours = metrics(two_epochs(ds)[0], n)
        ref = tf.data.Dataset.from_tensor_slices({"i": i, "x": x}).shuffle(3000).batch(BATCH)
        theirs = metrics(two_epochs(ref)[0], n)
        del x, ref
        row = (
            f"| {size:,} | {n:,} | {plan.block_rows}, {plan.window_groups} | "
            f"{ours['neighbours']:.4f} | {theirs['neighbours']:.4f} | {BATCH / n:.4f} | "
            f"{ours['epoch_corr']:.3f} | {ours['stored_corr']:.3f} | {ours['batch_spread']:.3f} |"
        )
        print(row, flush=True)
        lines.append(row)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help=f"comma-separated row bytes for the per-size table, of {','.join(map(str, SIZES))}",
    )
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",") if v]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes {unknown}: use some of {','.join(map(str, SIZES))}")
    # The datasets take GBs at the biggest row sizes: they go with the run.
    with tempfile.TemporaryDirectory(prefix="shuffle_quality_") as work:
        measure(args, sizes, pathlib.Path(work))


def measure(args: argparse.Namespace, sizes: list[int], work: pathlib.Path) -> None:
    """Measures every configuration on datasets built under `work`; writes the report."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    import tfds_bigarrays as tb

    n = args.rows
    # Rows of 32 float32 plus their index: the small-row case, where blocks
    # hold the most rows and shuffling is hardest.
    i = np.arange(n, dtype=np.int64)
    x = np.zeros((n, 32), np.float32)
    tb.build("plain", data_dir=work, splits={"train": {"i": i, "x": x}})
    tb.build("permuted", data_dir=work, splits={"train": {"i": i, "x": x}}, permute_seed=1)
    # Stored position of each index in the permuted dataset, to measure
    # against the storage order (not the array order).
    perm_store = np.concatenate(
        [
            b["i"]
            for b in tfds.as_numpy(
                tfds.load("permuted", data_dir=work, split="train", batch_size=4096)
            )
        ]
    )
    to_stored = np.empty(n, np.int64)
    to_stored[perm_store] = np.arange(n)

    rows = []
    configs = [("random", 16 * MiB), ("random", 256 * MiB)] + [
        ("sequential", budget) for budget in (16 * MiB, 64 * MiB, 256 * MiB)
    ]
    for name in ("plain", "permuted"):
        for access, budget in configs:
            with tb.read_options(memory_budget=budget, access=access):
                ds = tfds.load(
                    name, data_dir=work, split="train", shuffle_files=True, batch_size=BATCH
                )
            epochs, rate = two_epochs(ds)
            if name == "permuted":
                # Against array order (what the user cares about) ...
                m_array = metrics(epochs, n)
                epochs = [to_stored[e] for e in epochs]
                m = metrics(epochs, n)
                m["array_corr"] = m_array["stored_corr"]
            else:
                m = metrics(epochs, n)
                m["array_corr"] = m["stored_corr"]
            m.update(
                config=f"{'permuted write' if name == 'permuted' else 'array order'}, "
                f"{access} access, budget {budget // MiB} MiB",
                rate=rate,
            )
            rows.append(m)
            print(m, flush=True)
    for label, buffer in (
        ("tf.data shuffle(3000) in memory", 3000),
        ("tf.data shuffle(N) in memory (reference)", n),
    ):
        ds = tf.data.Dataset.from_tensor_slices({"i": i, "x": x}).shuffle(buffer).batch(BATCH)
        epochs, rate = two_epochs(ds)
        m = metrics(epochs, n)
        m.update(config=label, rate=rate, array_corr=m["stored_corr"])
        rows.append(m)
        print(m, flush=True)

    lines = [
        f"Shuffle quality, {n:,} rows of 32 float32 + an int64 index, batch {BATCH}; command: "
        "`.venv/bin/python benchmarks/shuffle_quality.py`. Measured "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| configuration | epoch-to-epoch corr | corr with stored order | corr with array order "
        f"| batch spread (1 = uniform) | stored neighbours in one batch ({BATCH / n:.4f} = "
        "uniform) | examples/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| {m['config']} | {m['epoch_corr']:.3f} | {m['stored_corr']:.3f} | "
            f"{m['array_corr']:.3f} | {m['batch_spread']:.3f} | {m['neighbours']:.4f} | "
            f"{m['rate']:,.0f} |"
        )
    lines += by_row_size(work, sizes)
    write_report(args.out, "shuffle_quality.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

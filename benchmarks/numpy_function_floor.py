"""The floor of a reader built on tf.numpy_function: what TensorFlow costs alone.

Our random-access reader hands each group of rows to TensorFlow from one
`tf.numpy_function` call. This measures that design with the reading taken
out: the same pipeline shape as `_reader._random_groups` (per-epoch seed,
group index, one numpy_function per 4 MiB group of 256 rows of 64x64
float32, parallel calls, prefetch), whose function returns arrays made in
advance; next to the in-memory contender of read_throughput.py on the same
shapes. Whole epochs, a new iterator per epoch (as Keras does), alternating
rounds in fresh processes. A third contender holds the GIL for 200 us of
Python in each call (about what our reader's bookkeeping takes per group):
if the calls overlapped, that would cost nothing on two cores. It also
checks whether TensorFlow adopts a numpy_function's (64-byte aligned)
output or copies it.

    .venv/bin/python benchmarks/numpy_function_floor.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import emit, measure_epochs, run_child  # noqa: E402

ROWS, SHAPE, BATCH = 20_000, (64, 64), 256


def child(kind: str, seconds: float) -> dict:
    import time

    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).random((ROWS, *SHAPE), dtype=np.float32)
    y = np.zeros(ROWS, np.float32)
    if kind == "in-memory":
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(3000)
        ds = ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)
    else:
        n = ROWS // BATCH
        raw = np.empty(BATCH * x[0].nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        group = raw[start : start + BATCH * x[0].nbytes].view(np.float32).reshape(BATCH, *SHAPE)
        group[:] = x[:BATCH]
        labels = y[:BATCH].copy()

        busy = 200e-6 if kind == "numpy_function+python" else 0.0

        def read(g, s):
            if busy:  # Python that holds the GIL, as a reader's bookkeeping does
                end = time.perf_counter() + busy
                while time.perf_counter() < end:
                    pass
            return group, labels

        def fn(s, g):
            a, b = tf.numpy_function(read, [g, s], [tf.float32, tf.float32], stateful=False)
            return tf.ensure_shape(a, [None, *SHAPE]), tf.ensure_shape(b, [None])

        seeds = (
            tf.data.Dataset.random(seed=1, rerandomize_each_iteration=True)
            .take(1)
            .map(lambda s: tf.fill([n], s))
            .unbatch()
        )
        ds = tf.data.Dataset.zip(seeds, tf.data.Dataset.range(n))
        ds = ds.map(fn, num_parallel_calls=2, deterministic=True).prefetch(1)
        first = next(iter(ds))[0]
        adopted = first.numpy().ctypes.data == group.ctypes.data
    out = {"kind": kind, **measure_epochs(ds, min_epochs=2, min_seconds=seconds)}
    if kind != "in-memory":
        out["output_adopted"] = adopted
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        emit(child(args.child, args.seconds))
        return
    results: dict[str, list[dict]] = {
        "in-memory": [],
        "numpy_function": [],
        "numpy_function+python": [],
    }
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(run_child(__file__, kind, "--seconds", str(args.seconds)))
            r = results[kind][-1]
            print(f"  {kind:22s} {r['examples_per_s']:>10,.0f} ex/s  "
                  f"{r['cpu_us_per_example']:.2f} us CPU/ex", flush=True)  # fmt: skip
    med = {k: sorted(r["examples_per_s"] for r in v)[len(v) // 2] for k, v in results.items()}
    adopted = {r["output_adopted"] for r in results["numpy_function"]}
    print("\nmedian examples/s:")
    for kind, value in med.items():
        print(f"  {kind:22s} {value:>10,.0f}  {value / med['in-memory']:.2f}x in-memory")
    print(f"TensorFlow adopted the numpy_function's aligned output without a copy: {adopted}")


if __name__ == "__main__":
    main()

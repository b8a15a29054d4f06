"""The main job behind `make demo`: arrays on disk -> TFDS dataset -> model.fit.

1. Writes a synthetic, learnable task as .npy files (about --gb GB of
   float32 inputs), chunk by chunk, never holding it in memory.
2. Builds train and validation splits with the `tfds-bigarrays` CLI.
3. In a separate process, trains a small Keras model with
   `model.fit(train, validation_data=val, callbacks=[EarlyStopping(...)])`,
   streaming through `tfds.load`, and reports examples/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

FEATURES = 256
CLASSES = 10
CHUNK = 65536


def write_task(workdir: pathlib.Path, *, rows: int, split: str, seed: int) -> None:
    """x ~ N(0, 1); y = argmax(x @ W) for a fixed W: learnable, not trivial."""
    w = np.random.default_rng(0).normal(size=(FEATURES, CLASSES)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(
        workdir / f"x_{split}.npy", mode="w+", dtype=np.float32, shape=(rows, FEATURES)
    )
    y = np.lib.format.open_memmap(
        workdir / f"y_{split}.npy", mode="w+", dtype=np.int64, shape=(rows,)
    )
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        chunk = rng.normal(size=(stop - start, FEATURES)).astype(np.float32)
        x[start:stop] = chunk
        y[start:stop] = np.argmax(chunk @ w, axis=1)
        x.flush()
    del x, y


def peak_rss_bytes() -> int:
    """Peak RSS of this process (VmHWM; ru_maxrss would include the parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train(data_dir: str, *, batch_size: int, epochs: int) -> dict:
    """Runs in its own process so that its peak RSS is the training's alone."""
    import keras
    import tensorflow_datasets as tfds

    import tfds_bigarrays  # noqa: F401  (routes tfds.load to the fast read path)

    keras.utils.set_random_seed(0)
    load = dict(data_dir=data_dir, as_supervised=True, batch_size=batch_size)
    train_ds = tfds.load("demo_arrays", split="train", shuffle_files=True, **load)
    val_ds = tfds.load("demo_arrays", split="validation", shuffle_files=False, **load)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    import psutil

    rss_before_fit = psutil.Process().memory_info().rss
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        shuffle=False,  # the reader already shuffles; Keras cannot shuffle a tf.data.Dataset
        verbose=2,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=1, min_delta=0.002, restore_best_weights=True
            )
        ],
    )
    seconds = time.perf_counter() - start
    builder = tfds.builder("demo_arrays", data_dir=data_dir)
    n_train = builder.info.splits["train"].num_examples
    n_val = builder.info.splits["validation"].num_examples
    epochs_run = len(history.history["loss"])
    return {
        "epochs": epochs_run,
        "seconds": seconds,
        "examples_per_s": (n_train + n_val) * epochs_run / seconds,
        "val_accuracy": max(history.history["val_accuracy"]),
        "rss_before_fit_bytes": rss_before_fit,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of x_train.npy in GB")
    parser.add_argument("--workdir", default="demo_data")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir).resolve()
    data_dir = workdir / "tfds"

    if args.train_only:
        print(
            "RESULT "
            + json.dumps(train(str(data_dir), batch_size=args.batch_size, epochs=args.epochs))
        )
        return

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    rows = int(args.gb * 1e9 / (FEATURES * 4))
    t0 = time.perf_counter()
    write_task(workdir, rows=rows, split="train", seed=1)
    write_task(workdir, rows=max(1, rows // 10), split="validation", seed=2)
    print(
        f"[1/3] wrote {rows:,} + {rows // 10:,} rows of {FEATURES} float32 "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    cli = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(cli),
            "build",
            "demo_arrays",
            "--data-dir",
            str(data_dir),
            "--split",
            f"train:x={workdir}/x_train.npy,y={workdir}/y_train.npy",
            "--split",
            f"validation:x={workdir}/x_validation.npy,y={workdir}/y_validation.npy",
            "--supervised",
            "x,y",
        ],
        check=True,
        env=env,
    )
    build_s = time.perf_counter() - t0
    print(f"[2/3] built with the CLI in {build_s:.1f} s (including start-up)")

    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--train-only",
            "--workdir",
            str(workdir),
            "--batch-size",
            str(args.batch_size),
            "--epochs",
            str(args.epochs),
        ],
        check=True,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = proc.stdout.splitlines()
    print("\n".join(line for line in lines if not line.startswith("RESULT ")))
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    source_bytes = sum(p.stat().st_size for p in workdir.glob("*.npy"))
    dataset_bytes = sum(p.stat().st_size for p in (data_dir / "demo_arrays").rglob("*tfrecord*"))
    print("[3/3] trained with model.fit streaming through tfds.load\n")
    print("| what | value |\n|---|---|")
    print(f"| source arrays (.npy) | {source_bytes / 1e9:.2f} GB |")
    print(f"| dataset shards | {dataset_bytes / 1e9:.2f} GB |")
    print(f"| epochs (EarlyStopping) | {result['epochs']} |")
    print(f"| training throughput | {result['examples_per_s']:,.0f} examples/s |")
    print(f"| best val accuracy | {result['val_accuracy']:.3f} |")
    print(
        f"| training process RSS before fit (TF, Keras, model) | "
        f"{result['rss_before_fit_bytes'] / 1e9:.2f} GB |"
    )
    print(f"| training process peak RSS | {result['peak_rss_bytes'] / 1e9:.2f} GB |")


if __name__ == "__main__":
    main()

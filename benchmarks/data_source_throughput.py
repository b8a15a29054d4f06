"""Random access without TensorFlow: Grain and PyTorch over our data source.

The same arrays, shuffled, batch 256, each contender in a fresh process,
taking turns over rounds (the table gives medians). "ours" is
`tfds.data_source` of our build; "arrayrecord" is `tfds.data_source` of stock
TFDS's ArrayRecord build of the same arrays (file_format="array_record",
tfds.features.Tensor; tfds_bigarrays not imported).

  grain-loader-*     grain.python.DataLoader(IndexSampler(shuffle=True),
                     [Batch(256)]) with Grain's default ReadOptions
                     (16 threads, a 500-record buffer)
  grain-loader-*-inline  the same with ReadOptions(num_threads=0,
                     prefetch_buffer_size=0): records read in the calling thread
  grain-dataset-*    grain.MapDataset.source(...).shuffle(seed).batch(256),
                     iterated (Grain's default prefetch, per batch)
  torch-ours         torch.utils.data.DataLoader(batch_size=256, shuffle=True):
                     PyTorch's batched fetch (`__getitems__`) and default collate
  torch-ours-stacked DataLoader(sampler=BatchSampler(RandomSampler, 256),
                     batch_size=None): `source[indices]` gives the stacked batch
  torch-mmap         DataLoader(batch_size=256, shuffle=True) over a map-style
                     Dataset indexing np.load(mmap_mode="r"), as one writes it
  tfds-load-ours     tfds.load(shuffle_files=True, batch_size=256,
                     as_supervised=True), our tf.data path

Rows of 16 KiB (64x64 float32) and of 128 B (32 float32), each with a
float32 label. Loaders run in the measuring process (Grain worker_count=0,
PyTorch num_workers=0): this machine has 2 cores, and worker processes add
the same shared-memory hand-off to every contender. The arrays fit in RAM
and are in the page cache; reading from disk is read_throughput.py's. Each
measurement runs for `--seconds` after 10 batches of warm-up, over as many
epochs as fit (each a new shuffle, through a new loader, as in training).

    .venv/bin/python benchmarks/data_source_throughput.py           # writes docs/
    .venv/bin/python benchmarks/data_source_throughput.py --quick
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import (  # noqa: E402
    build_ours,
    emit,
    peak_rss_bytes,
    run_child,
    write_npy_chunked,
    write_report,
)

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
KINDS = {"16KiB": (64, 64), "128B": (32,)}
ROWS = {"16KiB": 60_000, "128B": 600_000}
BATCH = 256
CONTENDERS = (
    "grain-loader-ours",
    "grain-loader-arrayrecord",
    "grain-loader-ours-inline",
    "grain-loader-arrayrecord-inline",
    "grain-dataset-ours",
    "grain-dataset-arrayrecord",
    "torch-ours",
    "torch-ours-stacked",
    "torch-mmap",
    "tfds-load-ours",
)
PAIRS = {  # ratio columns: contender over its ArrayRecord twin
    "grain-loader-ours": "grain-loader-arrayrecord",
    "grain-loader-ours-inline": "grain-loader-arrayrecord-inline",
    "grain-dataset-ours": "grain-dataset-arrayrecord",
}


def prepare(work: pathlib.Path, kind: str, rows: int) -> pathlib.Path:
    """Source arrays, our build and stock TFDS's ArrayRecord build; each step once."""
    src = work / kind
    if not (src / "arrays.done").exists():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        write_npy_chunked(src / "x.npy", rows=rows, row_shape=KINDS[kind], seed=1)
        np.save(src / "y.npy", np.random.default_rng(2).random(rows, dtype=np.float32))
        (src / "arrays.done").write_text("ok")
    if not (src / "ours.done").exists():
        build_ours("ours", src=src, data_dir=src / "ours")
        (src / "ours.done").write_text("ok")
    if not (src / "stock.done").exists():
        sys.path.insert(0, str(ROOT))
        from benchmarks._stock_builder import build_stock

        shutil.rmtree(src / "stock", ignore_errors=True)
        t0 = time.perf_counter()
        build_stock(
            f"stock_ar_{kind.lower()}",
            source_dir=str(src),
            data_dir=str(src / "stock"),
            file_format="array_record",
        )
        print(f"  built stock ArrayRecord in {time.perf_counter() - t0:.1f} s", flush=True)
        (src / "stock.done").write_text("ok")
    return src


# ---------------------------------------------------------------- contenders
def epochs_of(contender: str, src: pathlib.Path):
    """A function epoch(seed) -> iterable of batches whose "x" leads with the batch."""
    import tensorflow_datasets as tfds

    def source():
        if "arrayrecord" in contender:
            name = f"stock_ar_{src.name.lower()}"
            return tfds.data_source(name, split="train", data_dir=str(src / "stock"))
        import tfds_bigarrays  # noqa: F401  (our data source for our datasets)

        return tfds.data_source("ours", split="train", data_dir=str(src / "ours"))

    if contender.startswith("grain-"):
        from absl import flags

        flags.FLAGS.mark_as_parsed()  # Grain reads absl flags
        import grain
        import grain.python as gp

        data = source()
        if contender.startswith("grain-dataset-"):
            return lambda seed: grain.MapDataset.source(data).shuffle(seed=seed).batch(BATCH)
        inline = {"read_options": gp.ReadOptions(num_threads=0, prefetch_buffer_size=0)}

        def epoch(seed):
            sampler = gp.IndexSampler(
                len(data), shuffle=True, num_epochs=1, seed=seed, shard_options=gp.NoSharding()
            )
            return gp.DataLoader(
                data_source=data,
                sampler=sampler,
                operations=[gp.Batch(BATCH)],
                worker_count=0,
                **(inline if contender.endswith("-inline") else {}),
            )

        return epoch
    if contender.startswith("torch-"):
        import torch
        from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

        if contender == "torch-mmap":

            class Mapped(Dataset):
                def __init__(self):
                    self.x = np.load(src / "x.npy", mmap_mode="r")
                    self.y = np.load(src / "y.npy", mmap_mode="r")

                def __len__(self):
                    return len(self.x)

                def __getitem__(self, i):
                    return {"x": np.asarray(self.x[i]), "y": self.y[i]}

            dataset = Mapped()
        else:
            dataset = source()

        def epoch(seed):
            generator = torch.Generator().manual_seed(seed)
            if contender == "torch-ours-stacked":
                sampler = RandomSampler(dataset, generator=generator)
                batches = BatchSampler(sampler, BATCH, drop_last=False)
                return DataLoader(dataset, sampler=batches, batch_size=None)
            return DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=generator)

        return epoch
    if contender == "tfds-load-ours":
        import tfds_bigarrays  # noqa: F401

        ds = tfds.load(
            "ours",
            split="train",
            data_dir=str(src / "ours"),
            shuffle_files=True,
            batch_size=BATCH,
            as_supervised=True,
        )
        return lambda seed: ({"x": x} for x, _ in ds)
    raise ValueError(f"--contender={contender!r} is none of {', '.join(CONTENDERS)}.")


def child(args) -> None:
    epoch = epochs_of(args.contender, pathlib.Path(args.src))
    for i, _ in enumerate(epoch(0)):  # warm-up: threads, first reads
        if i >= 10:
            break
    count = epochs = 0
    cpu0 = sum(os.times()[:4])
    start = time.perf_counter()
    done = False
    while not done:
        for batch in epoch(epochs + 1):
            count += int(batch["x"].shape[0])
            if time.perf_counter() - start >= args.seconds:
                done = True
                break
        epochs += 1
    wall = time.perf_counter() - start
    cpu = sum(os.times()[:4]) - cpu0
    emit(
        {
            "examples_per_s": count / wall,
            "cpu_us_per_example": cpu / count * 1e6,
            "examples": count,
            "peak_rss": peak_rss_bytes(),
        }
    )


# ---------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender")
    parser.add_argument("--src")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_bench_source")
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows, 1 round")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    contenders = args.contenders.split(",")
    work = pathlib.Path(args.workdir)
    table = {}
    for kind in KINDS:
        rows = ROWS[kind] // (10 if args.quick else 1)
        print(f"preparing {kind} rows ({rows:,})", flush=True)
        src = prepare(work, kind, rows)
        runs: dict[str, list[dict]] = {c: [] for c in contenders}
        for round_ in range(args.rounds):
            for contender in contenders:
                r = run_child(
                    str(HERE), "--contender", contender, "--src", str(src),
                    "--seconds", str(args.seconds),
                )  # fmt: skip
                runs[contender].append(r)
                print(
                    f"  {kind:5s} round {round_ + 1} {contender:17s} "
                    f"{r['examples_per_s']:>10,.0f} ex/s  {r['cpu_us_per_example']:6.2f} us CPU/ex  "
                    f"peak RSS {r['peak_rss'] / 1e9:.2f} GB",
                    flush=True,
                )
        table[kind] = (rows, runs)

    lines = [
        "| rows | contender | examples/s (median) | vs its ArrayRecord twin, each round | "
        "CPU us/example | peak RSS |",
        "|---|---|---:|---|---:|---:|",
    ]
    for kind, (rows, runs) in table.items():
        for name, rs in runs.items():
            rate = float(np.median([r["examples_per_s"] for r in rs]))
            twin = runs.get(PAIRS.get(name, ""))
            vs = ""
            if twin:
                each = [
                    r["examples_per_s"] / t["examples_per_s"] for r, t in zip(rs, twin, strict=True)
                ]
                vs = f"**{np.median(each):.2f}x** ({', '.join(f'{x:.2f}' for x in each)})"
            lines.append(
                f"| {kind} ({rows:,}) | {name} | {rate:,.0f} | {vs} | "
                f"{np.median([r['cpu_us_per_example'] for r in rs]):.1f} | "
                f"{max(r['peak_rss'] for r in rs) / 1e9:.2f} GB |"
            )
    lines.append(
        f"\n{args.rounds} rounds of {args.seconds:g} s per contender; "
        "ratios: the median of the per-round ratios, each round's in brackets; "
        "CPU: user + system of all threads; peak RSS from VmHWM. "
        "Command: `.venv/bin/python benchmarks/data_source_throughput.py"
        f"{' --quick' if args.quick else ''}`."
    )
    if args.quick:
        print("\n".join(lines))
    else:
        head = [
            "# Data source benchmark",
            "",
            "Written by `benchmarks/data_source_throughput.py` (contenders: its docstring); "
            "what the numbers mean: [jax_pytorch_grain.md](jax_pytorch_grain.md#measured).",
            "",
        ]
        write_report(args.out, "data_source_benchmark.md", "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()

"""Read-path benchmark: examples/s and peak RSS, side by side in one run.

Contenders, each in a fresh process (so peak RSS is its own), batch 256:
  in-memory  tf.data.Dataset.from_tensor_slices over arrays held in RAM,
             shuffle(3000), batch, prefetch
  seed       the blog post's pipeline over its own TFRecords (one Example per
             row with tf.io.serialize_tensor bytes; shuffle(3000),
             map(parse, 8), batch(256), prefetch(64))
  stock-tfds tfds.features.Tensor dataset built by TFDS's writer; tfds.load
             + shuffle(3000) + batch + prefetch (tfds_bigarrays not imported)
  ours       tfds.load(..., shuffle_files=True, batch_size=256,
             as_supervised=True) with tfds_bigarrays imported (defaults:
             random access)
  ours-sequential  the same with read_options(access="sequential"): the
             tf.data file-reader pipeline used for remote files and the
             tf.data service (the default before random access)
  ours-mapped  the same with read_options(access="mapped"): shards kept
             memory-mapped across epochs (RSS grows to the split's size)
  ours-crc32 ours with the CRC32C of records computed by four streams of the
             CRC32 instruction instead of AVX-512 folding (what the folding
             earns; the same as ours on CPUs without AVX-512)
  ours-shared  ours, reading shards that it neither owns nor may write (a
             team's shared dataset; needs root: the shards are given to
             nobody, and the reader runs without capabilities)

Row kinds: 32 float32 ("small", 128 B), 32x32 ("medium", 4 KiB), 64x64
("image", 16 KiB), 128x128 ("big", 64 KiB) and 256x128 float32 ("huge", 128
KiB). Beside examples/s, each row gives the bytes/s as a share of one core's
memcpy bandwidth, measured in the same run, and the CPU time per byte over
memcpy's (the physical limits in the page cache). Before a contender starts,
the dataset's files leave the page cache, and it reads one whole epoch
unmeasured: the cache then holds what that reader's own first epoch put there, as in
training (the pages a reader fills the cache with set how fast later epochs
copy from it, docs/design.md#tuning). Then peak RSS of one epoch
streaming a 1 GB and a 4 GB dataset, ours and seed, and the speed of one
epoch read from disk (the page cache dropped first; needs root), beside a
cold sequential read of the same shard files.

    .venv/bin/python benchmarks/read_throughput.py            # full run, writes docs/
    .venv/bin/python benchmarks/read_throughput.py --quick    # smaller, no 4 GB
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import (  # noqa: E402
    WITHOUT_CAPABILITIES,
    build_ours,
    emit,
    evict_files,
    given_away,
    measure_epochs,
    memcpy_bytes_per_s,
    peak_rss_bytes,
    read_files,
    run_child,
    write_npy_chunked,
    write_report,
)

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
KINDS = {
    "small": (32,),
    "medium": (32, 32),
    "image": (64, 64),
    "big": (128, 128),
    "huge": (256, 128),
}
# Rows of each kind in a full run: 330-660 MB of arrays, held by in-memory.
ROWS = {"small": 1_000_000, "medium": 80_000, "image": 20_000, "big": 10_000, "huge": 5_000}
BATCH = 256
CONTENDERS = (
    "in-memory",
    "seed",
    "stock-tfds",
    "ours-sequential",
    "ours",
    "ours-mapped",
    "ours-crc32",
    "ours-shared",
)
SEED_SHUFFLE = 3000


# ---------------------------------------------------------------- preparation
def write_seed_tfrecords(src: pathlib.Path, out: pathlib.Path, *, rows_per_file: int) -> None:
    """The seed's save_tfrecords, verbatim in format (serialize_tensor per row)."""
    import tensorflow as tf

    x = np.load(src / "x.npy", mmap_mode="r")
    y = np.load(src / "y.npy", mmap_mode="r")
    out.mkdir(parents=True, exist_ok=True)
    for f, start in enumerate(range(0, len(x), rows_per_file)):
        stop = min(len(x), start + rows_per_file)
        with tf.io.TFRecordWriter(str(out / f"part{f:04d}.tfrecords")) as writer:
            for i in range(start, stop):
                features = tf.train.Features(
                    feature={
                        "data": tf.train.Feature(
                            bytes_list=tf.train.BytesList(
                                value=[tf.io.serialize_tensor(np.asarray(x[i])).numpy()]
                            )
                        ),
                        "label": tf.train.Feature(float_list=tf.train.FloatList(value=[y[i]])),
                    }
                )
                writer.write(tf.train.Example(features=features).SerializeToString())


def prepare(work: pathlib.Path, kind: str, rows: int, *, stock: bool) -> None:
    """Source arrays, then each contender's files; each step skipped if done."""
    src = work / kind
    shape = KINDS[kind]
    if not (src / "arrays.done").exists():
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        write_npy_chunked(src / "x.npy", rows=rows, row_shape=shape, seed=1)
        np.save(src / "y.npy", np.random.default_rng(2).random(rows, dtype=np.float32))
        (src / "arrays.done").write_text("ok")
    if not (src / "ours.done").exists():
        t0 = time.perf_counter()
        build_ours(f"ours_{kind}", src=src, data_dir=src / "ours")
        print(f"  built ours_{kind} in {time.perf_counter() - t0:.1f} s", flush=True)
        (src / "ours.done").write_text("ok")
    if not (src / "seed.done").exists():
        row_bytes = int(np.prod(shape)) * 4
        t0 = time.perf_counter()
        write_seed_tfrecords(src, src / "seed", rows_per_file=max(1, (256 << 20) // row_bytes))
        print(f"  wrote seed records in {time.perf_counter() - t0:.1f} s", flush=True)
        (src / "seed.done").write_text("ok")
    if stock and not (src / "stock.done").exists():
        sys.path.insert(0, str(ROOT))
        from benchmarks._stock_builder import build_stock

        shutil.rmtree(src / "stock", ignore_errors=True)
        t0 = time.perf_counter()
        build_stock(f"stock_{kind}", source_dir=str(src), data_dir=str(src / "stock"))
        print(f"  built stock_{kind} in {time.perf_counter() - t0:.1f} s", flush=True)
        (src / "stock.done").write_text("ok")


# ---------------------------------------------------------------- contenders
def seed_dataset(files):
    import tensorflow as tf

    def map_func(example):
        feature_description = {
            "data": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.float32),
        }
        parsed = tf.io.parse_single_example(example, features=feature_description)
        return tf.io.parse_tensor(parsed["data"], tf.float32), parsed["label"]

    ds = tf.data.TFRecordDataset(files)
    ds = ds.shuffle(SEED_SHUFFLE)
    ds = ds.map(map_func=map_func, num_parallel_calls=8)
    return ds.batch(BATCH).prefetch(64)


def make(contender: str, src: pathlib.Path, kind: str):
    import tensorflow as tf

    if contender == "in-memory":
        x, y = np.load(src / "x.npy"), np.load(src / "y.npy")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(SEED_SHUFFLE)
        return ds.batch(BATCH).prefetch(tf.data.AUTOTUNE)
    if contender == "seed":
        return seed_dataset(sorted(glob.glob(str(src / "seed" / "*.tfrecords"))))
    import tensorflow_datasets as tfds

    if contender == "stock-tfds":
        ds = tfds.load(
            f"stock_{kind}",
            data_dir=src / "stock",
            split="train",
            shuffle_files=True,
            as_supervised=True,
        )
        return ds.shuffle(SEED_SHUFFLE).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    if contender in ("ours", "ours-sequential", "ours-mapped", "ours-crc32", "ours-shared"):
        import tfds_bigarrays as tb

        if contender == "ours-crc32":
            from tfds_bigarrays._read import core

            core.set_crc_level(1)  # four CRC32-instruction streams, no AVX-512 folding
        access = {"ours-sequential": "sequential", "ours-mapped": "mapped"}.get(contender, "auto")
        with tb.read_options(access=access):
            return tfds.load(
                f"ours_{kind}",
                data_dir=src / "ours",
                split="train",
                shuffle_files=True,
                batch_size=BATCH,
                as_supervised=True,
            )
    raise ValueError(contender)


def child(args) -> None:
    src = pathlib.Path(args.src)
    if args.own_epoch:  # every contender's files: none holds memory for the others
        evict_files(p for p in sorted(src.rglob("*")) if p.is_file())
    ds = make(args.contender, src, args.kind)
    if args.own_epoch:
        for _ in ds:  # the first epoch fills the page cache the way this reader does
            pass
    if args.autotune:  # e.g. ours with tf.data autotuning back on, for comparison
        import tensorflow as tf

        options = tf.data.Options()
        options.autotune.enabled = True
        ds = ds.with_options(options)
    result = measure_epochs(
        ds, min_epochs=args.epochs, min_seconds=args.seconds, warmup_batches=args.warmup
    )
    emit({**result, "peak_rss": peak_rss_bytes()})


# ---------------------------------------------------------------- report
def chart(rows: list[dict], scale: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds) + 1, figsize=(5 * (len(kinds) + 1), 4.2))
    for ax, kind in zip(axes[:-1], kinds, strict=True):
        sub = [r for r in rows if r["kind"] == kind]
        base = next(r["examples_per_s"] for r in sub if r["contender"] == "in-memory")
        ax.bar(
            [r["contender"] for r in sub],
            [r["examples_per_s"] / base for r in sub],
            color=["#888", "#c66", "#c96", "#9ac", "#36c", "#339", "#69c"][: len(sub)],
        )
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.tick_params(axis="x", labelrotation=15)
        ax.set_title(f"{'x'.join(map(str, KINDS[kind]))} float32: examples/s vs in-memory")
        for i, r in enumerate(sub):
            ax.text(
                i,
                r["examples_per_s"] / base,
                f"{r['examples_per_s'] / 1e3:.0f}k/s",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax = axes[-1]
    labels = [f"{s['contender']} {s['gb']:g} GB" for s in scale]
    ax.bar(labels, [s["peak_rss"] / 1e9 for s in scale], color="#6a6")
    ax.set_ylabel("peak RSS, GB")
    ax.set_title("peak RSS streaming one epoch")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def drop_page_cache() -> bool:
    """Empties the kernel's page cache (needs root), so a read comes from disk."""
    os.sync()
    try:
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def measure(
    contender: str,
    kind: str,
    work: pathlib.Path,
    *,
    epochs: int,
    seconds: float,
    warmup: int = 20,
    own_epoch: bool = True,
) -> dict:
    """One contender on one prepared dataset, in a fresh process.

    `own_epoch`: after its files leave the page cache, it reads one epoch
    unmeasured first (see the module docstring).
    """
    shared = contender == "ours-shared"
    files = [p for p in (work / kind / "ours").rglob("*") if p.is_file()] if shared else []
    with given_away(files):
        return run_child(
            str(HERE),
            "--contender",
            contender,
            "--kind",
            kind,
            "--src",
            str(work / kind),
            "--epochs",
            str(epochs),
            "--seconds",
            str(seconds),
            "--warmup",
            str(warmup),
            *(["--own-epoch"] if own_epoch else []),
            prefix=WITHOUT_CAPABILITIES if shared else (),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender")
    parser.add_argument("--kind")
    parser.add_argument("--src")
    parser.add_argument("--epochs", type=int, default=2, help="at least this many epochs")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="and at least this long, per measurement"
    )
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--own-epoch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--autotune",
        action="store_true",
        help="with --child: turn tf.data autotuning on for the contender's dataset",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="contenders measured in turn this many times; the table shows medians",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help="comma-separated subset to run (default: all); in-memory is always run",
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated row kinds (default: all)"
    )
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, no 4 GB run")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    work = pathlib.Path(args.workdir)
    scale_factor = 0.25 if args.quick else 1.0
    rows = {kind: int(n * scale_factor) for kind, n in ROWS.items()}
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds {','.join(unknown)}: not a row kind; use some of {','.join(KINDS)}")
    memcpy = memcpy_bytes_per_s()
    print(f"memcpy, one core: {memcpy / 1e9:.2f} GB/s", flush=True)
    results = []
    contenders = ["in-memory", *(c for c in args.contenders.split(",") if c != "in-memory")]
    if "ours-shared" in contenders and (os.geteuid() != 0 or not shutil.which("setpriv")):
        print("ours-shared needs root (to give the shards to another user) and setpriv: left out")
        contenders.remove("ours-shared")
    for kind in kinds:
        print(f"preparing {kind} ({rows[kind]:,} rows)", flush=True)
        prepare(work, kind, rows[kind], stock=True)
        # Contenders take turns, round after round, so that a slow spell of
        # this shared machine hits all of them; the table shows medians.
        runs: dict[str, list[dict]] = {c: [] for c in contenders}
        for round_ in range(args.rounds):
            for contender in contenders:
                r = measure(contender, kind, work, epochs=args.epochs, seconds=args.seconds)
                runs[contender].append(r)
                print(
                    f"  {kind:6s} round {round_ + 1} {contender:11s} "
                    f"{r['examples_per_s']:>10,.0f} ex/s  {r['cpu_us_per_example']:.2f} us CPU/ex  "
                    f"peak RSS {r['peak_rss'] / 1e9:.2f} GB",
                    flush=True,
                )
        for contender in contenders:
            rs = runs[contender]
            results.append(
                {
                    "kind": kind,
                    "contender": contender,
                    "examples_per_s": float(np.median([r["examples_per_s"] for r in rs])),
                    "cpu_us_per_example": float(np.median([r["cpu_us_per_example"] for r in rs])),
                    "peak_rss": max(r["peak_rss"] for r in rs),
                    # Per round, this contender over in-memory measured just before it.
                    "round_ratios": [
                        r["examples_per_s"] / m["examples_per_s"]
                        for r, m in zip(rs, runs["in-memory"], strict=True)
                    ],
                }
            )

    scale = []
    for gb in (1, 4) if not args.quick else (0.25, 1):
        if "image" not in kinds:
            print("no streaming or from-disk rows: they read 64x64 rows (--kinds image)")
            break
        kind = f"stream{gb:g}".replace(".", "_")
        KINDS_ROWS = int(gb * 1e9 / (64 * 64 * 4))
        KINDS[kind] = (64, 64)
        print(f"preparing {kind} ({KINDS_ROWS:,} rows)", flush=True)
        prepare(work, kind, KINDS_ROWS, stock=False)
        # The limit from disk: the same shard files read front to back, cold.
        sequential = None
        if drop_page_cache():
            shards = sorted(
                glob.glob(str(work / kind / "ours" / "**" / "*.tfrecord-*"), recursive=True)
            )
            start = time.perf_counter()
            sequential = read_files(shards) / (time.perf_counter() - start)
        for contender in ("seed", "ours"):
            r = measure(contender, kind, work, epochs=1, seconds=0, own_epoch=False)
            # Then one epoch from disk: the case of arrays bigger than RAM.
            cold = drop_page_cache()
            c = measure(contender, kind, work, epochs=1, seconds=0, warmup=0, own_epoch=False)
            r.update(
                gb=gb,
                contender=contender,
                cold_examples_per_s=c["examples_per_s"] if cold else None,
                cold_sequential_bytes_per_s=sequential,
            )
            scale.append(r)
            print(
                f"  {gb:g} GB {contender:6s} peak RSS {r['peak_rss'] / 1e9:.2f} GB "
                f"({r['examples_per_s']:,.0f} ex/s; page cache dropped: "
                f"{c['examples_per_s']:,.0f} ex/s{'' if cold else ' (could not drop it)'})",
                flush=True,
            )
        del KINDS[kind]

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"One core's memcpy in this run: {memcpy / 1e9:.2f} GB/s. *Of memcpy*: the rows' bytes "
        "per second over that bandwidth; *CPU / memcpy*: CPU time per byte (all threads) over "
        "memcpy's.",
        "",
        "| rows | contender | examples/s (median) | vs in-memory | vs seed | "
        "vs in-memory, each round | CPU us/example | GB/s | of memcpy | CPU / memcpy | peak RSS |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        sub = {r["contender"]: r for r in results if r["kind"] == kind}
        mem = sub["in-memory"]["examples_per_s"]
        seed = sub["seed"]["examples_per_s"] if "seed" in sub else float("nan")
        row_bytes = int(np.prod(KINDS[kind])) * 4 + 4  # x and its float32 label
        for name, r in sub.items():
            each = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
            rate = r["examples_per_s"] * row_bytes
            cpu_per_byte = r["cpu_us_per_example"] * 1e-6 / row_bytes
            lines.append(
                f"| {'x'.join(map(str, KINDS[kind]))} float32 | {name} | "
                f"{r['examples_per_s']:,.0f} | {r['examples_per_s'] / mem:.2f}x | "
                f"{r['examples_per_s'] / seed:.2f}x | {each} | "
                f"{r['cpu_us_per_example']:.2f} | {rate / 1e9:.2f} | {rate / memcpy:.2f} | "
                f"{cpu_per_byte * memcpy:.2f}x | {r['peak_rss'] / 1e9:.2f} GB |"
            )
    if scale:
        lines += [
            "",
            "| streaming one epoch | seed peak RSS | ours peak RSS | "
            "seed examples/s, from disk | ours examples/s, from disk | "
            "cold sequential read, MB/s | ours, of the cold disk |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]

        def cold(r: dict) -> str:
            rate = r.get("cold_examples_per_s")
            return "n/a (needs root)" if rate is None else f"{rate:,.0f}"

        for gb in sorted({s["gb"] for s in scale}):
            sub = {s["contender"]: s for s in scale if s["gb"] == gb}
            seq = sub["ours"].get("cold_sequential_bytes_per_s")
            ours_rate = sub["ours"].get("cold_examples_per_s")
            share = (
                f"{ours_rate * (64 * 64 * 4 + 4) / seq:.2f}"
                if seq and ours_rate
                else "n/a (needs root)"
            )
            lines.append(
                f"| {gb:g} GB of 64x64 float32 | {sub['seed']['peak_rss'] / 1e9:.2f} GB | "
                f"{sub['ours']['peak_rss'] / 1e9:.2f} GB | {cold(sub['seed'])} | "
                f"{cold(sub['ours'])} | {f'{seq / 1e6:,.0f}' if seq else 'n/a'} | {share} |"
            )
        gbs = sorted({s["gb"] for s in scale})
        ours = {s["gb"]: s["peak_rss"] for s in scale if s["contender"] == "ours"}
        lines.append(
            f"\nOurs, peak RSS at {gbs[-1]:g} GB / at {gbs[0]:g} GB: "
            f"{ours[gbs[-1]] / ours[gbs[0]]:.3f}"
        )
    stamp = time.strftime("%Y-%m-%d")
    text = (
        f"Measured {stamp} on a {os.cpu_count()}-core machine, batch {BATCH}; each "
        f"measurement is whole epochs (at least {args.epochs}, and at least {args.seconds:g} s) "
        f"after a warm-up, in a fresh process; contenders take turns for {args.rounds} rounds "
        "and the table shows medians; command: "
        "`.venv/bin/python benchmarks/read_throughput.py"
        f"{' --quick' if args.quick else ''}"
        f"{'' if args.kinds == ','.join(KINDS) else ' --kinds ' + args.kinds}"
        f"{'' if args.contenders == ','.join(CONTENDERS) else ' --contenders ' + args.contenders}"
        f"{'' if out == ROOT / 'docs' else ' --out ' + os.path.relpath(out, ROOT)}`.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    suffix = "_quick" if args.quick else ""
    (out / f"read_benchmark{suffix}.json").write_text(
        json.dumps({"memcpy_bytes_per_s": memcpy, "throughput": results, "scale": scale}, indent=1)
    )
    chart(results, scale, out / f"read_benchmark{suffix}.png")
    write_report(out, f"read_benchmark{suffix}.md", text)


if __name__ == "__main__":
    main()

"""Build benchmark: conversion throughput and memory, side by side in one run.

  1. stock TFDS (GeneratorBasedBuilder, tfds.features.Tensor, its writer) vs
     tfds_bigarrays' local build, on the same 64x64 float32 rows (MB/s).
  2. tfds_bigarrays through Beam's DirectRunner with 1 and with 2 workers.
  3. peak RSS of building a 1 GB and a 4 GB source.
  4. the same 1 GB as a Zarr store (Zstd, 1024-row chunks): built locally,
     through 2 Dask workers (`--dask`), and as a `dask.array.from_zarr` array
     through 2 Dask workers; against the .npy local build of the same array.

Each build runs in a fresh process (peak RSS is its own, VmHWM).

    .venv/bin/python benchmarks/build_throughput.py   # writes docs/build_benchmark.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import (  # noqa: E402
    emit,
    peak_rss_bytes,
    run_child,
    write_npy_chunked,
    write_report,
)

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
ROW = (64, 64)


def child(args) -> None:
    src, out = pathlib.Path(args.src), pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    source_bytes = (src / "x.npy").stat().st_size + (src / "y.npy").stat().st_size
    # Imports outside the timed part: both contenders pay TensorFlow's start-up.
    sys.path.insert(0, str(ROOT))
    import tfds_bigarrays as tb
    from benchmarks._stock_builder import build_stock

    if args.how.startswith(("zarr", "dask")):
        source_bytes = int(np.load(src / "x.npy", mmap_mode="r").nbytes)
        source_bytes += (src / "y.npy").stat().st_size
    start = time.perf_counter()
    if args.how.startswith(("zarr", "dask")):
        x = src / "x.zarr"
        if args.how.startswith("dask"):
            import dask.array as da

            x = da.from_zarr(str(src / "x.zarr"))
        tb.build(
            "ours_build",
            data_dir=out,
            splits={"train": {"x": x, "y": src / "y.npy"}},
            dask=args.dask if args.how.endswith("-dask") else None,
        )
    elif args.how == "stock":
        build_stock("stock_build", source_dir=str(src), data_dir=str(out))
    else:
        options = None
        if args.how.startswith("beam"):
            options = (
                "runner=DirectRunner,direct_running_mode=multi_processing,"
                f"direct_num_workers={args.how[4:]}"
            )
        tb.build(
            "ours_build",
            data_dir=out,
            splits={"train": {"x": src / "x.npy", "y": src / "y.npy"}},
            beam=options is not None,
            beam_options=options,
        )
    seconds = time.perf_counter() - start
    emit(
        {
            "seconds": seconds,
            "mb_per_s": source_bytes / 1e6 / seconds,
            "peak_rss": peak_rss_bytes(),
            "source_bytes": source_bytes,
        }
    )


def make_source(path: pathlib.Path, gb: float) -> None:
    if (path / "done").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    rows = int(gb * 1e9 / (ROW[0] * ROW[1] * 4))
    write_npy_chunked(path / "x.npy", rows=rows, row_shape=ROW, seed=1)
    np.save(path / "y.npy", np.arange(rows, dtype=np.float32))
    (path / "done").write_text("ok")


def make_zarr(path: pathlib.Path) -> None:
    """x.npy of `path` as x.zarr: Zstd (Zarr 3's default codec), 1024-row chunks."""
    import zarr

    if (path / "zarr-done").exists():
        return
    x = np.load(path / "x.npy", mmap_mode="r")
    z = zarr.create_array(
        path / "x.zarr", shape=x.shape, chunks=(1024, *x.shape[1:]), dtype=x.dtype,
        overwrite=True,
    )  # fmt: skip
    for start in range(0, len(x), 16384):
        z[start : start + 16384] = x[start : start + 16384]
    (path / "zarr-done").write_text("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--how")
    parser.add_argument("--src")
    parser.add_argument("--out")
    parser.add_argument("--dask", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="/tmp/tfds_bigarrays_build_bench")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = pathlib.Path(args.workdir)

    def run(how, gb, *extra):
        src = work / f"src{gb:g}"
        make_source(src, gb)
        if how.startswith(("zarr", "dask")):
            make_zarr(src)
        r = run_child(
            str(HERE), "--how", how, "--src", str(src), "--out", str(work / "out"), *extra
        )
        shutil.rmtree(work / "out", ignore_errors=True)
        print(
            f"  {how:6s} {gb:g} GB: {r['mb_per_s']:8.1f} MB/s, {r['seconds']:.1f} s, "
            f"peak RSS {r['peak_rss'] / 1e9:.2f} GB",
            flush=True,
        )
        return r

    rows = []
    stock, local = run("stock", 0.33), run("local", 0.33)
    rows.append(("stock TFDS build, 0.33 GB", stock))
    rows.append(("tfds_bigarrays local build, 0.33 GB", local))
    beam1, beam2 = run("beam1", 2), run("beam2", 2)
    rows.append(("tfds_bigarrays Beam DirectRunner, 1 worker, 2 GB", beam1))
    rows.append(("tfds_bigarrays Beam DirectRunner, 2 workers, 2 GB", beam2))
    small, big = run("local", 1), run("local", 4)
    rows.append(("tfds_bigarrays local build, 1 GB", small))
    rows.append(("tfds_bigarrays local build, 4 GB", big))
    zarr_local = run("zarr", 1)
    rows.append(("tfds_bigarrays local build, 1 GB as a Zarr store (Zstd)", zarr_local))
    with dask_cluster(work, workers=2) as address:
        zarr_dask = run("zarr-dask", 1, "--dask", address)
        dask_dask = run("dask-dask", 1, "--dask", address)
    rows.append(("tfds_bigarrays Zarr store, 2 Dask workers (`--dask`), 1 GB", zarr_dask))
    rows.append(("tfds_bigarrays `da.from_zarr` array, 2 Dask workers, 1 GB", dask_dask))

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: "
        "`.venv/bin/python benchmarks/build_throughput.py`. Rows of 64x64 float32 plus a "
        "float32 label, sources as .npy files in the page cache.",
        "",
        "| build | MB/s | seconds | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {r['mb_per_s']:.1f} | {r['seconds']:.1f} | {r['peak_rss'] / 1e9:.2f} GB |"
        for name, r in rows
    ]
    lines += [
        "",
        f"- local vs stock TFDS: {local['mb_per_s'] / stock['mb_per_s']:.1f}x",
        f"- Beam 2 workers vs 1: {beam1['seconds'] / beam2['seconds']:.2f}x",
        f"- peak RSS building 4 GB / 1 GB: {big['peak_rss'] / small['peak_rss']:.3f}",
        f"- Zarr local build vs .npy local build of the same 1 GB: "
        f"{zarr_local['mb_per_s'] / small['mb_per_s']:.2f}x (target >= 0.7x)",
        "- The Dask rows' peak RSS is the client's (the process that ran `build`); the "
        "workers read the chunks and write the shards. Their MB/s include starting "
        "Beam's Dask runner against a running cluster (scheduler + 2 single-threaded "
        "workers on 127.0.0.1).",
    ]
    write_report(args.docs, "build_benchmark.md", "\n".join(lines) + "\n")


@contextlib.contextmanager
def dask_cluster(work: pathlib.Path, *, workers: int):
    """A `dask scheduler` and `workers` single-threaded `dask worker`s on 127.0.0.1."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(pathlib.Path(sys.executable).parent / "dask")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(work / "dask.log", "wb")  # noqa: SIM115 - closed below
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    ]  # fmt: skip
    try:
        procs += [
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
            for _ in range(workers)
        ]  # fmt: skip
        import distributed

        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
        log.close()


if __name__ == "__main__":
    main()

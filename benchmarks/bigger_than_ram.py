"""Bigger than RAM: one shuffled epoch per reader, in a memory cgroup far below the data.

Every reader runs in a fresh process inside a memory cgroup (v1
`memory.limit_in_bytes` or v2 `memory.max`; the page cache is charged there)
limited to a fraction of the dataset, with the page cache dropped before it
starts. Contenders, on the same rows of 64x64 float32 (16 KiB) and a float32
label that numbers the rows:

  cold-sequential  every shard file read front to back with 16 MiB reads: the
                   disk bandwidth that the others are compared to
  seed             the blog post's pipeline over its own TFRecords
  memmap           np.load(mmap_mode="r") and a numpy gather per shuffled batch
  ours             tfds.load(shuffle_files=True, batch_size=256), each access mode
                   (mixing "auto": whole blocks per batch, the split being
                   bigger than RAM); ours-rows with mixing="rows" (rows dealt
                   among batches, waiting for their window in the page cache)

Each reports examples/s, MB/s, CPU per example, the bytes it read from the
device (/proc/self/io), the cgroup's peak usage, and MB/s over the cold
sequential bandwidth. A reader slower than `--max-seconds` for an epoch is
stopped there and reported as time-boxed. The labels check that ours read
every example exactly once.

Needs root (cgroups, drop_caches); skips, saying why, where either is missing.

    .venv/bin/python benchmarks/bigger_than_ram.py   # 7 GB in a 2 GiB cgroup; writes docs/
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import build_ours, emit, read_files, write_npy_chunked, write_report  # noqa: E402
from read_throughput import BATCH, drop_page_cache, seed_dataset, write_seed_tfrecords  # noqa: E402

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
ROW = (64, 64)
ROW_BYTES = ROW[0] * ROW[1] * 4
CONTENDERS = (
    "cold-sequential",
    "seed",
    "memmap",
    "ours",
    "ours-rows",
    "ours-mapped",
    "ours-sequential",
)


# ---------------------------------------------------------------- the cgroup
class MemoryCgroup:
    """A memory cgroup of its own: v1 where mounted, else v2's unified tree."""

    def __init__(self, name: str, limit: int):
        v1 = pathlib.Path("/sys/fs/cgroup/memory")
        if v1.is_dir():
            self.path, self.v1 = v1 / name, True
        elif pathlib.Path("/sys/fs/cgroup/cgroup.controllers").exists():
            self.path, self.v1 = pathlib.Path("/sys/fs/cgroup") / name, False
        else:
            raise OSError("no memory cgroup hierarchy under /sys/fs/cgroup")
        self.path.mkdir(exist_ok=True)
        try:
            self._write("memory.limit_in_bytes" if self.v1 else "memory.max", limit)
        except OSError:
            self.remove()
            raise
        if self.v1:  # no swapping the readers' memory out instead of limiting it
            with contextlib.suppress(OSError):
                self._write("memory.memsw.limit_in_bytes", limit)
        self.limit = limit
        self._peak_fd: int | None = None

    def _write(self, name: str, value) -> None:
        (self.path / name).write_text(f"{value}\n")

    def reset_peak(self) -> None:
        if self.v1:
            self._write("memory.max_usage_in_bytes", 0)
            return
        # v2 resets memory.peak only for reads through the descriptor written to.
        if self._peak_fd is not None:
            os.close(self._peak_fd)
        self._peak_fd = os.open(self.path / "memory.peak", os.O_RDWR)
        with contextlib.suppress(OSError):
            os.write(self._peak_fd, b"reset\n")

    def peak(self) -> int:
        if self.v1:
            return int((self.path / "memory.max_usage_in_bytes").read_text())
        assert self._peak_fd is not None
        return int(os.pread(self._peak_fd, 64, 0))

    def join(self) -> None:
        """Moves the calling process into the cgroup (used in a child before exec)."""
        (self.path / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def remove(self) -> None:
        if getattr(self, "_peak_fd", None) is not None:
            os.close(self._peak_fd)
            self._peak_fd = None
        with contextlib.suppress(OSError):
            self.path.rmdir()


# ---------------------------------------------------------------- preparation
def prepare(work: pathlib.Path, rows: int) -> None:
    """x.npy, y.npy (row numbers), our dataset and the seed's TFRecords; each once."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "arrays.done").exists():
        t0 = time.perf_counter()
        write_npy_chunked(work / "x.npy", rows=rows, row_shape=ROW, seed=1)
        np.save(work / "y.npy", np.arange(rows, dtype=np.float32))
        (work / "arrays.done").write_text("ok")
        print(f"  wrote arrays in {time.perf_counter() - t0:.0f} s", flush=True)
    if not (work / "ours.done").exists():
        sys.path.insert(0, str(ROOT))
        t0 = time.perf_counter()
        build_ours("btr", src=work, data_dir=work / "ours")
        (work / "ours.done").write_text("ok")
        print(f"  built ours in {time.perf_counter() - t0:.0f} s", flush=True)
    if not (work / "seed.done").exists():
        t0 = time.perf_counter()
        shutil.rmtree(work / "seed", ignore_errors=True)
        write_seed_tfrecords(work, work / "seed", rows_per_file=(256 << 20) // ROW_BYTES)
        (work / "seed.done").write_text("ok")
        print(f"  wrote seed records in {time.perf_counter() - t0:.0f} s", flush=True)


def shard_files(work: pathlib.Path) -> list[str]:
    return sorted(glob.glob(str(work / "ours" / "btr" / "1.0.0" / "*.tfrecord-*")))


# ---------------------------------------------------------------- children
def _io_read_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


def child(args) -> None:
    work = pathlib.Path(args.work)
    deadline = time.perf_counter() + args.max_seconds
    seen = None
    read_before = _io_read_bytes()
    start = time.perf_counter()
    if args.contender == "cold-sequential":
        nbytes = read_files(shard_files(work))
        examples = nbytes // ROW_BYTES  # for the table only: this reader decodes nothing
    elif args.contender == "memmap":
        x = np.load(work / "x.npy", mmap_mode="r")
        order = np.random.default_rng(0).permutation(len(x))
        examples = 0
        for i in range(0, len(x), BATCH):
            batch = x[np.sort(order[i : i + BATCH])]  # sorted: the kindest gather order
            examples += len(batch)
            if time.perf_counter() > deadline:
                break
        nbytes = examples * ROW_BYTES
    else:
        import tensorflow as tf

        if args.contender == "seed":
            ds = seed_dataset(sorted(glob.glob(str(work / "seed" / "*.tfrecords"))))
        else:
            import tensorflow_datasets as tfds  # tfds_bigarrays from PYTHONPATH

            import tfds_bigarrays as tb

            access = {"ours-mapped": "mapped", "ours-sequential": "sequential"}.get(
                args.contender, "auto"
            )
            # ours-rows: rows dealt among batches although the split is bigger than RAM.
            # (Only then is mixing= passed: a baseline checkout may predate it.)
            extra = {"mixing": "rows"} if args.contender == "ours-rows" else {}
            with tb.read_options(access=access, **extra):
                ds = tfds.load(
                    "btr",
                    data_dir=work / "ours",
                    split="train",
                    shuffle_files=True,
                    batch_size=BATCH,
                    as_supervised=True,
                )
        rows = len(np.load(work / "y.npy", mmap_mode="r"))
        seen = np.zeros(rows, np.int32)
        start = time.perf_counter()  # TensorFlow's start-up is not the reader's
        # Nor are the libraries it read from the (dropped) page cache.
        read_before = _io_read_bytes()
        examples = 0
        for _, y in ds:
            labels = y.numpy().astype(np.int64)
            np.add.at(seen, labels, 1)
            examples += len(labels)
            if time.perf_counter() > deadline:
                break
        del tf
        nbytes = examples * ROW_BYTES
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    exactly_once = None
    if seen is not None and examples == len(seen):
        exactly_once = bool((seen == 1).all())
    emit(
        {
            "examples": int(examples),
            "seconds": seconds,
            "mb_per_s": nbytes / 1e6 / seconds,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "device_read_bytes": _io_read_bytes() - read_before,
            "time_boxed": time.perf_counter() > deadline,
            "exactly_once": exactly_once,
        }
    )


def _median(runs: list[dict]) -> dict:
    """The run of median speed (a failed run, if any failed)."""
    failed = [r for r in runs if "failed" in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["mb_per_s"])
    return dict(ordered[len(ordered) // 2], rounds=len(runs))


def run_in_cgroup(cgroup: MemoryCgroup, *args: str, timeout: float, pythonpath: str) -> dict:
    import json

    try:
        proc = subprocess.run(
            [sys.executable, str(HERE), "--child", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": pythonpath},
            timeout=timeout,
            preexec_fn=cgroup.join,
        )
    except (subprocess.SubprocessError, OSError) as e:  # could not join, or timed out
        return {"failed": f"{type(e).__name__}: {e}"}
    if proc.returncode != 0:
        return {"failed": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


# ---------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender")
    parser.add_argument("--work", default="/tmp/tfds_bigarrays_bigger_than_ram")
    parser.add_argument("--gb", type=float, default=7.0, help="dataset size (default 7)")
    parser.add_argument("--limit-mb", type=int, default=2048, help="cgroup limit (default 2048)")
    parser.add_argument("--max-seconds", type=float, default=240, help="time box per reader")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=3, help="contenders in turn, medians shown")
    parser.add_argument(
        "--baseline",
        help="a checkout of another commit (its native parts built): its ours and "
        "ours-mapped run too, as ours@baseline, side by side",
    )
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument(
        "--prepare-only", action="store_true", help="write the data, measure nothing"
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if os.geteuid() != 0:
        print("skipped: needs root for memory cgroups and drop_caches")
        return
    limit = args.limit_mb << 20
    rows = int(args.gb * 1e9 / ROW_BYTES)
    if rows * ROW_BYTES < 3 * limit:
        parser.error(f"--gb {args.gb} is under 3x --limit-mb {args.limit_mb}: not bigger than RAM")
    work = pathlib.Path(args.work)
    prepare(work, rows)
    if args.prepare_only:
        return
    if not drop_page_cache():
        print("skipped: cannot drop the page cache (/proc/sys/vm/drop_caches)")
        return
    try:
        cgroup = MemoryCgroup("tfds_bigarrays_bench", limit)
    except OSError as e:
        print(f"skipped: no memory cgroup ({e})")
        return
    contenders = args.contenders.split(",")
    if args.baseline:
        contenders += ["ours@baseline", "ours-mapped@baseline"]
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    try:
        for round_ in range(args.rounds):
            for contender in contenders:
                if contender == "memmap" and round_:
                    continue  # thrashes for its whole time box: once is enough
                name, _, at = contender.partition("@")
                drop_page_cache()
                cgroup.reset_peak()
                r = run_in_cgroup(
                    cgroup, "--contender", name, "--work", str(work),
                    "--max-seconds", str(args.max_seconds), timeout=args.max_seconds + 600,
                    pythonpath=args.baseline if at else str(ROOT),
                )  # fmt: skip
                if "failed" not in r:
                    r["cgroup_peak"] = cgroup.peak()
                runs[contender].append(r)
                print(f"  round {round_ + 1} {contender:20s} {r}", flush=True)
    finally:
        cgroup.remove()
    results = {c: _median(rs) for c, rs in runs.items() if rs}
    disk = results.get("cold-sequential", {}).get("mb_per_s")
    shards = shard_files(work)
    data_gb = sum(os.path.getsize(p) for p in shards) / 1e9
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}; command: "
        f"`.venv/bin/python benchmarks/bigger_than_ram.py --gb {args.gb:g} "
        f"--limit-mb {args.limit_mb}`. {rows:,} rows of 64x64 float32 plus a float32 label "
        f"({data_gb:.2f} GB of shards), each reader alone in a memory cgroup limited to "
        f"{args.limit_mb} MiB (page cache charged), page cache dropped before each, one "
        f"shuffled epoch; {os.cpu_count()} cores. Each reader ran {args.rounds} times, in turn "
        "with the others; the row is its median run (memmap: once). `read from device` is "
        "/proc/self/io read_bytes during the epoch. `@baseline`: the same readers from "
        f"{args.baseline or '(none)'}.",
        "",
        "| reader | examples/s | MB/s | vs cold sequential | CPU us/example | "
        "read from device | cgroup peak | exactly once |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for contender, r in results.items():
        if "failed" in r:
            lines.append(f"| {contender} | failed: {r['failed']} | | | | | | |")
            continue
        ratio = f"{r['mb_per_s'] / disk:.2f}x" if disk else "?"
        note = " (time-boxed)" if r["time_boxed"] else ""
        once = {True: "yes", False: "**no**", None: "n/a"}[r["exactly_once"]]
        per_example = r["cpu_s"] / max(r["examples"], 1) * 1e6
        lines.append(
            f"| {contender}{note} | {r['examples'] / r['seconds']:,.0f} | {r['mb_per_s']:,.0f} | "
            f"{ratio} | {per_example:.1f} | {r['device_read_bytes'] / 1e9:.2f} GB | "
            f"{r['cgroup_peak'] / 2**20:,.0f} MiB | {once} |"
        )
    write_report(args.docs, "bigger_than_ram.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

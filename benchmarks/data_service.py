"""tf.data service benchmark: examples/s reading locally vs through 1 and 2 workers.

The same dataset (rows of 64x64 float32 and of 32 float32, shuffled, batch
256, as_supervised) is read by a trainer process:
  local      tfds.load in the trainer (reading and decoding on its CPUs)
  service N  `tfds-bigarrays data-service` dispatcher + N workers, each worker
             pinned to its own core with taskset; the trainer only receives
             decoded groups, rebatches and prefetches.

On a machine of 2 cores the trainer and the workers share the same CPUs, so
this measures the service's overhead and how decoding scales with workers,
not the gain of offloading to other machines.

    .venv/bin/python benchmarks/data_service.py   # writes docs/data_service_benchmark.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import emit, peak_rss_bytes, run_child, time_epochs, write_report  # noqa: E402

HERE = pathlib.Path(__file__).resolve()
ROOT = HERE.parent.parent
CLI = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
KINDS = {"image": ((64, 64), 40_000), "small": ((32,), 2_000_000)}


def child(args) -> None:
    import tensorflow_datasets as tfds

    import tfds_bigarrays as tb

    service = args.service or None
    with tb.read_options(data_service=service):
        ds = tfds.load(
            args.kind,
            data_dir=args.data_dir,
            split="train",
            batch_size=256,
            shuffle_files=True,
            as_supervised=True,
        )
    before = os.times()
    rate, count = time_epochs(ds, epochs=2)
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    emit(
        {
            "examples_per_s": rate,
            "examples": count,
            "peak_rss": peak_rss_bytes(),
            "trainer_cpu_per_million": cpu / count * 1e6,
        }
    )


def build(data_dir: pathlib.Path) -> None:
    import tfds_bigarrays as tb

    rng = np.random.default_rng(0)
    for kind, (shape, rows) in KINDS.items():
        if (data_dir / kind).exists():
            continue
        x = rng.standard_normal((rows, *shape), dtype=np.float32)
        y = rng.integers(0, 10, rows).astype(np.int64)
        tb.build(
            kind, data_dir=data_dir, splits={"train": {"x": x, "y": y}}, supervised_keys=("x", "y")
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def service(workers: int, logdir: pathlib.Path):
    port = _free_port()
    procs = []

    def start(*args: str, cpu: int | None, log: str) -> None:
        prefix = ["taskset", "-c", str(cpu)] if cpu is not None else []
        procs.append(
            subprocess.Popen(
                [*prefix, str(CLI), "data-service", *args],
                stdout=open(logdir / log, "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        start("dispatcher", "--port", str(port), cpu=None, log="dispatcher.log")
        cores = sorted(os.sched_getaffinity(0))
        for i in range(workers):
            worker_args = ("worker", "--dispatcher", f"localhost:{port}")
            start(*worker_args, cpu=cores[i % len(cores)], log=f"worker{i}.log")
        deadline = time.monotonic() + 120
        while (
            sum("worker of" in (logdir / f"worker{i}.log").read_text() for i in range(workers))
            < workers
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("tf.data service workers did not start; see " + str(logdir))
            time.sleep(0.2)
        yield f"grpc://localhost:{port}"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind")
    parser.add_argument("--service", default="")
    parser.add_argument("--data-dir", default="/tmp/tfds_bigarrays_service_bench")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    data_dir = pathlib.Path(args.data_dir)
    build(data_dir)
    logdir = data_dir / "logs"
    logdir.mkdir(exist_ok=True)

    def run(kind: str, address: str = "") -> dict:
        extra = ["--service", address] if address else []
        return run_child(str(HERE), "--kind", kind, "--data-dir", str(data_dir), *extra)

    results: dict[tuple[str, str], dict] = {}
    for kind in KINDS:
        results[kind, "local"] = run(kind)
        for workers in (1, 2):
            with service(workers, logdir) as address:
                results[kind, f"service {workers}"] = run(kind, address)
        for how in ("local", "service 1", "service 2"):
            r = results[kind, how]
            print(f"  {kind:6s} {how:10s} {r['examples_per_s']:10.0f} ex/s", flush=True)

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on a {os.cpu_count()}-core machine; command: "
        "`.venv/bin/python benchmarks/data_service.py`. Two shuffled epochs, batch 256, "
        "as_supervised; service workers each pinned to one core (taskset), dispatcher and "
        "workers on 127.0.0.1.",
        "",
        "| rows | read | examples/s | vs local | trainer CPU s per 1M examples | trainer peak RSS |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for kind, ((shape, rows)) in KINDS.items():
        local = results[kind, "local"]["examples_per_s"]
        for how in ("local", "service 1", "service 2"):
            r = results[kind, how]
            what = (
                "tfds.load in the trainer"
                if how == "local"
                else f"tf.data service, {how[-1]} worker(s)"
            )
            lines.append(
                f"| {rows} x {'x'.join(map(str, shape))} float32 | {what} | "
                f"{r['examples_per_s']:,.0f} | {r['examples_per_s'] / local:.2f}x | "
                f"{r['trainer_cpu_per_million']:.1f} | {r['peak_rss'] / 1e9:.2f} GB |"
            )
    lines.append("")
    for kind in KINDS:
        one = results[kind, "service 1"]["examples_per_s"]
        two = results[kind, "service 2"]["examples_per_s"]
        cpu_local = results[kind, "local"]["trainer_cpu_per_million"]
        cpu_two = results[kind, "service 2"]["trainer_cpu_per_million"]
        lines.append(
            f"- {kind}: 2 service workers vs 1: {two / one:.2f}x; trainer CPU through the "
            f"service vs local: {cpu_two / cpu_local:.2f}x"
        )
    write_report(args.docs, "data_service_benchmark.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

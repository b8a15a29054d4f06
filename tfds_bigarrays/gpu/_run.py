"""Run unmodified training scripts under a GPU memory cap.

`python -m tfds_bigarrays.gpu --memory-limit MB script.py ARGS` applies the
cap, then runs the script as `__main__` (as `python -m cProfile` does), with
its own argv and exit status. `run_many` starts several such processes with
planned caps, streams their output with a prefix, and reports each one's exit
status and peak TensorFlow memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

from tfds_bigarrays import _env
from tfds_bigarrays.gpu._config import ENV_DEVICE, ENV_MEMORY_MB, GpuConfigError, limit_memory
from tfds_bigarrays.gpu._devices import device_api
from tfds_bigarrays.gpu._plan import GpuPlanError

ENV_REPORT = _env.GPU_REPORT.name
ENV_INDEX = _env.MODEL_INDEX.name


def _write_report() -> None:
    path = _env.get(_env.GPU_REPORT)
    if not path:
        return
    peaks = {}
    for device in device_api().physical_devices("GPU"):
        peaks[device.name] = device_api().peak_memory_bytes(device)
    try:
        with open(path, "w") as f:
            json.dump({"peak_bytes": peaks}, f)
    except FileNotFoundError:
        # The runner that asked for the report was interrupted and took its
        # folder with it: nobody is left to read the report.
        pass


def wrapper_main(argv: Sequence[str] | None = None) -> int:
    """`python -m tfds_bigarrays.gpu`: cap GPU memory, then run a script."""
    parser = argparse.ArgumentParser(
        prog="python -m tfds_bigarrays.gpu",
        description="Cap TensorFlow's GPU memory, then run SCRIPT (or -m MODULE) as __main__. "
        f"The cap defaults to ${ENV_MEMORY_MB}.",
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        metavar="MB",
        help=f"memory cap per GPU in MB (default: ${ENV_MEMORY_MB})",
    )
    parser.add_argument(
        "--device",
        type=int,
        action="append",
        metavar="N",
        help=f"GPU index to cap (repeatable; default: all, or ${ENV_DEVICE})",
    )
    parser.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m")
    parser.add_argument("target", nargs="?", metavar="SCRIPT", help="the script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    ns = parser.parse_args(argv)
    if ns.module and ns.target:
        ns.args = [ns.target, *ns.args]
    if not ns.module and not ns.target:
        parser.error("give a SCRIPT or -m MODULE to run")
    try:
        limit_memory(ns.memory_limit, devices=ns.device)
    except GpuConfigError as e:
        print(f"python -m tfds_bigarrays.gpu: error: {e}", file=sys.stderr)
        return 2
    code = 0
    try:
        if ns.module:
            sys.argv = [ns.module, *ns.args]
            runpy.run_module(ns.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = [ns.target, *ns.args]
            sys.path[0] = os.path.dirname(os.path.abspath(ns.target))
            runpy.run_path(ns.target, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    finally:
        _write_report()
    return code


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessResult:
    index: int
    command: tuple[str, ...]
    cap_mb: int
    returncode: int
    peak_bytes: dict[str, int | None]


def _wrap(command: Sequence[str]) -> list[str]:
    """Puts Python commands under the wrapper; other commands get the env var only."""
    exe = os.path.basename(command[0])
    if exe.startswith("python"):
        return [command[0], "-m", "tfds_bigarrays.gpu", *command[1:]]
    if command[0].endswith(".py"):
        return [sys.executable, "-m", "tfds_bigarrays.gpu", *command]
    return list(command)


def run_many(commands: Sequence[Sequence[str]], *, cap_mb: int, stream=None) -> list[ProcessResult]:
    """Starts every command with a cap of `cap_mb`, streams prefixed output, waits."""
    stream = stream or sys.stdout
    # Every program is checked before the first starts: none is left running
    # because a later one is missing.
    for command in commands:
        program = command[0] if command else ""
        if program.endswith(".py"):  # run by this Python (above)
            if not os.path.isfile(program):
                raise GpuPlanError(
                    f"script {program!r} does not exist; give a script that does after --, "
                    "e.g. -- python train.py."
                )
            continue
        found = (
            shutil.which(program)
            if os.sep not in program
            else (program if os.path.isfile(program) and os.access(program, os.X_OK) else None)
        )
        if not found:
            raise GpuPlanError(
                f"command {program!r} is not an executable program (not found on PATH); "
                "give one after --, e.g. -- python train.py."
            )
    lock = threading.Lock()
    # Each process reports its peak memory into this folder; it goes with the run.
    with tempfile.TemporaryDirectory(prefix="tfds_bigarrays_gpu_") as tmp:
        procs = []
        for i, command in enumerate(commands):
            env = {
                **os.environ,
                ENV_MEMORY_MB: str(cap_mb),
                ENV_INDEX: str(i),
                ENV_REPORT: os.path.join(tmp, f"{i}.json"),
                "PYTHONUNBUFFERED": "1",
            }
            proc = subprocess.Popen(
                _wrap(command),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            procs.append(proc)

        def pump(i: int, proc: subprocess.Popen) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                with lock:
                    stream.write(f"[{i}] {line}")
                    stream.flush()

        threads = [
            threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)
        ]
        for t in threads:
            t.start()
        results = []
        for i, (proc, t) in enumerate(zip(procs, threads, strict=True)):
            code = proc.wait()
            t.join()
            peaks: dict[str, int | None] = {}
            report = os.path.join(tmp, f"{i}.json")
            if os.path.exists(report):
                with open(report) as f:
                    peaks = json.load(f)["peak_bytes"]
            results.append(
                ProcessResult(
                    index=i,
                    command=tuple(commands[i]),
                    cap_mb=cap_mb,
                    returncode=code,
                    peak_bytes=peaks,
                )
            )
    return results

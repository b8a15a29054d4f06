"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

# Runs a command as root without capabilities (util-linux's setpriv): a reader
# of the files `given_away` gives to another user, as that user would read them.
# Unlike a switch to that user, the interpreter and its venv stay readable.
WITHOUT_CAPABILITIES = ("setpriv", "--bounding-set", "-all", "--inh-caps", "-all")


@contextlib.contextmanager
def given_away(files: Iterable[os.PathLike | str]) -> Iterator[None]:
    """Gives `files` to nobody, read-only, while the block runs (needs root).

    A team's shared dataset, for a reader under `WITHOUT_CAPABILITIES`.
    """
    was = {name: os.stat(name) for name in files}
    try:
        for name in was:
            os.chown(name, 65534, 65534)
            os.chmod(name, 0o444)
        yield
    finally:
        for name, st in was.items():
            os.chown(name, st.st_uid, st.st_gid)
            os.chmod(name, st.st_mode & 0o7777)


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM).

    Not getrusage's ru_maxrss: on Linux that survives fork and exec, so a
    child would report its parent's peak if it was higher.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(
    script: str,
    *args: str,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> dict:
    """Runs `script --child ARGS` in a fresh interpreter; returns its RESULT json.

    `prefix`: a command that runs the interpreter, such as `WITHOUT_CAPABILITIES`.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run(
        [*prefix, sys.executable, script, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {args} failed:\n{proc.stderr[-4000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def time_epochs(ds, *, epochs: int, warmup_batches: int = 20) -> tuple[float, int]:
    """Examples/s over `epochs` full passes, after a short warm-up."""
    for i, _ in enumerate(ds):
        if i >= warmup_batches:
            break
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in ds:
            first = batch[0] if isinstance(batch, tuple) else batch
            count += int(first.shape[0])
    return count / (time.perf_counter() - start), count


def measure_epochs(ds, *, min_epochs: int, min_seconds: float, warmup_batches: int = 20) -> dict:
    """Examples/s and CPU per example over whole epochs, after a short warm-up.

    Runs at least `min_epochs` epochs and goes on, epoch by epoch, until
    `min_seconds` have passed: a 0.1 s measurement on a shared 2-core
    machine is mostly noise. CPU time (user + system, all threads) per
    example is reported too: it does not count the time other tenants take.
    """
    if warmup_batches:
        for i, _ in enumerate(ds):
            if i >= warmup_batches:
                break
    count = epochs = 0
    cpu0 = sum(os.times()[:2])
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    while epochs < min_epochs or time.perf_counter() - start < min_seconds:
        for batch in ds:
            first = batch[0] if isinstance(batch, tuple) else batch
            count += int(first.shape[0])
        epochs += 1
    wall = time.perf_counter() - start
    cpu = sum(os.times()[:2]) - cpu0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    return {
        # Page faults (first touches of fresh memory, mostly) per example.
        "faults_per_example": faults / count,
        "examples_per_s": count / wall,
        "examples": count,
        "epochs": epochs,
        "cpu_us_per_example": cpu / count * 1e6,
    }


def write_npy_chunked(
    path,
    *,
    rows: int,
    row_shape: tuple[int, ...],
    seed: int,
    dtype=np.float32,
    chunk_bytes: int = 64 << 20,
) -> None:
    """A random .npy file of `rows` rows, written without holding it whole."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, *row_shape))
    row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
    step = max(1, chunk_bytes // row_bytes)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        out[start:stop] = rng.standard_normal((stop - start, *row_shape), dtype=np.float32)
        out.flush()
    del out


def read_files(paths, *, buffer_bytes: int = 16 << 20) -> int:
    """Reads files front to back in big unbuffered reads; returns the bytes read.

    After the page cache is dropped, this is the cold sequential bandwidth
    the readers are compared with.
    """
    nbytes = 0
    buffer = bytearray(buffer_bytes)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                nbytes += n
    return nbytes


def evict_files(paths) -> None:
    """Drops the files' pages from the page cache (written first; no root needed)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def huge_cached_bytes(path) -> int:
    """Bytes of file `path` that the page cache holds in huge (2 MiB) folios.

    Maps the file at a 2 MiB boundary and touches every page (all must be
    cached: a touch of a missing page would read it): the kernel maps a huge
    folio whole (FilePmdMapped in /proc/self/smaps), 4 KiB pages one by one.
    Per file, unlike /proc/meminfo's machine-wide FileHugePages.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    piece, size = 2 << 20, os.path.getsize(path)
    span = size + piece
    area = libc.mmap(None, span, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS
    assert area not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    at = -(-area // piece) * piece
    fd = os.open(path, os.O_RDONLY)
    try:
        got = libc.mmap(at, size, 1, 0x11, fd, 0)  # PROT_READ, MAP_SHARED | MAP_FIXED
        assert got == at, os.strerror(ctypes.get_errno())
        libc.madvise(at, size, 14)  # MADV_HUGEPAGE
        for offset in range(0, size, 4096):
            ctypes.string_at(at + offset, 1)
        with open("/proc/self/smaps") as f:
            smaps = f.read()
        vma = smaps[smaps.index(f"{at:x}-") :]
        return int(vma[vma.index("FilePmdMapped:") :].split()[1]) << 10
    finally:
        libc.munmap(area, span)
        os.close(fd)


def memcpy_bytes_per_s(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """One core's memcpy bandwidth: the best of `repeats` copies of `nbytes`."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)  # touched by the first copy, timed in the others
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def build_ours(name: str, *, src, data_dir) -> None:
    """Builds src/x.npy and src/y.npy with tfds_bigarrays into `data_dir`, anew.

    Supervised as (x, y), as every read benchmark loads it.
    """
    import shutil

    import tfds_bigarrays as tb

    shutil.rmtree(data_dir, ignore_errors=True)
    tb.build(
        name,
        data_dir=data_dir,
        splits={"train": {"x": src / "x.npy", "y": src / "y.npy"}},
        supervised_keys=("x", "y"),
    )


def write_report(directory, filename: str, text: str) -> None:
    """Writes a benchmark's markdown table under `directory` and prints it."""
    import pathlib

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / filename).write_text(text)
    print(text)

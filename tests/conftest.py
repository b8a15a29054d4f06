"""Shared fixtures: tiny arrays, one small dataset built once per session."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT


def run_python(
    code: str, *, env: dict[str, str] | None = None, cwd=None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter of this venv."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `python -m module args...` in a fresh interpreter of this venv."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_tfds_build(folder, *, manual_dir, data_dir, extra=()) -> subprocess.CompletedProcess:
    """Runs the stock `tfds build` CLI on a dataset folder."""
    exe = pathlib.Path(sys.executable).parent / "tfds"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [
            str(exe),
            "build",
            str(folder),
            "--manual_dir",
            str(manual_dir),
            "--data_dir",
            str(data_dir),
            "--noforce_checksums_validation",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def run_cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the installed `tfds-bigarrays` console script."""
    exe = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def random_rows(dtype, shape, n, rng):
    dtype = np.dtype(dtype)
    raw = rng.integers(
        0, 256, size=n * int(np.prod(shape, dtype=int)) * dtype.itemsize, dtype=np.uint8
    )
    if dtype == np.bool_:
        raw = raw % 2
    return raw.view(dtype).reshape((n, *shape))


@pytest.fixture(scope="session")
def small_arrays(tmp_path_factory) -> dict[str, np.ndarray | pathlib.Path]:
    """A learnable task of 3000 train and 500 validation rows, saved as .npy."""
    d = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(7)
    out: dict = {}
    for split, n in (("train", 3000), ("validation", 500)):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        y = (x.sum(axis=1) > 0).astype(np.int64)
        np.save(d / f"x_{split}.npy", x)
        np.save(d / f"y_{split}.npy", y)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    out["dir"] = d
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, small_arrays):
    """`small` built once, in several shards, with supervised keys (x, y)."""
    import tfds_bigarrays as tb

    data_dir = tmp_path_factory.mktemp("tfds")
    d = small_arrays["dir"]
    builder = tb.build(
        "small",
        data_dir=data_dir,
        splits={
            "train": {"x": d / "x_train.npy", "y": d / "y_train.npy"},
            "validation": {"x": d / "x_validation.npy", "y": d / "y_validation.npy"},
        },
        supervised_keys=("x", "y"),
        shard_bytes=20_000,  # several shards of a few hundred rows
    )
    return {"data_dir": data_dir, "builder": builder, **small_arrays}


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase (base of tfds.testing.DatasetBuilderTestCase) carries a
    # `test_session` helper that is not a test; drop it rather than report a skip.
    items[:] = [item for item in items if item.name != "test_session"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_groups(procs: list[subprocess.Popen], *, timeout: float = 30) -> None:
    """SIGTERM to each server's process group (started with
    start_new_session=True), then SIGKILL to those still running."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def tmpfs(path: pathlib.Path, *, size: str = "1m", read_only: bool = False):
    """A real tmpfs mounted at `path` (a small disk, or a read-only one); needs root."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {e}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def http_server(tmp_path):
    """A static HTTP server on 127.0.0.1: (its folder, its base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args, **kwargs) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def needs(module: str):
    """Skips without the extra `module`; in CI (TFDS_BIGARRAYS_REQUIRE_EXTRAS) fails instead."""
    missing = importlib.util.find_spec(module) is None
    if missing and os.environ.get("TFDS_BIGARRAYS_REQUIRE_EXTRAS"):  # set by .ci/run
        raise RuntimeError(f"CI must install the {module} extra (make install does).")
    return pytest.mark.skipif(
        missing,
        reason=f"{module} is not installed (pip install 'tfds-bigarrays[{module}]'; CI installs it)",
    )

"""Builds on a real Dask cluster (scheduler + 2 workers on 127.0.0.1) via Beam."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import distributed
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT, free_port, run_cli, run_tfds_build, stop_process_groups

import tfds_bigarrays as tb

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
BIN = pathlib.Path(sys.executable).parent


@contextlib.contextmanager
def dask_cluster(workdir: pathlib.Path, *, workers: int = 2, allowed_failures: int = 3):
    """A `dask scheduler` and `workers` `dask worker` processes on 127.0.0.1.

    Each worker is a nanny plus one single-threaded worker process; the nanny
    restarts a worker that dies. Yields (address, client).
    """
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "build"), str(ROOT)]),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    procs = []
    logs = []

    def start(*args: str, name: str) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        )

    start("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
          "--no-dashboard", name="scheduler")  # fmt: skip
    client = None
    try:
        for i in range(workers):
            start("worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                  "--no-dashboard", "--name", f"w{i}", name=f"worker{i}")  # fmt: skip
        client = distributed.Client(address, timeout=60)
        client.wait_for_workers(workers, timeout=120)
        yield address, client
    finally:
        if client is not None:
            client.close()
        stop_process_groups(procs)
        for log in logs:
            log.close()


def _worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def _shards(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir() if ".tfrecord-" in p.name)


def _receipts(directory: pathlib.Path) -> dict:
    return json.loads((directory / "tfds_bigarrays.json").read_text())["provenance"]["shards"]


def _assert_same_shards(a: pathlib.Path, b: pathlib.Path) -> None:
    sa, sb = _shards(a), _shards(b)
    assert [p.name for p in sa] == [p.name for p in sb] and sa
    for p, q in zip(sa, sb, strict=True):
        assert p.read_bytes() == q.read_bytes(), f"{q.name} differs from the local build"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with dask_cluster(tmp_path_factory.mktemp("dask")) as running:
        yield running


def test_cli_build_on_dask_matches_local_and_uses_both_workers(cluster, tmp_path):
    address, client = cluster
    rng = np.random.default_rng(8)
    np.save(tmp_path / "x.npy", rng.normal(size=(12_000, 8)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 12_000).astype(np.int64))
    splits = {"train": {"x": tmp_path / "x.npy", "y": tmp_path / "y.npy"}}
    local = tb.build("spread", data_dir=tmp_path / "local", splits=splits, shard_bytes=40_000)
    proc = run_cli(
        "build", "spread", "--data-dir", str(tmp_path / "dask"),
        "--split", f"train:x={tmp_path / 'x.npy'},y={tmp_path / 'y.npy'}",
        "--shard-size", "40000",
        "--beam-options", f"runner={DASK_RUNNER},dask_client_address={address}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = tmp_path / "dask" / "spread" / "1.0.0"
    _assert_same_shards(local.data_path, built)
    # Every shard has a receipt from a worker process of the cluster, and
    # both workers wrote some.
    receipts = _receipts(built)["train"]
    assert len(receipts) == len(_shards(built)) > 10
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in receipts}
    assert pids <= _worker_pids(client) and len(pids) == 2, receipts
    assert not any(".incomplete" in p.name or p.name.endswith(".json.tmp") for p in built.iterdir())
    # Stored order, example for example, read back through tfds.load.
    ds = tfds.load("spread", data_dir=tmp_path / "dask", split="train", batch_size=4000)
    got = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
    np.testing.assert_array_equal(got, np.load(tmp_path / "x.npy"))


def test_stock_tfds_build_on_dask_matches_local(cluster, tmp_path):
    address, _ = cluster
    folder = ROOT / "examples" / "toy_arrays"
    manual = ROOT / "dummy_data" / "toy_arrays"
    for data_dir, extra in [
        (tmp_path / "local", ()),
        (tmp_path / "dask", (f"--beam_pipeline_options=runner={DASK_RUNNER},"
                             f"dask_client_address={address}",)),
    ]:  # fmt: skip
        proc = run_tfds_build(folder, manual_dir=manual, data_dir=data_dir, extra=extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_shards(tmp_path / "local/toy_arrays/1.0.0", tmp_path / "dask/toy_arrays/1.0.0")


@pytest.mark.parametrize("allowed_failures", [3, 0], ids=["engine-retries", "build-fails"])
def test_worker_killed_mid_shard(tmp_path, allowed_failures):
    """kill -9 of the worker writing a shard: Dask retries it, or the build
    fails; either way no partial shard is loadable and a rerun completes."""
    from _gated_source import GatedSource  # tests/ is on sys.path via conftest

    rng = np.random.default_rng(allowed_failures)
    x = rng.normal(size=(6000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (gate := tmp_path / "gate").mkdir()
    splits = {"train": {"x": GatedSource(x, gate)}}
    data_dir = tmp_path / "data"
    with dask_cluster(tmp_path, allowed_failures=allowed_failures) as (address, client):
        before = _worker_pids(client)
        options = f"runner={DASK_RUNNER},dask_client_address={address}"
        build = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BUILD,
                str(tmp_path / "x.npy"),
                str(gate),
                str(data_dir),
                options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "build"), str(ROOT)])},
        )
        deadline = time.monotonic() + 120
        while not (gate / "claimed").exists() or not (gate / "claimed").read_text():
            assert time.monotonic() < deadline and build.poll() is None, build.communicate()
            time.sleep(0.05)
        victim = int((gate / "claimed").read_text())
        assert victim in before
        os.kill(victim, signal.SIGKILL)
        (gate / "open").touch()
        out, err = build.communicate(timeout=300)
        if allowed_failures:
            assert build.returncode == 0, err[-3000:]
        else:
            assert build.returncode != 0 and "KilledWorker" in err, err[-3000:]
            # Nothing loadable, nothing half-written left behind.
            leftovers = list(data_dir.rglob("*")) if data_dir.exists() else []
            assert not [p for p in leftovers if p.is_file()], leftovers
            with pytest.raises(Exception, match="spread"):
                tfds.builder("spread", data_dir=data_dir)
            rerun = tb.build(
                "spread", data_dir=data_dir, splits=splits, shard_bytes=20_000,
                beam_options=options,
            )  # fmt: skip
            assert rerun.info.splits["train"].num_examples == len(x)
    built = data_dir / "spread" / "1.0.0"
    assert not any(".incomplete" in p.name for p in built.iterdir())
    ds = tfds.load("spread", data_dir=data_dir, split="train", batch_size=len(x))
    np.testing.assert_array_equal(next(iter(tfds.as_numpy(ds)))["x"], x)
    assert victim not in {int(r["worker"].rsplit(":", 1)[1]) for r in _receipts(built)["train"]}


_BUILD = """
import sys
import numpy as np
import tfds_bigarrays as tb
from _gated_source import GatedSource
x, gate, data_dir, options = sys.argv[1:]
splits = {"train": {"x": GatedSource(np.load(x), gate)}}
tb.build("spread", data_dir=data_dir, splits=splits, shard_bytes=20_000, beam_options=options)
"""


# -- Zarr stores and Dask arrays, written where the cluster is (issue #18)
def test_zarr_store_built_on_dask_with_the_cli_matches_local(cluster, tmp_path):
    import zarr

    address, client = cluster
    rng = np.random.default_rng(18)
    x = rng.normal(size=(12_000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(700, 8), dtype=x.dtype)[:] = x
    local = tb.build(
        "zarred", data_dir=tmp_path / "local", splits={"train": {"x": tmp_path / "x.npy"}},
        shard_bytes=40_000,
    )  # fmt: skip
    proc = run_cli(
        "build", "zarred", "--data-dir", str(tmp_path / "dask"), "--shard-size", "40000",
        "--split", f"train:x={tmp_path / 'x.zarr'}", "--dask", address,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = tmp_path / "dask" / "zarred" / "1.0.0"
    _assert_same_shards(local.data_path, built)
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in _receipts(built)["train"]}
    assert pids <= _worker_pids(client) and len(pids) == 2


_LAZY_BUILD = """
import sys
import dask.array as da
import tfds_bigarrays as tb
rows, address, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# Defined here, computed nowhere here: each chunk is made by the worker writing it.
x = da.random.default_rng(3).random((rows, 1024), chunks=(4096, 1024), dtype="float32")
b = tb.build("lazy", data_dir=data_dir, splits={"train": {"x": x}}, dask=address,
             shard_bytes=64 << 20)
status = open("/proc/self/status").read()
peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
print(b.info.splits["train"].num_examples, x.nbytes, peak * 1024)
"""


def test_a_dask_array_bigger_than_the_client_budget_is_written_by_the_workers(cluster, tmp_path):
    address, client = cluster
    rows = 400_000  # 1.6 GB of float32, never held by the client
    proc = subprocess.run(
        [sys.executable, "-c", _LAZY_BUILD, str(rows), address, str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    examples, nbytes, peak = (int(v) for v in proc.stdout.split()[-3:])
    assert examples == rows
    assert peak < nbytes / 3, f"client peak RSS {peak / 1e9:.2f} GB for a {nbytes / 1e9:.1f} GB array"
    built = tmp_path / "d" / "lazy" / "1.0.0"
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in _receipts(built)["train"]}
    assert pids <= _worker_pids(client) and len(pids) == 2
    # The values are the ones the array defines (a chunk recomputed here).
    import dask.array as da

    ds = tfds.load("lazy", data_dir=tmp_path / "d", split="train[4096:8192]", batch_size=-1)
    want = da.random.default_rng(3).random((rows, 1024), chunks=(4096, 1024), dtype="float32")
    np.testing.assert_array_equal(ds["x"].numpy(), want[4096:8192].compute())

"""Reading through a tf.data service: dispatcher + 2 workers, separate processes."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import free_port, stop_process_groups

import tfds_bigarrays as tb

CLI = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
N = 6000


def _start(*args: str, log: pathlib.Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(
        [str(CLI), "data-service", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_for(log: pathlib.Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


@contextlib.contextmanager
def data_service(workdir: pathlib.Path, *, workers: int):
    """`tfds-bigarrays data-service` dispatcher + workers; yields the address."""
    port = free_port()
    procs = [_start("dispatcher", "--port", str(port), log=workdir / "dispatcher.log")]
    try:
        _wait_for(workdir / "dispatcher.log", "dispatcher at", procs[0])
        for i in range(workers):
            log = workdir / f"worker{i}.log"
            procs.append(_start("worker", "--dispatcher", f"localhost:{port}", log=log))
            _wait_for(log, "worker of", procs[-1])
        yield f"grpc://localhost:{port}"
    finally:
        stop_process_groups(procs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    x = np.arange(N * 3, dtype=np.int64).reshape(N, 3)
    y = (np.arange(N) % 7).astype(np.int32)
    tb.build(
        "served",
        data_dir=root / "data",
        splits={"train": {"x": x, "y": y}},
        supervised_keys=("x", "y"),
        shard_bytes=20_000,
    )
    with data_service(root, workers=2) as address:
        yield address, root / "data", x, y


def _load(data_dir, address, **kwargs):
    options = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("data_service")}
    with tb.read_options(data_service=address, **options):
        return tfds.load("served", data_dir=data_dir, split="train", **kwargs)


def test_distributed_epoch_gives_each_example_exactly_once_per_epoch(served):
    address, data_dir, x, y = served
    ds = _load(data_dir, address, batch_size=256, shuffle_files=True, as_supervised=True)
    assert ds.cardinality().numpy() == -(-N // 256)
    epochs = []
    for _ in range(2):
        batches = list(tfds.as_numpy(ds))
        assert [len(b[0]) for b in batches[:-1]] == [256] * (len(batches) - 1)
        xs = np.concatenate([b[0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        assert len(xs) == N
        assert np.array_equal(np.sort(xs[:, 0]), x[:, 0]), "an example was lost or repeated"
        np.testing.assert_array_equal(ys, y[xs[:, 0] // 3])  # labels stay with inputs
        epochs.append(xs[:, 0])
    assert not np.array_equal(epochs[0], epochs[1]), "epochs came in the same order"


def test_parallel_epochs_serves_the_split_once_per_worker(served):
    address, data_dir, x, _ = served
    read_config = tfds.ReadConfig(assert_cardinality=False)
    with tb.read_options(data_service=address, data_service_mode="parallel_epochs"):
        ds = tfds.load(
            "served", data_dir=data_dir, split="train", batch_size=500, read_config=read_config
        )
    got = np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)])
    # Two workers, each reading the whole split: every example exactly twice.
    counts = np.bincount(got // 3, minlength=N)
    assert np.all(counts == 2), np.unique(counts)


def test_data_service_options_are_checked(served, tmp_path):
    address, data_dir, _, _ = served
    with pytest.raises(ValueError, match="data_service_mode='sharded'.*distributed_epoch"):
        tb.ReadOptions(data_service=address, data_service_mode="sharded")
    with pytest.raises(ValueError, match="data_service='localhost:5050'.*grpc://"):
        tb.ReadOptions(data_service="localhost:5050")


def test_environment_variable_routes_reads_through_the_service(served, monkeypatch):
    address, data_dir, x, _ = served
    monkeypatch.setenv("TFDS_BIGARRAYS_DATA_SERVICE", address)
    read_config = tfds.ReadConfig(assert_cardinality=False)
    with tb.read_options(data_service_mode="parallel_epochs"):
        ds = tfds.load(
            "served", data_dir=data_dir, split="train", batch_size=1000, read_config=read_config
        )
    got = np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)])
    assert len(got) == 2 * N  # served by both workers, so not read locally


@pytest.mark.parametrize(
    "where,why",
    [
        (12 + 2, "does not match the dataset's layout"),  # the first record's Example framing
        (-40, "CRC32C does not match"),  # a value of the last record: only its CRC can tell
    ],
)
def test_a_corrupt_shard_fails_through_the_service_naming_it(served, tmp_path, where, why):
    address, data_dir, _, _ = served
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shard = sorted((copy / "served" / "1.0.0").glob("*.tfrecord-*"))[1]
    data = bytearray(shard.read_bytes())
    data[where] ^= 0x01
    shard.write_bytes(bytes(data))
    ds = _load(copy, address, batch_size=100, shuffle_files=False)
    with pytest.raises(Exception, match=f"{shard.name}.*{why}"):
        for _ in ds:
            pass


def test_cli_rejects_a_bad_dispatcher_address():
    proc = subprocess.run(
        [str(CLI), "data-service", "worker", "--dispatcher", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--dispatcher 'nowhere' is not HOST:PORT" in proc.stderr


@pytest.fixture(scope="module")
def one_worker(served, tmp_path_factory):
    """A service with a single worker: its order is fixed by its seeds alone
    (with two, worker timing shuffles too and would hide repeated seeds)."""
    with data_service(tmp_path_factory.mktemp("one_worker"), workers=1) as address:
        yield address


@pytest.mark.parametrize("chained", [False, True], ids=["as-loaded", "with-map"])
def test_fixed_seeds_do_not_repeat_epochs_through_the_service(served, one_worker, chained):
    """Service workers instantiate the pipeline anew every epoch: a global seed
    (as keras.utils.set_random_seed sets) or shuffle_seed must not make every
    epoch the same, also when the dataset is transformed further (Keras
    fit(class_weight=...) maps it)."""
    import tensorflow as tf

    _, data_dir, _, _ = served

    def two_epochs(**kwargs):
        ds = _load(data_dir, one_worker, batch_size=1000, shuffle_files=True, **kwargs)
        if chained:
            ds = ds.map(lambda example: example)
        return [np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)]) for _ in range(2)]

    tf.random.set_seed(0)
    try:
        epochs = two_epochs() + two_epochs(read_config=tfds.ReadConfig(shuffle_seed=7))
    finally:
        tf.random.set_seed(None)
    assert not np.array_equal(epochs[0], epochs[1]), "global seed: same order twice"
    assert not np.array_equal(epochs[2], epochs[3]), "shuffle_seed: same order twice"
    for epoch in epochs:
        assert np.array_equal(np.sort(epoch), np.arange(N) * 3)


def test_empty_data_service_reads_locally_despite_the_environment(served, monkeypatch):
    _, data_dir, x, _ = served
    monkeypatch.setenv("TFDS_BIGARRAYS_DATA_SERVICE", "localhost:5050")
    with pytest.raises(ValueError, match="TFDS_BIGARRAYS_DATA_SERVICE='localhost:5050'"):
        tfds.load("served", data_dir=data_dir, split="train")
    with tb.read_options(data_service=""):  # local, and the stored order
        ds = tfds.load("served", data_dir=data_dir, split="train", batch_size=N)
        np.testing.assert_array_equal(next(iter(tfds.as_numpy(ds)))["x"], x)

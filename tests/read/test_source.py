"""The TF-free data source (`tfds.data_source` on our datasets) and the loaders
people feed it to: Grain, PyTorch, JAX, Keras 3 on JAX. Real packages, real
worker processes; every example exactly once per epoch, epochs differ."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT, needs, run_python

import tfds_bigarrays as tb

N = 1000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(3)
    cols = {
        "x": np.arange(N * 3, dtype=np.float32).reshape(N, 3),
        "y": np.arange(N, dtype=np.int64),
        "flag": rng.random((N, 2)) > 0.5,
        "count": rng.integers(0, 2**32, size=N, dtype=np.uint32),
    }
    tb.build("served", data_dir=data, splits={"train": cols}, shard_bytes=4096)
    return data, cols


def _source(served, split="train"):
    return tfds.data_source("served", split=split, data_dir=served[0])


def test_tfds_data_source_gives_ours_with_exact_examples(served):
    data, cols = served
    source = _source(served)
    assert isinstance(source, tb.ArraysDataSource) and len(source) == N
    for i in (0, 517, N - 1, -1):
        example = source[i]
        assert set(example) == set(cols)
        for k, v in cols.items():
            assert isinstance(example[k], np.ndarray)
            assert example[k].dtype == v.dtype and example[k].shape == v.shape[1:]
            assert example[k].tobytes() == v[i].tobytes()
    assert [e["y"].item() for e in source[10:14]] == [10, 11, 12, 13]
    with pytest.raises(IndexError, match=f"index {N} is out of range for served/train"):
        source[N]
    with pytest.raises(TypeError, match="must be an int"):
        source["7"]
    with pytest.raises(TypeError, match="is a bool"):
        source[True]


def test_any_index_value_and_small_index_dtypes(served):
    source = _source(served)

    class Key:
        def __index__(self):
            return 7

    for key in (np.int16(7), np.uint8(7), np.array(7), Key(), -N + 7):
        assert source[key]["y"].item() == 7, key
    # Small dtypes must not wrap when negatives are counted from the end (N > 255).
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32):
        assert source.read_batch(np.array([5, 100], dtype))["y"].tolist() == [5, 100], dtype
    assert source.read_batch(np.array([-1], np.int8))["y"].tolist() == [N - 1]
    with pytest.raises(IndexError, match=f"index {2**64 - 1} is out of range"):
        source.read_batch(np.array([2**64 - 1], np.uint64))
    with pytest.raises(TypeError, match=r"flat sequence of ints.*shape \(2, 2\)"):
        source.read_batch(np.zeros((2, 2), np.int64))
    assert source.read_batch([])["x"].shape == (0, 3) and source.__getitems__([]) == []


def test_zero_width_features_keep_their_shape(tmp_path):
    cols = {"x": np.arange(4.0), "none": np.zeros((4, 0, 2), np.int8)}
    tb.build("zw", data_dir=tmp_path, splits={"train": cols})
    source = tfds.data_source("zw", split="train", data_dir=tmp_path)
    assert source[2]["none"].shape == (0, 2) and source[2]["none"].dtype == np.int8
    assert source.read_batch([0, 3])["none"].shape == (2, 0, 2)


def test_getitems_reads_all_rows_in_one_call(served):
    source = _source(served)
    calls = []
    real = source._reader.read_rows  # noqa: SLF001
    source._reader.read_rows = lambda rows: calls.append(list(rows)) or real(rows)  # noqa: SLF001
    indices = [5, 6, 7, 900, 3, 3]
    examples = source.__getitems__(indices)
    assert calls == [indices]
    assert [e["y"].item() for e in examples] == indices
    batch = source.read_batch(np.array(indices))
    assert batch["x"].shape == (6, 3) and batch["y"].tolist() == indices
    # Indexing with a list or array is numpy's: the stacked batch, one call.
    calls.clear()
    for fancy in (indices, np.array(indices)):
        stacked = source[fancy]
        assert stacked["y"].tolist() == indices and stacked["x"].tobytes() == batch["x"].tobytes()
    assert calls == [indices] * 2
    assert source._getitems([2, 1])[1]["y"].item() == 1  # noqa: SLF001  (Grain's batched read)
    with pytest.raises(TypeError, match=r"flat sequence of ints.*got \[1.5\]"):
        source[[1.5]]
    with pytest.raises(IndexError, match=f"index -{N + 1} is out of range"):
        source[[0, -N - 1]]


def test_slices_builders_and_the_package_function_agree(served):
    data, cols = served
    assert len(_source(served, "train[:10%]")) == 100
    assert _source(served, "train[100:200]")[0]["y"].item() == 100
    via_builder = tfds.builder("served", data_dir=data).as_data_source("train[100:200]")
    assert via_builder[99]["y"].item() == 199
    via_package = tb.data_source("served", split="train[-3:]", data_dir=data)
    assert [e["y"].item() for e in via_package[:]] == [997, 998, 999]
    assert set(tb.data_source("served", data_dir=data)) == {"train"}
    with pytest.raises(ValueError, match="corresponds to no data"):
        _source(served, "train[10:10]")


def test_a_registry_name_works(served, tmp_path, monkeypatch):
    data, _ = served
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[team]\npaths = ["{data}"]\n')
    monkeypatch.setenv("TFDS_BIGARRAYS_REGISTRY", str(registry))
    source = tfds.data_source("team:served", split="train")
    assert len(source) == N and source[3]["y"].item() == 3


def test_options_that_do_not_apply_are_refused_and_the_environment_is_not(served, monkeypatch):
    data, _ = served
    monkeypatch.setenv("TFDS_BIGARRAYS_DATA_SERVICE", "grpc://localhost:5050")  # for tfds.load
    assert _source(served)[1]["y"].item() == 1
    with pytest.raises(tb.TfdsBigarraysError, match=r"data_service='grpc://h:1'.*leave it out"):
        tb.data_source("served", split="train", data_dir=data,
                       options=tb.ReadOptions(data_service="grpc://h:1"))  # fmt: skip
    with pytest.raises(tb.TfdsBigarraysError, match=r"access='sequential'.*'mapped'"):
        with tb.read_options(access="sequential"):
            _source(served)
    mapped = tb.data_source("served", split="train", data_dir=data,
                            options=tb.ReadOptions(access="mapped", verify_checksums=False))  # fmt: skip
    assert mapped[999]["y"].item() == 999
    builder = tfds.builder("served", data_dir=data)
    assert len(builder.as_data_source("train", file_format="tfrecord")) == N
    with pytest.raises(tb.TfdsBigarraysError, match=r"as_data_source\(decoders=.*Leave these"):
        builder.as_data_source("train", decoders={"x": tfds.decode.SkipDecoding()})
    with pytest.raises(tb.TfdsBigarraysError, match=r"file_format='array_record'"):
        builder.as_data_source("train", file_format="array_record")


def test_other_datasets_keep_tfds_behaviour(tmp_path):
    builder = tb.build("plain", data_dir=tmp_path, splits={"train": {"x": np.arange(6.0)}})
    (builder.data_path / "tfds_bigarrays.json").unlink()  # no longer ours
    with pytest.raises(NotImplementedError, match="not supported"):
        tfds.data_source("plain", split="train", data_dir=tmp_path)


def test_a_damaged_shard_is_named(tmp_path):
    b = tb.build(
        "hurt", data_dir=tmp_path, splits={"train": {"x": np.arange(2000.0)}}, shard_bytes=4096
    )
    shard = sorted(b.data_path.glob("*.tfrecord-*"))[1]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 1
    shard.write_bytes(bytes(data))
    source = tfds.data_source("hurt", split="train", data_dir=tmp_path)
    with pytest.raises(tb.TfdsBigarraysError, match=f"shard {shard}.*CRC32C"):
        source.read_batch(np.arange(len(source)))


def test_it_pickles_small_and_reopens(served, tmp_path):
    source = _source(served)
    blob = pickle.dumps(source)
    assert len(blob) < 8_000  # the configuration: no rows travel
    again = pickle.loads(blob)
    assert again[42]["x"].tolist() == source[42]["x"].tolist()
    # In a fresh process the shards are opened again, and checked: a shard
    # replaced (same bytes, another file) since the source was made is refused.
    b = tb.build("moved", data_dir=tmp_path, splits={"train": {"y": np.arange(100)}})
    (tmp_path / "source.pkl").write_bytes(
        pickle.dumps(tfds.data_source("moved", split="train", data_dir=tmp_path))
    )
    shard = next(b.data_path.glob("*.tfrecord-*"))
    copy = shard.with_name("copy")
    copy.write_bytes(shard.read_bytes())
    os.replace(copy, shard)
    proc = run_python(
        f"import pickle, tfds_bigarrays\n"
        f"s = pickle.loads(open({str(tmp_path / 'source.pkl')!r}, 'rb').read())\n"
        "s[3]\n"
    )
    assert proc.returncode != 0 and str(shard) in proc.stderr and "ShardReadError" in proc.stderr, (
        proc.stderr[-2000:]
    )


def test_a_fork_while_another_thread_reads_does_not_hang_the_child(served):
    code = f"""
import os, sys, threading
import numpy as np, tensorflow_datasets as tfds
import tfds_bigarrays
source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
stop = False
def hammer():
    rows = np.arange(len(source))
    while not stop:
        source.read_batch(rows[::7])
threads = [threading.Thread(target=hammer) for _ in range(2)]
for t in threads:
    t.start()
for _ in range(60):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if source[5]["y"].item() == 5 else 3)
    for _ in range(500):  # 5 s: a child that waits on an inherited lock never exits
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.01)
    else:
        os.kill(pid, 9)
        print("hung"); stop = True; sys.exit(1)
    assert os.waitstatus_to_exitcode(status) == 0, status
stop = True
print("ok")
"""
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "ok", (
        proc.stdout,
        proc.stderr[-2000:],
    )


def test_a_full_epoch_imports_no_tensorflow(served):
    code = f"""
import sys
import numpy as np, tensorflow_datasets as tfds
import tfds_bigarrays
source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
order = np.random.default_rng(0).permutation(len(source))
seen = [source.__getitems__(order[i:i + 64]) for i in range(0, len(source), 64)]
assert sum(len(s) for s in seen) == len(source)
print("tensorflow" in sys.modules, any(m.startswith("tensorflow.") for m in sys.modules))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["False", "False"], proc.stdout


def _run_script(tmp_path, code: str, **env) -> str:
    # A file, not -c: loaders that spawn workers re-import the main module.
    script = tmp_path / "loader.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


EPOCHS = """
import numpy as np

def check(epochs, n):
    assert len(epochs) == 2, len(epochs)
    for e in epochs:
        assert sorted(e) == list(range(n)), (len(e), sorted(e)[:5])
    assert epochs[0] != epochs[1], "both epochs in the same order"
    print("ok")
"""


@needs("grain")
def test_grain_data_loader_and_map_dataset(served, tmp_path):
    out = _run_script(
        tmp_path,
        EPOCHS
        + f"""
from absl import flags
import grain.python as gp
import tensorflow_datasets as tfds
import tfds_bigarrays

if __name__ == "__main__":
    flags.FLAGS.mark_as_parsed()  # Grain reads absl flags in its workers
    source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
    n = len(source)
    for workers in (0, 2):
        sampler = gp.IndexSampler(n, shuffle=True, num_epochs=2, seed=4,
                                  shard_options=gp.NoSharding())
        loader = gp.DataLoader(data_source=source, sampler=sampler,
                               operations=[gp.Batch(64)], worker_count=workers)
        ys = np.concatenate([b["y"] for b in loader]).tolist()
        if workers == 0:
            check([ys[:n], ys[n:]], n)
        else:  # workers batch their own records, so batches straddle the epochs
            assert sorted(ys) == sorted(list(range(n)) * 2), len(ys)
            print("ok")
    # Hosts: disjoint, complete shares.
    shares = []
    for index in range(2):
        sampler = gp.IndexSampler(n, shuffle=True, num_epochs=1, seed=4,
                                  shard_options=gp.ShardOptions(index, 2, drop_remainder=False))
        loader = gp.DataLoader(data_source=source, sampler=sampler, operations=[gp.Batch(50)])
        shares.append(set(np.concatenate([b["y"] for b in loader]).tolist()))
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(n)), shares
    print("ok")
    epochs = [[int(e["y"]) for e in gp.MapDataset.source(source).shuffle(seed=s)] for s in (1, 2)]
    check(epochs, n)
""",
    )
    assert out.split().count("ok") == 4, out


@needs("torch")
def test_pytorch_data_loader_workers_batches_and_hosts(served, tmp_path):
    out = _run_script(
        tmp_path,
        EPOCHS
        + f"""
import torch
from torch.utils.data import DataLoader, DistributedSampler
import tensorflow_datasets as tfds
import tfds_bigarrays

if __name__ == "__main__":
    source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
    n = len(source)
    torch.manual_seed(0)
    loader = DataLoader(source, batch_size=64, shuffle=True, num_workers=2)
    epochs = [torch.cat([b["y"] for b in loader]).tolist() for _ in range(2)]
    check(epochs, n)
    batch = next(iter(loader))
    assert batch["x"].dtype == torch.float32 and batch["x"].shape == (64, 3), batch["x"].shape
    # A batch is one __getitems__ call (PyTorch's batched fetch).
    calls = []
    real = source.__getitems__
    source.__getitems__ = lambda idx: calls.append(len(idx)) or real(idx)
    ys = torch.cat([b["y"] for b in DataLoader(source, batch_size=100, shuffle=True)]).tolist()
    assert sorted(ys) == list(range(n)) and calls == [100] * 10, calls
    print("ok")
    # batch_size=None with a batch sampler: source[indices] stacks in one call, no collation.
    from torch.utils.data import BatchSampler, RandomSampler
    loader = DataLoader(source, sampler=BatchSampler(RandomSampler(source), 128, drop_last=False),
                        batch_size=None, num_workers=2)
    epochs = [torch.cat([b["y"] for b in loader]).tolist() for _ in range(2)]
    check(epochs, n)
    assert next(iter(loader))["x"].shape == (128, 3)
    shares = []
    for rank in range(2):
        sampler = DistributedSampler(source, num_replicas=2, rank=rank, shuffle=True, seed=3,
                                     drop_last=False)
        shares.append(set(torch.cat([b["y"] for b in DataLoader(source, batch_size=50, sampler=sampler)]).tolist()))
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(range(n))
    print("ok")
""",
    )
    assert out.split().count("ok") == 4, out


@needs("jax")
def test_a_jax_training_step(served, tmp_path):
    out = _run_script(
        tmp_path,
        EPOCHS
        + f"""
import jax, jax.numpy as jnp
import tensorflow_datasets as tfds
import tfds_bigarrays

source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
n = len(source)

@jax.jit
def step(w, x, y):
    loss = lambda w: jnp.mean((x @ w - y) ** 2)
    value, grad = jax.value_and_grad(loss)(w)
    return w - 1e-9 * grad, value

w, losses, epochs = jnp.zeros(3), [], []
for epoch in range(2):
    order = np.random.default_rng(epoch).permutation(n)
    seen = []
    for i in range(0, n, 100):
        batch = source.read_batch(order[i:i + 100])
        w, loss = step(w, jnp.asarray(batch["x"]), jnp.asarray(batch["y"], jnp.float32))
        losses.append(float(loss))
        seen += batch["y"].tolist()
    epochs.append(seen)
check(epochs, n)
assert losses[-1] < losses[0], losses
""",
    )
    assert out.split().count("ok") == 1, out


@needs("jax")
def test_keras_3_on_jax_fits_from_a_py_dataset(served, tmp_path):
    out = _run_script(
        tmp_path,
        EPOCHS
        + f"""
import keras
import tensorflow_datasets as tfds
import tfds_bigarrays
import sys

assert keras.backend.backend() == "jax"
source = tfds.data_source("served", split="train", data_dir={str(served[0])!r})
n = len(source)
seen = [{{}}]  # per epoch, batch index -> labels (Keras may peek at a batch twice)

class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()
        self.order = np.random.default_rng(0).permutation(n)
    def __len__(self):
        return n // 100
    def __getitem__(self, i):
        batch = source.read_batch(self.order[i * 100:(i + 1) * 100])
        seen[-1][i] = batch["y"].tolist()
        return batch["x"], (batch["y"] % 2).astype("float32")
    def on_epoch_end(self):
        seen.append({{}})
        self.order = np.random.default_rng(len(seen)).permutation(n)

model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
model.compile("sgd", "mse")
model.fit(Batches(), epochs=2, verbose=0)
# Keras peeks at one batch for the input spec before the first epoch.
check([sum(s.values(), []) for s in seen if len(s) == n // 100], n)
assert "tensorflow" not in sys.modules
""",
        KERAS_BACKEND="jax",
    )
    assert out.split().count("ok") == 1, out


@needs("grain")
@needs("torch")
@needs("jax")
def test_the_docs_snippets_run(tmp_path):
    readme = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    build = readme[0].replace("/tmp/", f"{tmp_path}/")
    proc = run_python(build, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (ROOT / "docs" / "jax_pytorch_grain.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(snippets) == 3, "the page's snippets changed: update this test"
    for i, snippet in enumerate(snippets):
        code = snippet.replace("/tmp/", f"{tmp_path}/")
        # Each in a fresh process, from a file (workers re-import it), to its end.
        out = _run_script(tmp_path, code + "\nprint('snippet done')\n", KERAS_BACKEND="jax")
        assert out.strip().endswith("snippet done"), (i, out[-2000:])

"""tfds.load on a built dataset: shuffling, order, seeds, slicing, exactly once."""

import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import run_python

import tfds_bigarrays as tb


def load(ds_info, **kwargs):
    kwargs.setdefault("split", "train")
    return tfds.load("small", data_dir=ds_info["data_dir"], **kwargs)


def first_values(ds):
    """Identifies each example by its x row (rows are distinct floats)."""
    out = []
    for batch in tfds.as_numpy(ds):
        x = batch[0] if isinstance(batch, tuple) else batch["x"]
        x = x.reshape(-1, 8)
        out.extend(map(bytes, x))
    return out


def test_dataset_is_sharded(small_dataset):
    info = small_dataset["builder"].info
    assert info.splits["train"].num_shards > 3
    assert info.splits["train"].num_examples == 3000
    assert info.splits["validation"].num_examples == 500


def test_stored_order_without_shuffle(small_dataset):
    got = first_values(load(small_dataset, shuffle_files=False))
    assert got == list(map(bytes, small_dataset["x_train"]))


def test_each_example_once_per_epoch_and_epochs_differ(small_dataset):
    ds = load(small_dataset, shuffle_files=True, batch_size=64, as_supervised=True)
    want = sorted(map(bytes, small_dataset["x_train"]))
    epoch1, epoch2 = first_values(ds), first_values(ds)
    assert sorted(epoch1) == want and sorted(epoch2) == want
    assert epoch1 != epoch2
    stored = list(map(bytes, small_dataset["x_train"]))
    assert epoch1 != stored
    # Example-level shuffle, not just file order: neighbours in the stored
    # order rarely stay neighbours.
    pos = {v: i for i, v in enumerate(epoch1)}
    adjacent = sum(abs(pos[stored[i]] - pos[stored[i + 1]]) == 1 for i in range(len(stored) - 1))
    assert adjacent < len(stored) * 0.05


def test_seed_reproduces_order(small_dataset):
    rc = tfds.ReadConfig(shuffle_seed=123)
    a = first_values(load(small_dataset, shuffle_files=True, read_config=rc, batch_size=32))
    b = first_values(load(small_dataset, shuffle_files=True, read_config=rc, batch_size=32))
    c = first_values(
        load(
            small_dataset,
            shuffle_files=True,
            read_config=tfds.ReadConfig(shuffle_seed=124),
            batch_size=32,
        )
    )
    assert a == b and a != c


def test_labels_stay_with_their_inputs(small_dataset):
    ds = load(small_dataset, shuffle_files=True, batch_size=100, as_supervised=True)
    for x, y in tfds.as_numpy(ds):
        assert np.array_equal(y, (x.sum(axis=1) > 0).astype(np.int64))


@pytest.mark.parametrize(
    "split, rows",
    [
        ("train[10:20]", slice(10, 20)),
        ("train[:10%]", slice(0, 300)),
        ("train[-5:]", slice(2995, 3000)),
        ("train[1234:2345]", slice(1234, 2345)),
    ],
)
def test_split_slicing(small_dataset, split, rows):
    got = first_values(load(small_dataset, split=split, shuffle_files=False))
    assert got == list(map(bytes, small_dataset["x_train"][rows]))


def test_split_addition_and_even_splits(small_dataset):
    got = first_values(load(small_dataset, split="train[:50%]+validation", shuffle_files=False))
    want = list(map(bytes, small_dataset["x_train"][:1500])) + list(
        map(bytes, small_dataset["x_validation"])
    )
    assert got == want
    parts = tfds.even_splits("train", n=3)
    seen = []
    for part in parts:
        seen += first_values(load(small_dataset, split=part, shuffle_files=True))
    assert sorted(seen) == sorted(map(bytes, small_dataset["x_train"]))


def test_unbatched_elements_and_full_batch(small_dataset):
    ds = load(small_dataset, split="validation", shuffle_files=False)
    assert ds.element_spec["x"].shape == (8,)
    full = load(small_dataset, split="validation", batch_size=-1, as_supervised=True)
    assert np.array_equal(full[0].numpy(), small_dataset["x_validation"])


def test_input_context_gives_disjoint_complete_shares(small_dataset):
    shares = []
    for i in range(3):
        ctx = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=i)
        shares.append(
            first_values(
                load(
                    small_dataset,
                    shuffle_files=True,
                    read_config=tfds.ReadConfig(input_context=ctx),
                )
            )
        )
    flat = [v for s in shares for v in s]
    assert len(flat) == len(set(flat)) == 3000


def test_as_supervised_without_keys_is_a_clear_error(tmp_path):
    tb.build("nokeys", data_dir=tmp_path, splits={"train": {"x": np.zeros((4, 2))}})
    with pytest.raises(ValueError, match="no supervised keys"):
        tfds.load("nokeys", data_dir=tmp_path, split="train", as_supervised=True)


def test_other_datasets_keep_stock_behaviour(tmp_path):
    # A dataset without our layout file is read by TFDS's own reader.
    builder = tb.build("plain", data_dir=tmp_path, splits={"train": {"x": np.arange(6.0)}})
    (builder.data_path / "tfds_bigarrays.json").unlink()
    ds = tfds.load("plain", data_dir=tmp_path, split="train", shuffle_files=False)
    assert [float(e["x"]) for e in tfds.as_numpy(ds)] == [0, 1, 2, 3, 4, 5]


@pytest.fixture(params=["random", "mapped", "sequential"])
def read_path(request):
    """The test runs inside `read_options(access=...)` for each access path."""
    with tb.read_options(access=request.param):
        yield request.param


@pytest.fixture
def fresh(tmp_path):
    """A small dataset this test may damage: rows 0..1999 in several shards."""
    x = np.arange(2000, dtype=np.float32).reshape(2000, 1) * np.ones((1, 8), np.float32)
    builder = tb.build("fresh", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=16_384)
    shards = sorted(builder.data_path.glob("fresh-train.tfrecord-*"))
    assert len(shards) > 2
    return {"data_dir": tmp_path, "shards": shards}


def _epoch(data_dir, **kwargs):
    ds = tfds.load("fresh", data_dir=data_dir, split="train", batch_size=100, **kwargs)
    return np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)])


def test_truncated_or_deleted_shard_is_named(fresh, read_path):
    victim = fresh["shards"][1]
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(ValueError, match=f"{victim.name} is .* bytes but should be"):
        _epoch(fresh["data_dir"], shuffle_files=True)
    victim.unlink()
    with pytest.raises(ValueError, match=f"{victim.name} is missing"):
        _epoch(fresh["data_dir"], shuffle_files=True)


@pytest.mark.parametrize("where", ["payload", "layout"])
def test_flipped_byte_fails_naming_the_shard(fresh, where, read_path):
    victim = fresh["shards"][2]
    data = bytearray(victim.read_bytes())
    # Frame: 12-byte header, Example (constant prefix ... payload), 4-byte crc.
    offset = 12 + 3 if where == "layout" else len(data) // 2
    data[offset] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match=victim.name):
        _epoch(fresh["data_dir"], shuffle_files=True)
    if where == "layout":  # caught even without checksum verification
        with tb.read_options(verify_checksums=False):
            with pytest.raises(tf.errors.InvalidArgumentError, match="does not match"):
                _epoch(fresh["data_dir"], shuffle_files=False)


def test_checkpoint_resumes_mid_epoch(fresh, read_path):
    ds = tfds.load(
        "fresh",
        data_dir=fresh["data_dir"],
        split="train",
        batch_size=64,
        shuffle_files=True,
        read_config=tfds.ReadConfig(shuffle_seed=5),
    )
    it = iter(ds)
    head = [next(it)["x"][:, 0].numpy() for _ in range(7)]
    path = tf.train.Checkpoint(iterator=it).save(str(fresh["data_dir"] / "ckpt"))
    tail = [b["x"][:, 0].numpy() for b in it]
    resumed = iter(ds)
    tf.train.Checkpoint(iterator=resumed).restore(path)
    tail2 = [b["x"][:, 0].numpy() for b in resumed]
    assert len(tail) == len(tail2) and all(map(np.array_equal, tail, tail2))
    seen = np.concatenate(head + tail)
    assert sorted(seen.tolist()) == list(range(2000))  # nothing repeated or skipped


def test_read_options_validate_the_budget(fresh, monkeypatch):
    # Refused where it is written, naming the argument or the variable.
    for bad in (10, 2**70, 1.5e9, True):
        with pytest.raises(tb.TfdsBigarraysError, match=f"memory_budget={bad!r} must be"):
            tb.read_options(memory_budget=bad).__enter__()
    for text in ("lots", "1", str(2**70)):
        monkeypatch.setenv("TFDS_BIGARRAYS_MEMORY_BUDGET", text)
        with pytest.raises(tb.TfdsBigarraysError, match=f"TFDS_BIGARRAYS_MEMORY_BUDGET='{text}'"):
            _epoch(fresh["data_dir"], shuffle_files=True)
    monkeypatch.setenv("TFDS_BIGARRAYS_MEMORY_BUDGET", str(8 << 20))
    assert sorted(_epoch(fresh["data_dir"], shuffle_files=True).tolist()) == list(range(2000))


@pytest.mark.parametrize("access", ["random", "mapped", "sequential"])
def test_both_access_paths_read_every_example_once(small_dataset, access, read_path):
    want = sorted(map(bytes, small_dataset["x_train"]))
    with tb.read_options(access=access):
        ordered = first_values(load(small_dataset, shuffle_files=False, batch_size=100))
        ds = load(small_dataset, shuffle_files=True, batch_size=64, as_supervised=True)
        epoch1, epoch2 = first_values(ds), first_values(ds)
        sliced = first_values(load(small_dataset, split="train[1000:1500]", batch_size=64))
    assert ordered == list(map(bytes, small_dataset["x_train"]))
    assert sorted(epoch1) == sorted(epoch2) == want and epoch1 != epoch2
    assert sliced == list(map(bytes, small_dataset["x_train"][1000:1500]))


def test_access_option_is_checked(small_dataset):
    with pytest.raises(ValueError, match="access='mmap' is not a way of reading shards"):
        tb.read_options(access="mmap").__enter__()
    with tb.read_options(access="random", data_service="grpc://localhost:1"):
        with pytest.raises(ValueError, match="access='random' cannot read with data_service"):
            load(small_dataset, shuffle_files=True, batch_size=64)
    with tb.read_options(access="mapped", data_service="grpc://localhost:1"):
        with pytest.raises(ValueError, match="access='mapped' cannot read with data_service"):
            load(small_dataset, shuffle_files=True, batch_size=64)


def test_random_access_full_batches_until_the_last(small_dataset):
    # 3000 rows of 8 float32: groups are rebatched; every batch but the last is full.
    sizes = [len(b["x"]) for b in tfds.as_numpy(load(small_dataset, batch_size=128))]
    assert sizes == [128] * 23 + [56]


def test_large_rows_read_in_whole_batches(tmp_path):
    # 3.2 KB rows: a batch of 100 is a whole number of blocks, groups hold
    # whole batches; the short last block comes last, so only the last batch
    # is short.
    x = np.arange(1003 * 400, dtype=np.float64).reshape(1003, 20, 20)
    tb.build("wide", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=100_000)
    rc = tfds.ReadConfig(shuffle_seed=9)
    ds = tfds.load(
        "wide", data_dir=tmp_path, split="train", batch_size=100, shuffle_files=True, read_config=rc
    )
    batches = [b["x"] for b in tfds.as_numpy(ds)]
    assert [len(b) for b in batches] == [100] * 10 + [3]
    ids = np.concatenate([b[:, 0, 0] for b in batches]) // 400
    assert sorted(ids.tolist()) == list(range(1003))
    for b in batches:  # rows arrive whole
        assert np.array_equal(b, x[(b[:, 0, 0] // 400).astype(int)])
    it = iter(ds)
    head = [next(it)["x"][:, 0, 0].numpy() for _ in range(4)]
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    tail = [b["x"][:, 0, 0].numpy() for b in it]
    resumed = iter(ds)
    tf.train.Checkpoint(iterator=resumed).restore(path)
    assert all(map(np.array_equal, tail, [b["x"][:, 0, 0].numpy() for b in resumed]))
    assert sorted((np.concatenate(head + tail) // 400).tolist()) == list(range(1003))


@pytest.fixture(scope="module")
def many_groups(tmp_path_factory):
    """16 MiB of 4 KiB rows: 16 groups, so buffers are still filling at exit."""
    path = tmp_path_factory.mktemp("exit")
    x = np.arange(4096 * 1024, dtype=np.float32).reshape(4096, 1024)
    tb.build("exit", data_dir=path, splits={"train": {"x": x, "y": x[:, 0]}})
    return path


@pytest.mark.parametrize("access", ["random", "mapped", "sequential"])
def test_process_exits_with_an_unfinished_iterator(many_groups, access):
    # A tf.data pipeline that calls Python hangs a process that exits while
    # it fills its buffers (TF 2.21, Python 3.11); ours must not: the last
    # line leaves the pipeline filling its buffers.
    code = (
        "import tensorflow_datasets as tfds, tfds_bigarrays as tb\n"
        f"with tb.read_options(access={access!r}):\n"
        f"    ds = tfds.load('exit', data_dir={str(many_groups)!r}, split='train',\n"
        "                   shuffle_files=True, batch_size=64)\n"
        "it = iter(ds.repeat())\n"
        "print(int(next(it)['x'].shape[0]), flush=True)\n"
    )
    try:
        result = run_python(code, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a process with an unfinished {access} iterator did not exit in 60 s")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["64"]


def test_random_access_batches_run_without_tf_data_autotuning(small_dataset):
    # Nothing to tune there, and the autotuning thread delayed the end of an
    # epoch by tens of milliseconds (see pipeline.finish).
    batched = load(small_dataset, shuffle_files=True, batch_size=64)
    assert batched.options().autotune.enabled is False
    with tb.read_options(access="sequential"):
        sequential = load(small_dataset, shuffle_files=True, batch_size=64)
    assert sequential.options().autotune.enabled is not False  # AUTOTUNE knobs there
    again = batched.with_options(_autotune_on())
    assert again.options().autotune.enabled is True  # the user can turn it back on
    assert sorted(first_values(again)) == sorted(map(bytes, small_dataset["x_train"]))


def _autotune_on():
    options = tf.data.Options()
    options.autotune.enabled = True
    return options

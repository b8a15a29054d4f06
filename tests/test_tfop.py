"""The TensorFlow op of the read path (`_read_op.cc`, `_tfop`): built here,
the same bytes, order and errors as the numpy reader, and a clean fallback."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import run_cli, run_python

import tfds_bigarrays as tb
from tfds_bigarrays import _rowread, _tfop
from tfds_bigarrays._layout import read_layout


@pytest.fixture
def raw(tmp_path):
    """Only raw-bytes features (what the op reads), odd row sizes, many shards."""
    n = 211
    rng = np.random.default_rng(5)
    cols = {
        "img": rng.normal(size=(n, 5, 3)).astype(np.float32),
        "label": np.arange(n, dtype=np.int64),
        "half": rng.normal(size=n).astype(np.float16),
    }
    builder = tb.build("raw", data_dir=tmp_path, splits={"train": cols}, shard_bytes=3000)
    assert builder.info.splits["train"].num_shards > 3
    return builder, cols


def _reader(builder, split="train", **kwargs):
    reads = [
        (str(fi.filename), int(fi.skip), int(fi.take), int(fi.examples_in_shard))
        for fi in builder.info.splits[split].file_instructions
    ]
    kwargs.setdefault("verify", True)
    codec = read_layout(builder.data_path).codec()
    return _rowread.GroupReader(_rowread.RowSpace.from_reads(reads), codec, **kwargs)


def _op_group(reader, group, seed):
    """The op on one group, in a graph as the reader runs it.

    Not eagerly: TF 2.21 runs an eager op as a function named after its type
    attributes only, and reuses that function (and its kernel, with another
    dataset's file names) for a later call that differs in other attributes.
    """
    op = _tfop.library()
    assert op is not None
    attrs = reader.op_attrs()
    read = tf.function(lambda g, s: op.tfds_bigarrays_read_group(g, s, **attrs))
    out = read(tf.constant(group, tf.int64), tf.constant(seed, tf.int64))
    return [t.numpy() for t in out]


def test_the_op_builds_and_loads_on_this_machine():
    # CI must exercise the op, not only the fallback: fail loudly if it cannot build.
    assert _tfop.library() is not None, _tfop._loaded.get("error")  # noqa: SLF001
    assert _tfop.library_path().exists()


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("split", ["train", "train[7:200]"])
def test_op_reads_the_same_groups_as_the_numpy_reader(raw, shuffle, verify, split, mapped):
    builder, _ = raw
    # 5-row blocks straddle shards (and the slice's ends); 3 blocks a group.
    reader = _reader(
        builder, split, block_rows=5, group_blocks=3, shuffle=shuffle, verify=verify, mapped=mapped
    )
    assert reader.op_attrs() is not None
    label = list(reader.codec.slots).index("label")  # features sorted by name
    rows = []
    for group in range(reader.num_groups):
        want = reader.read_group(group, 99)
        got = _op_group(reader, group, 99)
        assert [g.dtype for g in got] == [w.dtype for w in want]
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)
        rows.extend(got[label].tolist())
    first, last = (7, 200) if split != "train" else (0, 211)
    assert sorted(rows) == list(range(first, last))
    assert (rows == sorted(rows)) != shuffle


def test_op_is_not_used_where_it_cannot_read(raw, tmp_path):
    builder, _ = raw
    flags = tb.build("flags", data_dir=tmp_path, splits={"train": {"f": np.ones((10, 2), bool)}})
    assert _reader(flags, block_rows=4).op_attrs() is None


def _damage(reader, how):
    victim = reader.space.filenames[2]
    data = bytearray(open(victim, "rb").read())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "payload":
        data[len(data) // 2] ^= 0x40
    elif how == "layout":
        data[12 + 3] ^= 0x40
    if how == "missing":
        os.unlink(victim)
    else:
        with open(victim, "wb") as f:
            f.write(bytes(data))
    return victim


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("how", ["truncated", "payload", "layout", "missing"])
def test_op_fails_with_the_numpy_readers_message(raw, how, mapped):
    builder, _ = raw
    # One group: every row. Damaged before the first read, so nothing is mapped yet.
    reader = _reader(builder, block_rows=5, group_blocks=100, mapped=mapped)
    victim = _damage(reader, how)
    with pytest.raises(_rowread.ShardReadError) as want:
        reader.read_group(0, 1)
    with pytest.raises(tf.errors.InvalidArgumentError) as got:
        _op_group(reader, 0, 1)
    assert str(want.value) in got.value.message
    assert os.path.basename(victim) in got.value.message


def test_op_refuses_a_group_out_of_range(raw):
    builder, _ = raw
    reader = _reader(builder, block_rows=5, group_blocks=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"group=\d+ is not in \[0, \d+\)"):
        _op_group(reader, reader.num_groups, 1)


def _bad_attrs(attrs):
    """Attributes that once passed the op's checks, or should never."""
    segments = list(attrs["segments"])
    crc_too_long = segments[:-2] + [5, -1]  # the stored CRC is 4 bytes
    # Two segments aimed at output 0 (the second would write past its rows).
    j = next(i for i in range(0, len(segments), 3) if segments[i + 2] == 0)
    twice = segments[: j + 3] + [segments[j] + segments[j + 1], 4, 0] + segments[j + 3 :]
    for i in range(j + 6, len(twice), 3):
        twice[i] += 4
    return [
        ({"segments": crc_too_long}, "segments do not make a frame"),
        ({"segments": twice, "frame_bytes": attrs["frame_bytes"] + 4}, "does not fit"),
        ({"skips": [-3] + list(attrs["skips"][1:])}, "negative skip"),
        ({"starts": [1] + list(attrs["starts"][1:])}, "starts must begin at 0"),
        ({"out_types": [tf.bool] + list(attrs["out_types"][1:])}, "plain numeric type"),
        ({"group_blocks": 1 << 62}, "groups this large"),
    ]


def test_op_refuses_attributes_that_do_not_make_a_frame(raw):
    builder, _ = raw
    attrs = _reader(builder, block_rows=5).op_attrs()
    op = _tfop.library()
    for bad, why in _bad_attrs(attrs):
        read = tf.function(lambda bad=bad: op.tfds_bigarrays_read_group(0, 0, **{**attrs, **bad}))
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"TfdsBigarraysReadGroup.*{why}"):
            read()
    # Inputs are scalars: a vector is refused when the graph is built, not a crash.
    with pytest.raises(ValueError, match="rank 0"):
        tf.function(lambda: op.tfds_bigarrays_read_group([0, 1], 0, **attrs))()


def _labels(data_dir, **kwargs):
    ds = tfds.load("raw", data_dir=data_dir, split="train", batch_size=32, **kwargs)
    return np.concatenate([b["label"] for b in tfds.as_numpy(ds)])


@pytest.mark.parametrize("width", [1, 1100])  # batches of 32 rows: small, and over 256 KiB
def test_switched_off_the_pipeline_reads_the_same_order(tmp_path, monkeypatch, width):
    x = np.arange(700 * width, dtype=np.float32).reshape(700, width)
    tb.build("wide", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=1 << 20)

    def epochs():
        ds = tfds.load(
            "wide",
            data_dir=tmp_path,
            split="train",
            batch_size=32,
            shuffle_files=True,
            read_config=tfds.ReadConfig(shuffle_seed=3),
        )
        return [np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)]) for _ in range(2)]

    with_op = epochs()
    monkeypatch.setenv("TFDS_BIGARRAYS_OP", "0")
    assert _tfop.library() is None
    without = epochs()
    assert all(map(np.array_equal, with_op, without))  # the same plan, the same order
    assert sorted((with_op[0] // width).tolist()) == list(range(700))
    assert not np.array_equal(with_op[0], with_op[1])


def test_without_a_compiler_it_warns_once_and_reads_through_numpy(raw, tmp_path):
    builder, _ = raw
    code = f"""
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
from tfds_bigarrays import _tfop
ds = tfds.load("raw", data_dir={str(builder.data_path.parent.parent)!r}, split="train", batch_size=32,
               shuffle_files=True)
for _ in range(2):
    labels = np.concatenate([b["label"] for b in tfds.as_numpy(ds)])
    assert sorted(labels.tolist()) == list(range(211))
assert _tfop.library() is None
print("OK")
"""
    env = {"CXX": "false", "TFDS_BIGARRAYS_CACHE": str(tmp_path / "cache")}
    proc = run_python(code, env=env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.count("the TensorFlow op could not be built") == 1
    assert "TFDS_BIGARRAYS_OP=0" in proc.stderr
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left


def test_a_built_library_is_reused_by_later_processes(tmp_path):
    code = """
from tfds_bigarrays import _tfop
assert _tfop.library() is not None
print(_tfop.library_path())
"""
    env = {"TFDS_BIGARRAYS_CACHE": str(tmp_path)}
    first = run_python(code, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    path = first.stdout.strip().splitlines()[-1]
    stamp = os.stat(path).st_mtime_ns
    second = run_python(code, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip().splitlines()[-1] == path
    assert os.stat(path).st_mtime_ns == stamp  # loaded, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]  # no temporaries


def test_a_library_others_could_write_is_not_loaded(tmp_path):
    code = """
from tfds_bigarrays import _tfop
print(_tfop.library() is not None, _tfop.library_path())
"""
    env = {"TFDS_BIGARRAYS_CACHE": str(tmp_path / "cache")}
    first = run_python(code, env=env, timeout=600)
    assert first.returncode == 0 and first.stdout.split()[-2] == "True", first.stderr[-3000:]
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    path = first.stdout.split()[-1]
    os.chmod(path, 0o666)  # anyone could have swapped it
    second = run_python(code, env=env)
    assert second.returncode == 0 and second.stdout.split()[-2] == "False", second.stderr[-3000:]
    assert "writable by others" in second.stderr and path in second.stderr


def test_cli_build_op_builds_ahead_or_says_why_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_BIGARRAYS_CACHE", str(tmp_path / "ok"))
    built = run_cli("build-op", timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    path = built.stdout.strip().splitlines()[-1]
    assert path.startswith(str(tmp_path / "ok")) and os.path.exists(path)
    monkeypatch.setenv("TFDS_BIGARRAYS_CACHE", str(tmp_path / "none"))
    monkeypatch.setenv("CXX", "no-such-compiler")
    failed = run_cli("build-op")
    assert failed.returncode == 1
    assert "tfds-bigarrays build-op: error: could not run no-such-compiler" in failed.stderr


def test_mapped_reads_see_a_shard_replaced_by_rename(tmp_path):
    def build(where, offset):
        x = (np.arange(600, dtype=np.float32) + offset).reshape(600, 1) * np.ones(
            (1, 4), np.float32
        )
        return tb.build("swap", data_dir=where, splits={"train": {"x": x}}, shard_bytes=8000)

    old, new = build(tmp_path / "a", 0), build(tmp_path / "b", 1000)
    with tb.read_options(access="mapped"):
        ds = tfds.load("swap", data_dir=tmp_path / "a", split="train", batch_size=64)

    def epoch():
        return sorted(np.concatenate([b["x"][:, 0] for b in tfds.as_numpy(ds)]).tolist())

    assert epoch() == list(range(600))  # the shards are mapped now, and stay mapped
    shards = sorted(p.name for p in old.data_path.glob("swap-train.tfrecord-*"))
    assert shards == sorted(p.name for p in new.data_path.glob("swap-train.tfrecord-*"))
    for name in shards:
        os.replace(new.data_path / name, old.data_path / name)
    assert epoch() == list(range(1000, 1600))  # a new file, a new mapping


def test_an_unwritable_cache_falls_back_with_a_warning(raw, tmp_path):
    builder, _ = raw
    (tmp_path / "file").write_text("not a directory")
    code = f"""
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
from tfds_bigarrays import _tfop
ds = tfds.load("raw", data_dir={str(builder.data_path.parent.parent)!r}, split="train",
               batch_size=32)
assert np.concatenate([b["label"] for b in tfds.as_numpy(ds)]).tolist() == list(range(211))
assert _tfop.library() is None
print("OK")
"""
    proc = run_python(code, env={"TFDS_BIGARRAYS_CACHE": str(tmp_path / "file" / "sub")})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert "cannot write the op into" in proc.stderr and "TFDS_BIGARRAYS_CACHE" in proc.stderr

"""The TensorFlow binding of the read core (op.cc, op.py): the same rows,
order and errors as the numpy binding, one core per process, and clear
refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, run_python
from test_core import mixed, reader, shard_reads  # noqa: F401 - a fixture

import tfds_bigarrays as tb
from tfds_bigarrays._format.layout import read_layout
from tfds_bigarrays._read import core, op
from tfds_bigarrays._read.plan import record_layout


def _attrs(builder, split="train", **kwargs):
    r = reader(builder, split, **kwargs)
    reads = tuple(shard_reads(builder, split))
    return r, op.read_group_attrs(
        r.layout,
        reads,
        tuple(core.identity(x.filename) for x in reads),
        verify=kwargs.get("verify", True),
        block_rows=kwargs.get("block_rows", 1),
        group_blocks=kwargs.get("group_blocks", 1),
        window_groups=kwargs.get("window_groups", 1),
        shuffle=kwargs.get("shuffle", False),
        lookahead=kwargs.get("lookahead", 0),
        mapped=kwargs.get("mapped", False),
        read_threads=kwargs.get("read_threads", 1),
    )


def _op_group(attrs, group, seed):
    """The op on one group, in a graph as the pipeline runs it.

    Not eagerly: TF 2.21 runs an eager op as a function named after its type
    attributes only, and reuses it for a later call with other attributes.
    """
    lib = op.library()
    read = tf.function(lambda g, s: lib.tfds_bigarrays_read_group(g, s, **attrs))
    return [t.numpy() for t in read(tf.constant(group, tf.int64), tf.constant(seed, tf.int64))]


def test_the_op_is_built_and_loads():
    # CI must exercise the op: fail loudly if the install did not build it.
    assert op.library_path() is not None
    assert op.library() is not None


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("split", ["train", "train[7:200]"])
@pytest.mark.parametrize("window", [1, 4])
def test_op_reads_what_the_numpy_binding_reads(mixed, shuffle, verify, split, mapped, window):  # noqa: F811
    builder, _ = mixed
    r, attrs = _attrs(
        builder,
        split,
        block_rows=5,
        group_blocks=3,
        window_groups=window,
        read_threads=window,  # parts of 4 MiB or more only: one part here, and the attr read
        shuffle=shuffle,
        verify=verify,
        mapped=mapped,
    )
    for group in range(r.num_groups):
        want = r.read_group(group, 99)
        got = _op_group(attrs, group, 99)
        for name, g in zip(r.names, got, strict=True):
            assert g.dtype == want[name].dtype and g.shape == want[name].shape, name
            assert g.tobytes() == want[name].tobytes(), name


def test_decode_op_decodes_what_the_numpy_binding_decodes(mixed):  # noqa: F811
    builder, cols = mixed
    codec = read_layout(builder.data_path).codec()
    layout = record_layout(codec)
    reads = shard_reads(builder)
    blocks = [open(r.filename, "rb").read() for r in reads]
    names = [r.filename for r in reads]
    dest = np.random.default_rng(1).permutation(len(cols["label"]))
    lib = op.library()
    attrs = op.layout_attrs(layout, verify=True)
    decode = tf.function(lambda b, n, d: lib.tfds_bigarrays_decode_frames(b, n, d, **attrs))
    for d in (np.zeros(0, np.int64), dest):
        got = decode(tf.constant(blocks), tf.constant(names), tf.constant(d, tf.int64))
        want = core.decode(codec, blocks, names, dest=d if len(d) else None)
        for name, g in zip(layout.names, got, strict=True):
            assert g.numpy().tobytes() == want[name].tobytes(), name
    blocks[1] = blocks[1][:100] + bytes([blocks[1][100] ^ 1]) + blocks[1][101:]
    with pytest.raises(tf.errors.InvalidArgumentError) as got:
        decode(tf.constant(blocks), tf.constant(names), tf.zeros([0], tf.int64))
    with pytest.raises(core.ShardReadError) as want:
        core.decode(codec, blocks, names)
    assert str(want.value) in got.value.message and names[1] in got.value.message


def _damage(victim, how):
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


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("how", ["truncated", "payload", "layout", "missing"])
def test_op_fails_with_the_numpy_bindings_message(mixed, how, mapped):  # noqa: F811
    builder, _ = mixed
    victim = shard_reads(builder)[2].filename
    if how in ("payload", "layout"):
        _damage(victim, how)  # before the identities are taken: the same file
    r, attrs = _attrs(builder, block_rows=5, group_blocks=100, mapped=mapped)
    if how not in ("payload", "layout"):
        _damage(victim, how)
    with pytest.raises(core.ShardReadError) as want:
        r.read_group(0, 1)
    with pytest.raises(tf.errors.InvalidArgumentError) as got:
        _op_group(attrs, 0, 1)
    assert str(want.value) in got.value.message
    assert os.path.basename(victim) in got.value.message


def test_op_refuses_a_group_out_of_range(mixed):  # noqa: F811
    r, attrs = _attrs(mixed[0], block_rows=5, group_blocks=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"group=\d+ is not in \[0, \d+\)"):
        _op_group(attrs, r.num_groups, 1)


def test_op_refuses_attributes_that_do_not_describe_a_split(mixed):  # noqa: F811
    _, attrs = _attrs(mixed[0], block_rows=5)
    types = list(attrs["out_types"])
    bad = [
        ({"skips": [-3] + list(attrs["skips"][1:])}, "negative or huge skip"),
        ({"identities": attrs["identities"][:-1]}, "malformed reads"),
        ({"group_blocks": 1 << 62}, "malformed reader"),
        ({"block_rows": 1 << 32, "group_blocks": 1 << 32}, "malformed reader"),  # wraps to 0
        ({"out_types": [tf.float64] + types[1:]}, "does not match its field"),
        ({"field_outputs": [0] + list(attrs["field_outputs"][1:])}, "malformed layout"),
        ({"kinds": list(attrs["kinds"])[:-1]}, "malformed layout attributes"),
        ({"constants": attrs["constants"][:-1]}, "constant bytes for fields of"),
    ]
    lib = op.library()
    for change, why in bad:
        read = tf.function(lambda c=change: lib.tfds_bigarrays_read_group(0, 0, **{**attrs, **c}))
        with pytest.raises(tf.errors.InvalidArgumentError, match=why):
            read()


def test_one_core_serves_both_bindings(tmp_path):
    # The op links to the very library ctypes loaded: one descriptor cache.
    code = f"""
import numpy as np, tensorflow as tf, tfds_bigarrays as tb, sys
sys.path[:0] = [{os.path.dirname(__file__)!r}, {os.path.dirname(os.path.dirname(__file__))!r}]
from test_op import _attrs, _op_group
from tfds_bigarrays._read import core
b = tb.build("one", data_dir={str(tmp_path)!r}, splits={{"train": {{"x": np.arange(3000)}}}},
             shard_bytes=4096)
before = core.open_descriptors()
r, attrs = _attrs(b, block_rows=10, group_blocks=400)
_op_group(attrs, 0, 0)  # the op opens every shard
print("delta", core.open_descriptors() - before, b.info.splits["train"].num_shards)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    delta, shards = proc.stdout.split("delta ")[1].split()
    assert int(delta) == min(int(shards), 256) and int(shards) > 3


def test_a_missing_op_library_names_the_command_to_build_it(monkeypatch):
    code = """
from tfds_bigarrays._read import op
op.library_path = lambda: None
try:
    op.library()
except op.NotBuiltError as e:
    print(e)
"""
    proc = run_python(code)
    assert "tfds-bigarrays build-op" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_cli_build_op_rebuilds_it_in_place():
    before = op.library_path()
    proc = run_cli("build-op", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(before)
    assert (
        run_python("from tfds_bigarrays._read import op; op.library(); print('ok')").stdout.strip()
        == "ok"
    )


def test_the_pipeline_reads_every_dtype_through_the_op(tmp_path):
    cols = {
        "b": np.array([[True, False]] * 9),
        "u": np.arange(18, dtype=np.uint32).reshape(9, 2) * 123456789,
        "e": np.zeros((9, 0), np.int8),
    }
    b = tb.build("kinds", data_dir=tmp_path, splits={"train": cols})
    for access in ("random", "mapped", "sequential"):
        with tb.read_options(access=access):
            batch = next(iter(b.as_dataset(split="train", batch_size=9)))
        for k, v in cols.items():
            assert batch[k].numpy().tobytes() == v.tobytes(), (access, k)

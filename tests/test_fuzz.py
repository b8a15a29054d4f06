"""Fuzzing the decode path: corrupt input gives an error, never a wrong value.

Two levels:

1. the pure-numpy record codec (TFRecord unframing, record decoding) and the
   read core's checks (`core.decode`: headers, layout, CRCs): random bytes,
   and valid frames of random specs after a random mutation, must raise
   `RecordError` / `ShardReadError` or give back exactly the original
   values;
2. the TensorFlow read path behind `tfds.load`: one shard of a tiny dataset
   mutated (a byte flipped, truncated, garbage appended, a range zeroed);
   reading the split must fail naming that shard, or yield exactly the
   original examples (only possible when the mutation changed nothing), and
   must never hang.

CI runs a bounded number of cases: TFDS_BIGARRAYS_FUZZ_EXAMPLES (default 50)
for level 1, a fifth of it for level 2: about 10 s on the 2-core build
machine. For a longer run, raise it: `TFDS_BIGARRAYS_FUZZ_EXAMPLES=2000 pytest
tests/test_fuzz.py` ran 10,400 examples (400 of them through TensorFlow) in
193 s without a failure. The coverage-guided harness
`benchmarks/fuzz_decode.py` (atheris) runs level 1 for longer still.

Identical damage to an even number of records must not cancel out:
`test_identical_damage_to_two_records_is_caught` checks that every record's
own CRC32C is compared.
"""

from __future__ import annotations

import shutil
import threading

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfds_bigarrays as tb
from tfds_bigarrays import _env
from tfds_bigarrays._format.layout import read_layout
from tfds_bigarrays._format.records import (
    RecordCodec,
    RecordError,
    unframe,
)
from tfds_bigarrays._format.spec import SUPPORTED_DTYPES, FeatureSpec
from tfds_bigarrays._read import core

EXAMPLES = _env.get(_env.FUZZ_EXAMPLES)
FAST = settings(max_examples=EXAMPLES, deadline=None)
SLOW = settings(
    max_examples=max(2, EXAMPLES // 5),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _masked(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame(record: bytes) -> bytes:
    """TFRecord framing of one record, written independently of `_encoding`."""
    length = len(record).to_bytes(8, "little")
    return (
        length
        + _masked(length).to_bytes(4, "little")
        + record
        + _masked(record).to_bytes(4, "little")
    )


# --- Mutations --------------------------------------------------------------------------


@st.composite
def mutations(draw, *, same_length: bool = False):
    """A function bytes -> bytes that damages its input in one of several ways."""
    kinds = ["flip", "zero", "overwrite", "two_flips", "same_flip_in_two_records"]
    if not same_length:
        kinds += ["truncate", "append", "insert", "delete"]
    kind = draw(st.sampled_from(kinds))
    stride = draw(st.integers(1, 8))  # records apart, for same_flip_in_two_records
    a = draw(st.floats(0, 1, exclude_max=True))
    b = draw(st.floats(0, 1, exclude_max=True))
    xor = draw(st.integers(1, 255))
    extra = draw(st.binary(min_size=1, max_size=40))
    span = draw(st.integers(1, 64))

    def mutate(data: bytes) -> bytes:
        out = bytearray(data)
        i, j = int(a * len(out)), int(b * len(out))
        if kind == "flip":
            out[i] ^= xor
        elif kind == "two_flips":
            out[i] ^= xor
            out[j] ^= draw_xor2
        elif kind == "same_flip_in_two_records":
            # The pattern an XOR-fold of records cannot see; `record` is set
            # by the caller when it knows the frame length.
            step = stride * getattr(mutate, "record", len(out))
            out[i] ^= xor
            if i + step < len(out):
                out[i + step] ^= xor
        elif kind == "zero":
            out[i : i + span] = bytes(len(out[i : i + span]))
        elif kind == "overwrite":
            out[i : i + len(extra)] = extra[: len(out) - i]
        elif kind == "truncate":
            del out[i:]
        elif kind == "append":
            out += extra
        elif kind == "insert":
            out[i:i] = extra
        elif kind == "delete":
            del out[i : i + span]
        return bytes(out)

    draw_xor2 = draw(st.integers(1, 255))
    mutate.kind = kind  # type: ignore[attr-defined]  # shown in failure reports
    return mutate


@st.composite
def blocks(draw):
    """A codec of 1-3 features of random dtypes and shapes, and rows for it."""
    names = draw(st.lists(st.sampled_from("abcdxyz"), min_size=1, max_size=3, unique=True))
    specs = {
        n: FeatureSpec(
            dtype=draw(st.sampled_from(SUPPORTED_DTYPES)),
            shape=tuple(draw(st.lists(st.integers(0, 3), max_size=2))),
        )
        for n in names
    }
    codec = RecordCodec(specs)
    rows = draw(st.integers(1, 6))
    columns = {}
    for name, spec in codec.specs.items():
        raw = draw(st.binary(min_size=rows * spec.row_bytes, max_size=rows * spec.row_bytes))
        values = np.frombuffer(raw, np.uint8).view(spec.dtype).reshape((rows, *spec.shape))
        if spec.dtype == np.bool_:
            values = values.view(np.uint8) % 2 == 1  # only 0 and 1 are bools
        columns[name] = values
    return codec, columns


def records_of(framed: bytes, codec: RecordCodec) -> list[bytes]:
    return [framed[i : i + codec.frame_bytes] for i in range(0, len(framed), codec.frame_bytes)]


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return set(got) == set(want) and all(
        got[k].shape == want[k].shape and got[k].tobytes() == want[k].tobytes() for k in want
    )


# --- Level 1: pure numpy ----------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=300))
def test_unframe_of_random_bytes_errs_or_is_exact(data):
    try:
        records = unframe(data)
    except RecordError:
        return
    # Accepted only if it is exactly a sequence of valid frames.
    assert b"".join(_frame(r) for r in records) == data


@FAST
@given(block=blocks(), mutate=mutations())
def test_mutated_frames_err_or_decode_exactly(block, mutate):
    codec, columns = block
    records = codec.encode(columns)
    framed = codec.frame(records)
    damaged = mutate(framed)
    try:
        records = unframe(damaged)
        got = codec.decode(np.frombuffer(b"".join(records), np.uint8))
    except RecordError:
        return
    if len(records) != len(records_of(framed, codec)):
        # Whole frames cut off or added: valid framing, so only the count can
        # tell, and every reader checks it (shard sizes against shard_lengths).
        return
    assert damaged == framed, f"{mutate.kind} went unnoticed"
    assert _same(got, columns)


@FAST
@given(block=blocks(), data=st.binary(max_size=200))
def test_decode_of_random_records_errs_or_has_the_layout(block, data):
    codec, _ = block
    try:
        got = codec.decode(np.frombuffer(data, np.uint8))
    except RecordError:
        return
    # Without CRCs decode can only check the layout; what it accepts must
    # re-encode to exactly the same bytes (no value is invented or dropped).
    assert codec.encode(got).tobytes() == data


@FAST
@given(block=blocks(), mutate=mutations(same_length=True))
def test_the_read_cores_checks_catch_any_damage(block, mutate):
    codec, columns = block
    framed = codec.frame(codec.encode(columns))
    mutate.record = codec.frame_bytes
    damaged = mutate(framed)
    try:
        got = core.decode(codec, [damaged], ["fuzzed"], first_rows=[0])
    except core.ShardReadError as e:
        # The first row named really changed (no false alarm on a sound record).
        row = int(str(e).split("the first at row ")[1].split(" ")[0])
        frame = codec.frame_bytes
        assert damaged[row * frame : (row + 1) * frame] != framed[row * frame : (row + 1) * frame]
        return
    assert damaged == framed, f"{mutate.kind} went unnoticed"
    for name, want in columns.items():
        assert got[name].tobytes() == np.ascontiguousarray(want, codec.specs[name].dtype).tobytes()


def test_identical_damage_to_two_records_is_caught():
    codec = RecordCodec({"x": FeatureSpec(dtype=np.dtype("float32"), shape=(4,))})
    framed = bytearray(codec.frame(codec.encode({"x": np.zeros((64, 4), np.float32)})))
    for row in (3, 40):  # same byte, same flip, in two records of identical content
        framed[row * codec.frame_bytes + 30] ^= 0x10
    with pytest.raises(core.ShardReadError, match="CRC32C does not match.*the first at row 3 of"):
        core.decode(codec, [bytes(framed)], ["two"], first_rows=[0])
    framed[3 * codec.frame_bytes + 30] ^= 0x10  # mend the first: the second is found
    with pytest.raises(core.ShardReadError, match="the first at row 40 of"):
        core.decode(codec, [bytes(framed)], ["two"], first_rows=[0])


# --- Level 2: the TensorFlow read path ---------------------------------------------------

ROWS = 60


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A dataset of 60 rows of three dtypes, in several shards; built once."""
    rng = np.random.default_rng(3)
    columns = {
        "x": rng.normal(size=(ROWS, 3)).astype(np.float32),
        "y": rng.integers(0, 2**32, size=ROWS, dtype=np.uint32),
        "z": rng.integers(0, 2, size=(ROWS, 2)).astype(bool),
    }
    data_dir = tmp_path_factory.mktemp("fuzz_tfds")
    builder = tb.build("fuzzed", data_dir=data_dir, splits={"train": columns}, shard_bytes=1024)
    shards = sorted(p.name for p in builder.data_path.glob("fuzzed-train.tfrecord-*"))
    assert len(shards) >= 3
    return {
        "data_dir": data_dir,
        "version_dir": builder.data_path,
        "shards": shards,
        "columns": columns,
        "work": tmp_path_factory.mktemp("fuzz_copies"),
        "frame_bytes": read_layout(builder.data_path).codec().frame_bytes,
        # A byte inside x's values: 12-byte frame header, then the Example.
        "x_offset": 12 + read_layout(builder.data_path).codec().slots["x"].start + 5,
    }


def _read_split(data_dir) -> dict[str, np.ndarray]:
    ds = tfds.load("fuzzed", data_dir=data_dir, split="train", batch_size=16)
    parts = list(tfds.as_numpy(ds))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _read_with_deadline(data_dir, seconds: float = 60):
    """Reads in a thread, so a hang fails the test instead of stalling CI."""
    result: dict = {}

    def run():
        try:
            result["value"] = _read_split(data_dir)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reading the damaged split hung for {seconds} s"
    return result


def test_tiny_dataset_reads_back_exactly(tiny):
    assert _same(_read_split(tiny["data_dir"]), tiny["columns"])


def test_same_flip_in_two_records_of_a_shard_fails_naming_it(tiny, tmp_path):
    """Once silently read as wrong values: the XOR fold of CRCs cancelled it."""
    target = tmp_path / "fuzzed" / tiny["version_dir"].name
    shutil.copytree(tiny["version_dir"], target)
    victim = target / tiny["shards"][1]
    data = bytearray(victim.read_bytes())
    for row in (0, 2):
        data[row * tiny["frame_bytes"] + tiny["x_offset"]] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{victim.name}.*CRC32C"):
        _read_split(tmp_path)


@SLOW
@given(shard=st.integers(0, 10), mutate=mutations())
def test_damaged_shard_fails_naming_it_or_reads_exactly(tiny, shard, mutate):
    copy = tiny["work"] / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    target = copy / "fuzzed" / tiny["version_dir"].name
    shutil.copytree(tiny["version_dir"], target)
    name = tiny["shards"][shard % len(tiny["shards"])]
    victim = target / name
    original = victim.read_bytes()
    mutate.record = tiny["frame_bytes"]
    damaged = mutate(original)
    victim.write_bytes(damaged)
    result = _read_with_deadline(copy)
    if "error" in result:
        e = result["error"]
        assert isinstance(e, (ValueError, tf.errors.OpError)), repr(e)
        assert name in str(e), f"{mutate.kind}: error does not name {name}: {e}"
        return
    assert damaged == original, f"{mutate.kind} of {name} went unnoticed"
    assert _same(result["value"], tiny["columns"])

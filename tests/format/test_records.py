"""Record codec: numpy round trip, TFRecord framing, and TF's own parser."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_rows

from tfds_bigarrays._format.records import RecordCodec, RecordError, unframe
from tfds_bigarrays._format.spec import SUPPORTED_DTYPES, FeatureSpec

SHAPES = [(), (3,), (2, 0), (2, 3), (1, 2, 3), (2, 1, 2, 2)]


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numpy_round_trip_is_bit_exact(dtype, shape):
    rng = np.random.default_rng(0)
    specs = {"a": FeatureSpec(dtype=dtype, shape=shape), "b": FeatureSpec(dtype="int8", shape=())}
    codec = RecordCodec(specs)
    cols = {"a": random_rows(dtype, shape, 7, rng), "b": np.arange(7, dtype=np.int8)}
    records = codec.encode(cols)
    assert records.shape == (7, codec.record_bytes)
    back = codec.decode(records)
    for k in cols:
        assert back[k].dtype == cols[k].dtype
        assert back[k].tobytes() == cols[k].tobytes()  # bit-exact, NaN payloads too


def test_special_floats_survive():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny], np.float32)
    codec = RecordCodec({"x": FeatureSpec(dtype="float32", shape=())})
    back = codec.decode(codec.encode({"x": x}))["x"]
    assert back.tobytes() == x.tobytes()


def test_framing_matches_tensorflow_tfrecord(tmp_path):
    codec = RecordCodec(
        {"x": FeatureSpec(dtype="uint32", shape=(2,)), "y": FeatureSpec(dtype="float64", shape=())}
    )
    cols = {"x": np.array([[0, 2**32 - 1], [5, 2**31]], np.uint32), "y": np.array([1.5, -2.0])}
    path = tmp_path / "r.tfrecord"
    path.write_bytes(codec.frame(codec.encode(cols)))
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]  # checks crcs
    assert records == unframe(path.read_bytes())
    parsed = tf.io.parse_example(
        records,
        {"x": tf.io.FixedLenFeature([2], tf.int64), "y": tf.io.FixedLenFeature([], tf.string)},
    )
    assert parsed["x"].numpy().tolist() == [[0, 2**32 - 1], [5, 2**31]]
    assert np.frombuffer(parsed["y"].numpy()[1], np.float64)[0] == -2.0


def test_unframe_detects_corruption():
    codec = RecordCodec({"x": FeatureSpec(dtype="int32", shape=(4,))})
    good = codec.frame(codec.encode({"x": np.zeros((3, 4), np.int32)}))
    data = bytearray(good)
    data[20] ^= 1
    with pytest.raises(RecordError, match="crc mismatch"):
        unframe(bytes(data))
    with pytest.raises(RecordError, match="Truncated"):
        unframe(good[:-3])


def test_encode_checks_block_shape_and_features():
    codec = RecordCodec({"x": FeatureSpec(dtype="int32", shape=(4,))})
    with pytest.raises(RecordError, match="expected \\(4,\\)"):
        codec.encode({"x": np.zeros((3, 5), np.int32)})
    with pytest.raises(RecordError, match="expected \\['x'\\]"):
        codec.encode({"y": np.zeros((3, 4), np.int32)})


def test_decode_refuses_foreign_layout():
    a = RecordCodec({"x": FeatureSpec(dtype="int32", shape=(2,))})
    b = RecordCodec({"z": FeatureSpec(dtype="int32", shape=(2,))})
    with pytest.raises(RecordError, match="does not match"):
        b.decode(a.encode({"x": np.zeros((1, 2), np.int32)}))

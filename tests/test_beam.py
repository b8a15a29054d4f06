"""Beam build: same examples, same stored order, same bytes as the local build."""

import filecmp

import numpy as np
import tensorflow_datasets as tfds

import tfds_bigarrays as tb
from tfds_bigarrays._beam import pipeline_options


def _shards(builder):
    return sorted(p for p in builder.data_path.iterdir() if ".tfrecord-" in p.name)


def test_beam_build_is_byte_identical_to_local(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 6)).astype(np.float32)
    y = rng.integers(0, 9, 5000).astype(np.uint32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    splits = {
        "train": {"x": tmp_path / "x.npy", "y": tmp_path / "y.npy"},
        "test": {"x": x[:700], "y": y[:700]},
    }
    local = tb.build(
        "same", data_dir=tmp_path / "local", splits=splits, shard_bytes=20_000, beam=False
    )
    beam = tb.build(
        "same",
        data_dir=tmp_path / "beam",
        splits=splits,
        shard_bytes=20_000,
        beam_options="runner=DirectRunner,direct_running_mode=multi_processing,"
        "direct_num_workers=2",
    )
    a, b = _shards(local), _shards(beam)
    assert [p.name for p in a] == [p.name for p in b] and len(a) > 4
    assert all(filecmp.cmp(p, q, shallow=False) for p, q in zip(a, b, strict=True))
    assert local.info.splits["train"].shard_lengths == beam.info.splits["train"].shard_lengths
    ds = tfds.load(
        "same", data_dir=tmp_path / "beam", split="train", shuffle_files=False, batch_size=1000
    )
    got = np.concatenate([e["x"] for e in tfds.as_numpy(ds)])
    assert np.array_equal(got, x)


def test_pipeline_options_defaults_and_passthrough():
    opts = pipeline_options(None).get_all_options()
    assert opts["runner"] == "DirectRunner" and opts["direct_running_mode"] == "multi_processing"
    opts = pipeline_options("runner=DirectRunner,direct_num_workers=3").get_all_options()
    assert opts["direct_num_workers"] == 3
    given = pipeline_options(["--runner=DirectRunner"])
    assert pipeline_options(given) is given

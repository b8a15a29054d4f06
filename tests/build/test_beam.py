"""Beam build: same examples, same stored order, same bytes as the local build."""

import filecmp

import numpy as np
import tensorflow_datasets as tfds

import tfds_bigarrays as tb
from tfds_bigarrays._build.beam import pipeline_options


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


def test_in_memory_arrays_reach_beam_workers_as_files(tmp_path):
    """Every Beam task would otherwise carry the whole array (pickled once per
    shard); the build spools it to a file the workers read by row range."""
    import pickle

    from etils import epath

    from tfds_bigarrays._build.writer import ShardTask
    from tfds_bigarrays._build.builder import _carries_data, _Spooler
    from tfds_bigarrays._build.plan import RowRange
    from tfds_bigarrays._build.sources import InMemorySource, NpyFileSource

    x = np.arange(1_000_000, dtype=np.float32).reshape(-1, 100)  # 4 MB
    source = InMemorySource(x, name="x")
    tasks = [
        ShardTask(
            sources={"x": source},
            specs={"x": source.spec},
            rows=RowRange(index=i, start=i * 1000, stop=(i + 1) * 1000),
            path=str(tmp_path / f"s{i}"),
        )
        for i in range(10)
    ]
    assert len(pickle.dumps(tasks[0])) > len(x.tobytes())
    backed = _Spooler(epath.Path(tmp_path / "spool"))(tasks, when=_carries_data)
    assert all(isinstance(t.sources["x"], NpyFileSource) for t in backed)
    assert len({t.sources["x"].description for t in backed}) == 1  # one copy, shared
    assert max(len(pickle.dumps(t)) for t in backed) < 10_000
    np.testing.assert_array_equal(backed[3].sources["x"].read(3000, 3010), x[3000:3010])
    # End to end, permuted (random row access into the spooled file): the same
    # bytes as a local build.
    splits = {"train": {"x": x[:20_000]}}
    local = tb.build("mem", data_dir=tmp_path / "l", splits=splits, shard_bytes=80_000,
                     permute_seed=5, beam=False)  # fmt: skip
    beam = tb.build("mem", data_dir=tmp_path / "b", splits=splits, shard_bytes=80_000,
                    permute_seed=5, beam_options="runner=DirectRunner")  # fmt: skip
    a, b = _shards(local), _shards(beam)
    assert len(a) > 3 and [p.name for p in a] == [p.name for p in b]
    assert all(filecmp.cmp(p, q, shallow=False) for p, q in zip(a, b, strict=True))
    assert not (beam.data_path / "spool.incomplete").exists()

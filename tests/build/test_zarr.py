"""Zarr stores (v2 and v3) and Dask arrays as sources, built locally."""

from __future__ import annotations

import collections
import hashlib
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import needs, run_cli

import tfds_bigarrays as tb

pytestmark = [needs("zarr"), needs("dask")]


def _digests(directory: pathlib.Path) -> list[str]:
    shards = sorted(p for p in directory.iterdir() if ".tfrecord-" in p.name)
    assert shards
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in shards]


def _counting_store():
    """A zarr LocalStore class that counts the fetches of each key."""
    import zarr.storage

    class Counting(zarr.storage.LocalStore):
        gets: collections.Counter = collections.Counter()

        async def get(self, key, prototype, byte_range=None):
            Counting.gets[key] += 1
            return await super().get(key, prototype, byte_range)

    return Counting


def _arrays(n: int = 3000):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x.view(np.uint32)[7, 1] = 0x7FC00001  # a NaN payload must survive bit for bit
    x[8, 2] = -np.inf
    images = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(-5, 5, n).astype(np.int16)
    flags = rng.integers(0, 2, n).astype(bool)
    return {"x": x, "images": images, "y": y, "flags": flags}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stores_round_trip_bit_exactly_and_match_the_npy_build(tmp_path, zarr_format):
    import zarr

    arrays = _arrays()
    group = zarr.open_group(tmp_path / "data.zarr", mode="w", zarr_format=zarr_format)
    for name, a in arrays.items():
        # Default (compressing) codecs; chunks that no shard boundary respects.
        group.create_array(name, shape=a.shape, chunks=(333, *a.shape[1:]), dtype=a.dtype)[:] = a
        np.save(tmp_path / f"{name}.npy", a)
    store = tmp_path / "data.zarr"
    assert group["x"].metadata.zarr_format == zarr_format
    if zarr_format == 3:
        assert group["x"].compressors  # really compressed
    npy = tb.build(
        "stored",
        data_dir=tmp_path / "npy",
        splits={"train": {n: tmp_path / f"{n}.npy" for n in arrays}},
        shard_bytes=20_000,
    )
    proc = run_cli(
        "build", "stored", "--data-dir", str(tmp_path / "zarr"), "--shard-size", "20000",
        "--split", "train:" + ",".join(f"{n}={store}:/{n}" for n in arrays),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _digests(tmp_path / "zarr" / "stored" / "1.0.0") == _digests(npy.data_path)
    got = tfds.as_numpy(
        tfds.builder("stored", data_dir=tmp_path / "zarr").as_dataset(
            split="train", batch_size=-1, shuffle_files=False
        )
    )
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype
        np.testing.assert_array_equal(got[name].view(np.uint8), a.view(np.uint8))


def test_each_chunk_is_decompressed_once_whatever_the_shard_boundaries(tmp_path):
    import zarr

    Counting = _counting_store()
    x = np.arange(5000 * 8, dtype=np.float32).reshape(5000, 8)
    zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(333, 8), dtype=x.dtype)[:] = x
    array = zarr.open_array(Counting(tmp_path / "x.zarr", read_only=True), mode="r")
    b = tb.build("counted", data_dir=tmp_path, splits={"train": {"x": array}}, shard_bytes=7_000)
    assert b.info.splits["train"].num_shards > 20  # boundaries cut chunks everywhere
    chunks = {k: v for k, v in Counting.gets.items() if k.startswith("c/")}
    assert len(chunks) == -(-5000 // 333) and set(chunks.values()) == {1}, chunks
    got = b.as_dataset(split="train", batch_size=-1, shuffle_files=False)["x"].numpy()
    np.testing.assert_array_equal(got, x)


def test_zarr_arrays_row_ranges_and_a_permuted_order(tmp_path):
    import zarr

    x = np.arange(1000, dtype=np.int64)
    zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(64,), dtype=x.dtype)[:] = x
    z = str(tmp_path / "x.zarr")
    b = tb.build(
        "ranged_zarr",
        data_dir=tmp_path,
        splits={"train": {"x": f"{z}[:90%]"}, "test": {"x": f"{z}[90%:]"}},
        permute_seed=7,
    )
    train = b.as_dataset(split="train", batch_size=-1, shuffle_files=False)["x"].numpy()
    assert sorted(train.tolist()) == list(range(900)) and train.tolist() != list(range(900))
    test = b.as_dataset(split="test", batch_size=-1, shuffle_files=False)["x"].numpy()
    assert sorted(test.tolist()) == list(range(900, 1000))


def test_bad_zarr_input_is_named_and_leaves_nothing(tmp_path):
    import zarr

    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("images/x", shape=(10, 2), dtype="f4")[:] = 0
    group.create_array("labels", shape=(9,), dtype="i8")[:] = 0
    group.create_array("names", shape=(10,), dtype=str)
    g = tmp_path / "g.zarr"
    data = tmp_path / "data"
    cases = [
        ({"x": str(g)}, f"x='{g}' is a group, not an array; it holds arrays ['images/x', 'labels', 'names']"),
        ({"x": f"{g}:/images"}, "is a group, not an array; it holds arrays ['images/x']"),
        ({"x": f"{g}:/nope"}, "no such Zarr array (GroupNotFoundError); the store holds arrays"),
        ({"x": f"{g}:/images/x", "y": f"{g}:/labels"}, "features have different numbers of examples: x=10"),
        ({"x": f"{g}:/names"}, "dtype=StringDType() holds variable-width strings, which cannot be stored"),
        ({"x": str(tmp_path / "missing.zarr")}, "missing.zarr': no such file"),
    ]  # fmt: skip
    for splits, message in cases:
        with pytest.raises(tb.TfdsBigarraysError) as e:
            tb.build("bad_zarr", data_dir=data, splits={"train": splits})
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not data.exists() or not [p for p in data.rglob("*") if p.is_file()]


def test_dask_arrays_build_locally_without_computing_the_whole_graph(tmp_path):
    import dask
    import dask.array as da

    x = np.arange(4000 * 5, dtype=np.float64).reshape(4000, 5)
    np.save(tmp_path / "x.npy", x)
    computed = []

    def chunk(block, block_info=None):
        computed.append(block_info[None]["chunk-location"][0])
        return block * 1

    lazy = da.from_array(x, chunks=(250, 5)).map_blocks(chunk, dtype=x.dtype)
    with dask.config.set(scheduler="sync"):
        built = tb.build(
            "lazy", data_dir=tmp_path / "dask", splits={"train": {"x": lazy}}, shard_bytes=9_000
        )
    npy = tb.build(
        "lazy", data_dir=tmp_path / "npy", splits={"train": {"x": tmp_path / "x.npy"}},
        shard_bytes=9_000,
    )  # fmt: skip
    assert _digests(built.data_path) == _digests(npy.data_path)
    # Every chunk computed once (the last one kept for the next block), in order.
    assert sorted(computed) == list(range(16)) and computed == sorted(computed), computed
    with pytest.raises(tb.TfdsBigarraysError, match="unknown chunk sizes"):
        unknown = da.from_array(x, chunks=(250, 5))
        tb.build("lazy2", data_dir=tmp_path, splits={"train": {"x": unknown[unknown[:, 0] > 3]}})


def test_a_permuted_build_reads_each_chunk_once_and_objects_reopen_by_absolute_path(
    tmp_path, monkeypatch
):
    import pickle

    import zarr

    Counting = _counting_store()
    x = np.arange(6000 * 4, dtype=np.float32).reshape(6000, 4)
    zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(150, 4), dtype=x.dtype)[:] = x
    array = zarr.open_array(Counting(tmp_path / "x.zarr", read_only=True), mode="r")
    b = tb.build(
        "permuted_once", data_dir=tmp_path / "d", splits={"train": {"x": array}},
        shard_bytes=8_000, permute_seed=3,
    )  # fmt: skip
    got = b.as_dataset(split="train", batch_size=-1, shuffle_files=False)["x"].numpy()
    assert sorted(got[:, 0].tolist()) == x[:, 0].tolist() and not np.array_equal(got, x)
    # A forward copy first (the spool): not every chunk once per block.
    chunks = {k: v for k, v in Counting.gets.items() if k.startswith("c/")}
    assert len(chunks) == 40 and max(chunks.values()) <= 1, chunks
    # An array object on a local store, opened with a relative path, is reopened
    # by its absolute path: a worker in another directory reads the same rows.
    monkeypatch.chdir(tmp_path)
    relative = zarr.open_array("x.zarr", mode="r")
    from tfds_bigarrays._build.sources import open_source

    source = pickle.dumps(open_source(relative, feature="x"))
    monkeypatch.chdir(tmp_path / "d")
    np.testing.assert_array_equal(pickle.loads(source).read(100, 200), x[100:200])

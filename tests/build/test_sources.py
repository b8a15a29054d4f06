"""Sources: row-range reads, never whole, never unpickled."""

import io
import pickle
import zipfile

import numpy as np
import pytest

from tfds_bigarrays._build.sources import (
    InMemorySource,
    NpyFileSource,
    NpzMemberSource,
    SourceError,
    open_source,
)


def test_npy_reads_row_ranges(tmp_path):
    a = np.arange(60, dtype=np.int16).reshape(10, 2, 3)
    np.save(tmp_path / "a.npy", a)
    src = open_source(str(tmp_path / "a.npy"), feature="a")
    assert isinstance(src, NpyFileSource)
    assert len(src) == 10 and src.spec.shape == (2, 3)
    assert np.array_equal(src.read(3, 7), a[3:7])
    assert src.read(3, 7).flags.c_contiguous


def test_npy_fortran_order_and_big_endian(tmp_path):
    a = np.asfortranarray(np.arange(24, dtype=">f8").reshape(6, 4))
    np.save(tmp_path / "f.npy", a)
    src = NpyFileSource(tmp_path / "f.npy")
    assert src.spec.dtype == np.dtype("<f8")
    assert np.array_equal(src.read(1, 4), a[1:4])


def test_pickled_npy_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Evil(), 1
    with open(tmp_path / "evil.npy", "wb") as f:
        np.save(f, arr, allow_pickle=True)
    with pytest.raises(SourceError, match="never does"):
        open_source(str(tmp_path / "evil.npy"), feature="x")
    assert not marker.exists()
    # Sanity: the file really would run code if unpickled.
    pickle.loads(pickle.dumps(Evil()))
    assert marker.exists()


def test_truncated_npy_names_the_file(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 10), np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-50])
    with pytest.raises(SourceError, match=r"t\.npy.*truncated"):
        NpyFileSource(tmp_path / "t.npy", feature="x")


def test_missing_and_non_npy_files(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nope.npy"), feature="x")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(SourceError, match="not a .npy file"):
        open_source(str(tmp_path / "text.npy"), feature="x")
    with pytest.raises(SourceError, match="unknown source kind"):
        open_source("data.csv", feature="x")
    with pytest.raises(SourceError, match="is not an array source"):
        open_source(42, feature="x")


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members(tmp_path, compressed):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", x=x, y=y)
    src = open_source(f"{tmp_path}/d.npz:x", feature="feat")
    assert isinstance(src, NpzMemberSource)
    assert np.array_equal(src.read(10, 20), x[10:20])
    assert np.array_equal(src.read(2, 5), x[2:5])  # backwards after forwards
    default = open_source(str(tmp_path / "d.npz"), feature="y")  # member = feature name
    assert np.array_equal(default.read(0, 50), y)
    with pytest.raises(SourceError, match="has no member 'z'"):
        open_source(f"{tmp_path}/d.npz:z", feature="feat")


def test_npz_with_pickled_member_is_refused(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as zf:
        zf.writestr("x.npy", buf.getvalue())
    with pytest.raises(SourceError, match="never does"):
        open_source(f"{tmp_path}/p.npz:x", feature="x")


def test_in_memory_arrays():
    a = np.arange(10.0)
    src = open_source(a, feature="a")
    assert isinstance(src, InMemorySource) and src.spec.shape == ()
    with pytest.raises(SourceError, match="Python objects"):
        open_source(np.array([object()] * 3), feature="a")


def test_hdf5_datasets_and_groups(tmp_path):
    import h5py

    x = np.arange(120, dtype=np.float32).reshape(40, 3)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("grp/x", data=x, chunks=(8, 3))
        f.create_dataset("y", data=np.arange(40))
    src = open_source(f"{tmp_path}/d.h5:/grp/x", feature="x")
    assert src.spec.shape == (3,) and len(src) == 40
    assert np.array_equal(src.read(5, 17), x[5:17])
    assert np.array_equal(src.take(np.array([1, 7, 30])), x[[1, 7, 30]])
    assert np.array_equal(open_source(f"{tmp_path}/d.h5", feature="y").read(0, 40), np.arange(40))
    with pytest.raises(SourceError, match=r"d.h5':grp is a group, not a dataset; it holds \['x'\]"):
        open_source(f"{tmp_path}/d.h5:grp", feature="x")
    with pytest.raises(SourceError, match="has no 'nope'"):
        open_source(f"{tmp_path}/d.h5:nope", feature="x")


def test_shard_directory(tmp_path):
    full = np.arange(50, dtype=np.int16).reshape(25, 2)
    (tmp_path / "shards").mkdir()
    for i, (a, b) in enumerate([(0, 7), (7, 8), (8, 25)]):
        np.save(tmp_path / "shards" / f"part-{i:03d}.npy", full[a:b])
    src = open_source(str(tmp_path / "shards"), feature="x")
    assert len(src) == 25
    assert np.array_equal(src.read(0, 25), full)
    assert np.array_equal(src.read(5, 12), full[5:12])
    assert np.array_equal(src.take(np.array([0, 7, 8, 24])), full[[0, 7, 8, 24]])
    np.save(tmp_path / "shards" / "part-999.npy", np.zeros((3, 5), np.int16))
    with pytest.raises(SourceError, match="ragged shards: part-999.npy has rows int16\\[5\\]"):
        open_source(str(tmp_path / "shards"), feature="x")


def test_generator_split_builds_and_names_bad_rows(tmp_path):
    import tensorflow_datasets as tfds

    import tfds_bigarrays as tb

    def rows():
        for i in range(100):
            yield {"x": np.full(3, i, np.float32), "y": i % 7}

    spec = {"x": (np.float32, (3,)), "y": (np.int64, ())}
    tb.build("gen", data_dir=tmp_path / "d", splits={"train": tb.from_generator(rows, specs=spec)})
    ds = tfds.load("gen", data_dir=tmp_path / "d", split="train", batch_size=100)
    batch = next(iter(tfds.as_numpy(ds)))
    assert batch["x"][:, 0].tolist() == list(range(100)) and batch["y"][8] == 1
    assert not any(p.name.endswith(".rows") for p in tmp_path.rglob("*"))

    def bad():
        yield from rows()
        yield {"x": np.zeros(4, np.float32), "y": 0}

    with pytest.raises(SourceError, match="row 100, feature 'x': shape \\(4,\\)"):
        tb.build(
            "gen2", data_dir=tmp_path / "e", splits={"train": tb.from_generator(bad, specs=spec)}
        )

    def bad_dtype():
        yield {"x": np.zeros(3, np.float64), "y": 0}

    with pytest.raises(SourceError, match="row 0, feature 'x': dtype float64"):
        tb.build(
            "gen3",
            data_dir=tmp_path / "e",
            splits={"train": tb.from_generator(bad_dtype, specs=spec)},
        )
    assert not (tmp_path / "e").exists()


def test_a_stored_npz_member_claiming_more_rows_than_it_holds_is_refused(tmp_path):
    # The claim is checked against the member's own bytes, not the archive's:
    # the next member's bytes are not rows of this one.
    path = tmp_path / "two.npz"
    np.savez(path, x=np.zeros((1000, 4), np.float32), y=np.ones((1000, 4), np.float32))
    data = bytearray(path.read_bytes())
    at = data.index(b"(1000, 4)")
    data[at : at + 9] = b"(1009, 4)"  # the same length: only the claim changes
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="is truncated"):
        NpzMemberSource(path, "x", feature="x")

"""Sources: row-range reads, never whole, never unpickled."""

import io
import pickle
import zipfile

import numpy as np
import pytest

from tfds_bigarrays._sources import (
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

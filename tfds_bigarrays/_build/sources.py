"""Array sources: where the rows of a feature come from.

An `ArraySource` is anything with a spec, a length and a way to read a row
range. The writer only ever asks for row ranges, so no source is read whole.
File-backed sources keep nothing open between reads: each read maps the file,
copies the rows out and unmaps it, so resident memory stays bounded however
large the file, and a source can be pickled to another process.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import mmap
import os
import re
import socket
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import Identity, identity, same_file, user_path
from tfds_bigarrays._format.spec import FeatureSpec, SpecError, normalize_dtype, spec_of


class SourceError(TfdsBigarraysError, ValueError):
    """A source cannot be opened or does not hold what it claims."""


@runtime_checkable
class ArraySource(Protocol):
    """Rows of one feature. Implementers need not inherit from this class."""

    @property
    def spec(self) -> FeatureSpec: ...

    @property
    def description(self) -> str:
        """Where the rows come from, for messages ('x.npy', 'array', ...)."""
        ...

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows `[start, stop)` as an array of shape `(stop - start, *spec.shape)`."""
        ...


class _Described:
    """What every source reports: its spec and where its rows come from."""

    _spec: FeatureSpec
    _description: str

    @property
    def spec(self) -> FeatureSpec:
        return self._spec

    @property
    def description(self) -> str:
        return self._description


@dataclasses.dataclass(frozen=True)
class InMemorySource:
    """Rows of a numpy array already in memory (or memory-mapped by the caller)."""

    array: np.ndarray
    name: str = "array"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_spec", spec_of(self.array, name=self.name))

    @property
    def spec(self) -> FeatureSpec:
        return self._spec  # type: ignore[attr-defined]

    @property
    def description(self) -> str:
        return f"in-memory array {self.name!r} {self.array.dtype}{list(self.array.shape)}"

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at sorted `indices` (for a permuted write order)."""
        return self.array[indices]

    random_access = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class _RawLayout:
    """Where an uncompressed `.npy` payload sits in a file."""

    path: str
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool


# np.load reads headers of at most this many bytes (its max_header_size).
_MAX_HEADER_BYTES = 10_000
# More rows than any real array (2**40, about 10**12): a larger claim is a lie.
MAX_ROWS = 1 << 40
_NPY_KEYS = {"descr", "fortran_order", "shape"}


def _header_error(where: str, field: str, value: Any, why: str) -> SourceError:
    return SourceError(
        f"{where} has a malformed .npy header: {field}={value!r} {why} (np.load refuses "
        "it too). Re-create the file with np.save."
    )


def _read_npy_header(fp, *, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Reads a `.npy` header as strictly as np.load, without ever evaluating a pickle.

    The header is a Python literal (numpy parses it with `ast.literal_eval`
    too); its types are checked, not only its values, and the payload is
    never touched here, so an object array is refused before a byte of it is
    read.
    """
    magic = fp.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise SourceError(f"{where} is not a .npy file (bad magic bytes {magic[:6]!r}).")
    major = magic[6]
    if major == 1:
        hlen = int.from_bytes(fp.read(2), "little")
    elif major in (2, 3):
        hlen = int.from_bytes(fp.read(4), "little")
    else:
        raise SourceError(f"{where}: unsupported .npy format version {major}.")
    if hlen > _MAX_HEADER_BYTES:
        raise _header_error(where, "header length", hlen, f"is above {_MAX_HEADER_BYTES} bytes")
    raw = fp.read(hlen)
    if len(raw) < hlen:
        raise SourceError(f"{where} is truncated inside its header.")
    try:
        header = ast.literal_eval(raw.decode("utf8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise _header_error(where, "header", raw[:80], "is not a Python literal") from None
    if not isinstance(header, dict) or set(header) != _NPY_KEYS:
        keys = sorted(map(repr, header)) if isinstance(header, dict) else type(header).__name__
        raise _header_error(where, "header keys", keys, f"are not exactly {sorted(_NPY_KEYS)}")
    shape, fortran = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
        raise _header_error(where, "shape", shape, "is not a tuple of ints")
    if any(d < 0 for d in shape):
        raise _header_error(where, "shape", shape, "has a negative dimension")
    if type(fortran) is not bool:
        raise _header_error(where, "fortran_order", fortran, "is not True or False")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError):
        raise _header_error(where, "descr", header["descr"], "is not a dtype") from None
    if dtype.hasobject:
        raise SourceError(
            f"{where} holds Python objects (dtype={dtype}); such files can only "
            "be read by unpickling, which tfds_bigarrays never does. Save a "
            "numeric array instead (np.save with a fixed-width dtype)."
        )
    return shape, fortran, dtype


class _FileRows(_Described):
    """Rows of an uncompressed payload, read with `pread` from one open file.

    The file's identity is taken when the source is made. It is opened once
    (on first read) and reads check that neither the file nor the path
    changed since: a source replaced (even by one of the same size),
    truncated or rewritten during a build fails the build naming it, instead
    of giving rows of another file. Positioned reads, not a memory map, so a
    file truncated under the build is an error and not a crash (Fortran-order
    arrays, whose rows are not contiguous, are mapped). Pickles to its
    layout and identity: a worker process reopens the file and checks that
    it is the same one.
    """

    _layout: _RawLayout
    _identity: Identity
    _host: str
    _where: str
    _fd: int | None = None

    def _init_file(self, layout: _RawLayout, st: os.stat_result, *, where: str) -> None:
        self._layout, self._identity, self._where, self._fd = layout, identity(st), where, None
        self._host = socket.gethostname()

    def _same(self, st: os.stat_result) -> bool:
        return same_file(identity(st), self._identity, same_host=self._host == socket.gethostname())

    def __len__(self) -> int:
        return self._layout.shape[0]

    def _changed(self) -> SourceError:
        return SourceError(
            f"{self._where} changed during the build (it was replaced, truncated or "
            "rewritten after the build opened it): its rows cannot be trusted, and "
            "nothing was written. Build again once the file no longer changes."
        )

    def _open(self) -> int:
        """The open file, checked to be the one the source was made from."""
        path = self._layout.path
        try:
            if self._fd is None:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                if not self._same(os.fstat(fd)):
                    os.close(fd)
                    raise self._changed()
                self._fd = fd
            if not (self._same(os.stat(path)) and self._same(os.fstat(self._fd))):
                raise self._changed()
        except FileNotFoundError:
            raise self._changed() from None
        except OSError as e:
            raise SourceError(f"{self._where} cannot be read ({e.strerror}).") from e
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def _pread(self, out: np.ndarray, offset: int) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        fd, done = self._open(), 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise self._changed()
            done += got
        if not self._same(os.fstat(fd)):  # rewritten in place while it was read
            raise self._changed()

    def _row_bytes(self) -> int:
        return math.prod(self._layout.shape[1:]) * self._layout.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        lay = self._layout
        if lay.fortran_order:
            return np.array(self._mapped()[start:stop], order="C")
        out = np.empty((stop - start, *lay.shape[1:]), lay.dtype)
        self._pread(out, lay.offset + start * self._row_bytes())
        return out

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at sorted `indices` (for a permuted write order): one read per run."""
        lay = self._layout
        indices = np.asarray(indices, np.int64)
        if lay.fortran_order:
            return np.array(self._mapped()[indices], order="C")
        out = np.empty((len(indices), *lay.shape[1:]), lay.dtype)
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), len(indices)], strict=True):
            if hi > lo:
                self._pread(out[lo:hi], lay.offset + int(indices[lo]) * self._row_bytes())
        return out

    def _mapped(self) -> np.ndarray:
        """Fortran-order payloads: the file mapped (checked unchanged first)."""
        lay = self._layout
        buf = mmap.mmap(self._open(), 0, access=mmap.ACCESS_READ)
        return np.ndarray(lay.shape, lay.dtype, buffer=buf, offset=lay.offset, order="F")

    @property
    def random_access(self) -> bool:
        return True


def _check_layout(layout: _RawLayout, *, file_size: int, where: str) -> None:
    if not layout.shape:
        raise SourceError(f"{where} holds a 0-d array; the first axis must index examples.")
    if layout.shape[0] > MAX_ROWS:
        raise SourceError(
            f"{where} claims {layout.shape[0]} rows; at most {MAX_ROWS} (2**40) are "
            "supported. The header is damaged or crafted: re-create the file."
        )
    needed = math.prod(layout.shape) * layout.dtype.itemsize  # Python ints: no overflow
    if layout.offset + needed > file_size:
        raise SourceError(
            f"{where} is truncated: its header promises shape {layout.shape} "
            f"{layout.dtype} ({needed} bytes of data) but only "
            f"{max(0, file_size - layout.offset)} bytes follow the header. "
            "Re-create or re-copy the file."
        )


class NpyFileSource(_FileRows):
    """A `.npy` file, read by row ranges with positioned reads."""

    def __init__(self, path: str | os.PathLike, *, feature: str = "array"):
        path = os.fspath(path)
        where = f"{feature}={path!r}"
        if not os.path.isfile(path):
            raise SourceError(
                f"{where}: no such file. Check the path (relative paths are "
                f"taken from {os.getcwd()!r})."
            )
        with open(path, "rb") as fp:
            st = os.fstat(fp.fileno())
            shape, fortran, dtype = _read_npy_header(fp, where=where)
            offset = fp.tell()
        layout = _RawLayout(
            path=path, offset=offset, dtype=dtype, shape=shape, fortran_order=fortran
        )
        _check_layout(layout, file_size=st.st_size, where=where)
        self._init_file(layout, st, where=where)
        self._spec = _spec_from(dtype, shape, where=where)
        self._description = os.path.abspath(path)


# What reading a damaged zip archive can raise, in the standard library.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError)


class NpzMemberSource(_FileRows):
    """One member of a `.npz` archive.

    Stored (``np.savez``) members are read in place; compressed
    (``np.savez_compressed``) members are decompressed as a stream, forward
    only, so a sequential writer still never holds more than one block.
    """

    def __init__(self, path: str | os.PathLike, member: str, *, feature: str = "array"):
        path = os.fspath(path)
        where = f"{feature}={path!r}:{member}"
        if not os.path.isfile(path):
            raise SourceError(f"{where}: no such file. Check the path.")
        try:
            with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
                st = os.fstat(raw.fileno())
                names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
                if member not in names:
                    raise SourceError(
                        f"{where}: the archive has no member {member!r}; it has "
                        f"{names}. Name one as PATH.npz:MEMBER."
                    )
                info = zf.getinfo(member + ".npy")
                with zf.open(info) as fp:
                    shape, fortran, dtype = _read_npy_header(fp, where=where)
                    header_len = fp.tell()
                compressed = info.compress_type != zipfile.ZIP_STORED
                offset, end = header_len, info.file_size
                if not compressed:
                    # Payload offset: local header (30 bytes + name + extra) + npy header;
                    # the member ends where its stored bytes do, not at the archive's end.
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    name_len = int.from_bytes(local[26:28], "little")
                    extra_len = int.from_bytes(local[28:30], "little")
                    start = info.header_offset + 30 + name_len + extra_len
                    offset, end = start + header_len, min(start + info.compress_size, st.st_size)
        except _ZIP_ERRORS as e:
            raise SourceError(
                f"{where}: {path!r} is not a valid .npz (zip) file ({e}). Re-create it "
                "with np.savez."
            ) from e
        self._compressed = compressed
        self._member = member
        layout = _RawLayout(
            path=path, offset=offset, dtype=dtype, shape=shape, fortran_order=fortran
        )
        _check_layout(layout, file_size=end, where=where)
        self._init_file(layout, st, where=where)
        self._spec = _spec_from(dtype, shape, where=where)
        self._description = f"{path}:{member}"
        self._stream: Any = None
        self._stream_pos = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self._compressed:
            return super().read(start, stop)
        lay = self._layout
        if lay.fortran_order:
            raise SourceError(
                f"{self._description}: compressed Fortran-order members cannot be "
                "read by rows. Save it with np.savez (uncompressed) or as C order."
            )
        row_bytes = self._row_bytes()
        want = lay.offset + start * row_bytes
        fd = self._open()
        try:
            if self._stream is None or want < self._stream_pos:
                self._close_stream()
                self._zip = zipfile.ZipFile(os.fdopen(os.dup(fd), "rb"))
                self._stream = self._zip.open(self._member + ".npy")
                self._stream_pos = 0
            if want > self._stream_pos:
                self._stream.seek(want)
            data = self._stream.read((stop - start) * row_bytes)
        except _ZIP_ERRORS as e:
            raise SourceError(f"{self._where}: the archive is damaged ({e}).") from e
        if len(data) != (stop - start) * row_bytes:
            raise self._changed()
        self._stream_pos = want + len(data)
        return np.frombuffer(data, lay.dtype).reshape((stop - start, *lay.shape[1:]))

    @property
    def random_access(self) -> bool:
        return not self._compressed

    def take(self, indices: np.ndarray) -> np.ndarray:
        if self._compressed:
            raise SourceError(
                f"{self._description}: a permuted write order needs random access, which "
                "a compressed .npz member does not allow. Save it with np.savez "
                "(uncompressed) or as .npy, or build without --permute."
            )
        return super().take(indices)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._zip.close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(_stream=None, _stream_pos=0)
        state.pop("_zip", None)
        return state


class RawFileSource(_FileRows):
    """A headerless file of C-order rows (what generator sources are spooled to)."""

    def __init__(
        self, path: str | os.PathLike, *, dtype: np.dtype, shape: tuple[int, ...], description: str
    ):
        path = os.fspath(path)
        layout = _RawLayout(
            path=path, offset=0, dtype=np.dtype(dtype), shape=tuple(shape), fortran_order=False
        )
        st = os.stat(path)
        _check_layout(layout, file_size=st.st_size, where=description)
        self._init_file(layout, st, where=description)
        self._spec = _spec_from(np.dtype(dtype), tuple(shape), where=description)
        self._description = description


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise SourceError("HDF5 sources need h5py: pip install 'tfds-bigarrays[hdf5]'.") from e
    return h5py


class Hdf5Source(_Described):
    """A dataset inside an HDF5 file, read chunk by chunk (h5py slicing)."""

    def __init__(self, path: str | os.PathLike, dataset: str, *, feature: str = "array"):
        h5py = _h5py()
        self._path, self._dataset = os.fspath(path), dataset
        where = f"{feature}={self._path!r}:{dataset}"
        if not os.path.isfile(self._path):
            raise SourceError(f"{where}: no such file. Check the path.")
        try:
            f = h5py.File(self._path, "r")
        except OSError as e:
            raise SourceError(f"{where}: not a readable HDF5 file ({e}).") from e
        with f:
            obj = f.get(dataset)
            if obj is None:
                raise SourceError(
                    f"{where}: the file has no {dataset!r}; it has {_h5_names(f)}. "
                    "Name a dataset as FILE.h5:/group/dataset."
                )
            if not isinstance(obj, h5py.Dataset):
                raise SourceError(
                    f"{where} is a group, not a dataset; it holds {_h5_names(obj)}. "
                    "Name one of its datasets, e.g. FILE.h5:/group/dataset."
                )
            shape, dtype = tuple(obj.shape), obj.dtype
        self._spec = _spec_from(dtype, shape, where=where)
        self._length = shape[0]
        self._description = f"{self._path}:{dataset}"
        self._where = where
        self._identity = identity(os.stat(self._path))

    random_access = True

    def __len__(self) -> int:
        return self._length

    def _file(self):
        """The file, checked to be the one the source was made from."""
        try:
            same = identity(os.stat(self._path)) == self._identity
        except OSError:
            same = False
        if not same:
            raise SourceError(
                f"{self._where} changed during the build (it was replaced or rewritten after "
                "the build opened it); nothing was written. Build again once it no longer changes."
            )
        return _h5py().File(self._path, "r")

    def read(self, start: int, stop: int) -> np.ndarray:
        with self._file() as f:
            return np.asarray(f[self._dataset][start:stop])

    def take(self, indices: np.ndarray) -> np.ndarray:
        with self._file() as f:
            return np.asarray(f[self._dataset][np.asarray(indices)])


def _zarr():
    try:
        import zarr
    except ImportError as e:
        raise SourceError("Zarr sources need zarr: pip install 'tfds-bigarrays[zarr]'.") from e
    return zarr


def is_zarr_store(path: str) -> bool:
    """A Zarr store: a `.zarr` folder, or a folder with Zarr v2/v3 metadata."""
    if path.rstrip("/").lower().endswith(".zarr"):
        return True
    if not os.path.isdir(path) or any(n.endswith(".npy") for n in os.listdir(path)):
        return False  # a folder of .npy shards, whatever else lies in it
    return any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup"))


def is_zarr_array(value: Any) -> bool:
    """A `zarr.Array` (checked without importing zarr)."""
    return type(value).__module__.startswith("zarr.") and hasattr(value, "chunks")


class ChunkedRows(_Described):
    """Rows of a chunked array, read in whole chunks along the first axis.

    Each read covers whole chunks, and the last chunk read is kept for the
    next read, so a build (which reads forward) decompresses or computes every
    chunk once, however block and shard boundaries fall. Memory: one block
    plus two chunks of rows.
    """

    _bounds: np.ndarray  # chunk starts along the first axis, then the length
    _kept: tuple[int, np.ndarray] | None = None  # (chunk index, its rows)

    def _chunks(self, start: int, stop: int) -> np.ndarray:
        """Rows `[start, stop)`, both chunk boundaries."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self._bounds[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *self._spec.shape), self._spec.dtype)
        b = self._bounds
        first = int(np.searchsorted(b, start, side="right")) - 1
        last = int(np.searchsorted(b, stop - 1, side="right")) - 1
        base = int(b[first])
        kept = self._kept  # once: another thread may replace it
        if kept is not None and kept[0] == first and last == first:
            return kept[1][start - base : stop - base]  # inside the kept chunk: no copy
        parts, lo = [], first
        if kept is not None and kept[0] == first:
            parts.append(kept[1])
            lo += 1
        parts.append(self._chunks(int(b[lo]), int(b[last + 1])))
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        cut = int(b[last]) - base
        # The last chunk's rows; a view into a longer block would keep it all alive.
        self._kept = (last, rows if cut == 0 else rows[cut:].copy())
        return rows[start - base : stop - base]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _kept=None)


class ZarrSource(ChunkedRows):
    """A Zarr array (v2 or v3 store), read chunk by chunk (`ChunkedRows`)."""

    def __init__(self, array: Any, *, feature: str, description: str, reopen=None):
        where = f"{feature}={description!r}"
        self._spec = _spec_from(array.dtype, tuple(array.shape), where=where)
        self._array = array
        self._reopen = reopen  # (store path, array path): how a worker reopens it
        n, c = int(array.shape[0]), max(1, int(array.chunks[0]))
        self._bounds = np.append(np.arange(0, n, c), n)
        self._description = description

    @classmethod
    def open(cls, store: str, array_path: str | None, *, feature: str) -> ZarrSource:
        zarr = _zarr()
        store = os.path.abspath(store)
        description = f"{store}:{array_path}" if array_path else store
        where = f"{feature}={description!r}"
        try:
            node = zarr.open(store, mode="r", path=(array_path or "").strip("/") or None)
        except (FileNotFoundError, KeyError, ValueError) as e:
            try:
                held = f"; the store holds arrays {_zarr_arrays(zarr.open(store, mode='r'))}"
            except (FileNotFoundError, KeyError, ValueError):
                held = ""
            raise SourceError(
                f"{where}: no such Zarr array ({type(e).__name__}){held}. Name an array "
                "as STORE.zarr or STORE.zarr:/group/array."
            ) from e
        if not hasattr(node, "chunks"):
            arrays = _zarr_arrays(node)
            example = arrays[0] if arrays else "group/array"
            hint = (
                f"{store}:/{example}"
                if store.lower().endswith(".zarr")
                else os.path.join(store, example)
            )
            raise SourceError(
                f"{where} is a group, not an array; it holds arrays {arrays}. Name one, "
                f"e.g. {hint}."
            )
        return cls(node, feature=feature, description=description, reopen=(store, array_path))

    random_access = True

    def _chunks(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array[start:stop])

    def take(self, indices: np.ndarray) -> np.ndarray:
        # Sorted indices (the writer sorts them): zarr reads each chunk once per call.
        return np.asarray(self._array.oindex[np.asarray(indices)])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self._reopen is not None:
            state["_array"] = None  # reopened from its path where it is read
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._array is None:
            store, path = self._reopen
            try:
                array = _zarr().open(store, mode="r", path=(path or "").strip("/") or None)
                same = tuple(array.shape) == (len(self), *self._spec.shape)
            except (FileNotFoundError, KeyError, ValueError):
                same = False
            if not same:
                raise SourceError(
                    f"{self._description} is missing or changed where the build reads it "
                    "(a worker must see the store at the same path, unchanged). Nothing "
                    "loadable was written; make the store visible there and build again."
                )
            self._array = array


def is_dask_array(value: Any) -> bool:
    """A `dask.array.Array` (checked without importing dask)."""
    return type(value).__module__.startswith("dask.array") and hasattr(value, "chunks")


class DaskArraySource(ChunkedRows):
    """A `dask.array.Array`: each read computes whole chunks, where it runs.

    In a build on a Dask cluster, that is the worker writing the shard; the
    graph is never computed whole, and only a block's chunks are in memory.
    """

    def __init__(self, array: Any, *, feature: str):
        where = f"{feature}=dask array {array.name!r}"
        if any(np.isnan(d) for d in array.shape):
            raise SourceError(
                f"{where} has unknown chunk sizes {array.shape}; call "
                "array.compute_chunk_sizes() first."
            )
        self._spec = _spec_from(array.dtype, tuple(int(d) for d in array.shape), where=where)
        self._array = array
        self._bounds = np.cumsum([0, *array.chunks[0]])
        self._description = f"dask array {array.name!r} {array.dtype}{list(array.shape)}"

    random_access = True

    def _chunks(self, start: int, stop: int) -> np.ndarray:
        # The synchronous scheduler: the rows are computed right here (on a
        # cluster, in the task writing the shard), not sent to another worker.
        return np.asarray(self._array[start:stop].compute(scheduler="sync"))

    def take(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._array[np.asarray(indices)].compute(scheduler="sync"))


def _zarr_arrays(node: Any) -> list[str]:
    if hasattr(node, "chunks"):
        return [node.path or "/"]
    prefix = f"{node.path}/" if node.path else ""  # full paths from the store's root
    return sorted(prefix + k for k, v in node.members(max_depth=None) if hasattr(v, "chunks"))


def _h5_names(group) -> list[str]:
    out: list[str] = []
    group.visit(lambda name: out.append(name) if len(out) < 20 else None)
    return out


class ShardDirSource(_Described):
    """A directory of `.npy` shards of one array, in sorted file-name order."""

    def __init__(self, directory: str | os.PathLike, *, feature: str = "array"):
        directory = os.fspath(directory)
        where = f"{feature}={directory!r}"
        names = sorted(n for n in os.listdir(directory) if n.endswith(".npy"))
        if not names:
            raise SourceError(f"{where}: the directory holds no .npy files.")
        self._shards = [NpyFileSource(os.path.join(directory, n), feature=feature) for n in names]
        first = self._shards[0]
        for shard in self._shards[1:]:
            if shard.spec != first.spec:
                raise SourceError(
                    f"{where}: ragged shards: {os.path.basename(shard.description)} has rows "
                    f"{shard.spec} but {os.path.basename(first.description)} has {first.spec}. "
                    "All shards need the same dtype and row shape."
                )
        self._spec = first.spec
        self._bounds = np.cumsum([0] + [len(s) for s in self._shards])
        self._description = f"{directory}/ ({len(names)} shards)"
        self._open_shard: int | None = None

    random_access = True

    def __len__(self) -> int:
        return int(self._bounds[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        first = int(np.searchsorted(self._bounds, start, side="right")) - 1
        for i in range(max(first, 0), len(self._shards)):
            lo, hi = int(self._bounds[i]), int(self._bounds[i + 1])
            if lo >= stop:
                break
            a, b = max(start, lo), min(stop, hi)
            if b > a:
                parts.append(self._shard(i).read(a - lo, b - lo))
        if not parts:
            return np.empty((0, *self._spec.shape), self._spec.dtype)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def take(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        which = np.searchsorted(self._bounds, indices, side="right") - 1
        parts = [
            self._shard(i).take(indices[which == i] - self._bounds[i]) for i in np.unique(which)
        ]
        return np.concatenate(parts)

    def _shard(self, i: int) -> NpyFileSource:
        """Shard `i`, keeping one shard file open at a time (a folder may hold
        thousands); each reopening checks the file is the one first seen."""
        if self._open_shard not in (None, i):
            self._shards[self._open_shard].close()
        self._open_shard = i
        return self._shards[i]


# PATH[start:stop], each bound a row number or a percent, as in TFDS's
# split slicing ('train[:90%]'); negative bounds count from the end.
_ROWS = re.compile(r"^(?P<path>.+)\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\]$")


def _bound(text: str | None, n: int, *, default: int, where: str) -> int:
    if text is None:
        return default
    if text.endswith("%"):
        percent = int(text[:-1])
        if not -100 <= percent <= 100:
            raise SourceError(f"{where}: {text} is outside -100%..100%.")
        # TFDS's rounding for percent slices (`rounding='closest'`), so that
        # x.npy[:90%] holds the rows tfds.load(split='all[:90%]') would.
        value = int(round(percent * n / 100.0))
    else:
        value = int(text)
        if not -n <= value <= n:
            raise SourceError(
                f"{where}: row {value} is out of range: the array has {n} rows. Give a row "
                f"in -{n}..{n}, or a percent."
            )
    return value + n if value < 0 else value


def layers(source: Any) -> list[Any]:
    """A source and the sources it wraps (row ranges, class labels), outermost first."""
    out = [source]
    while (source := getattr(source, "inner", None)) is not None:
        out.append(source)
    return out


class RowRangeSource(_Described):
    """Rows `[start, stop)` of another source: `x.npy[:90%]`, `x.npy[1000:]`."""

    def __init__(self, inner: ArraySource, start: int, stop: int, *, text: str):
        self.inner, self.start, self.stop = inner, start, stop
        self._spec = inner.spec
        self._description = f"{inner.description}[{text}]"
        self.random_access = getattr(inner, "random_access", False)

    @classmethod
    def parse(cls, inner: ArraySource, start: str | None, stop: str | None, *, where: str):
        n = len(inner)
        a = _bound(start, n, default=0, where=where)
        b = _bound(stop, n, default=n, where=where)
        if a > b:
            raise SourceError(
                f"{where}: the range starts at row {a} after it ends at row {b} (of {n}); "
                "give [start:stop] with start <= stop."
            )
        return cls(inner, a, b, text=f"{start or ''}:{stop or ''}")

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.inner.read(self.start + start, self.start + stop)

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.inner.take(np.asarray(indices) + self.start)  # type: ignore[attr-defined]

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


class ClassLabelSource(_Described):
    """Integer labels checked to lie in 0..num_classes-1, stored as uint32.

    uint32 values are written as an `int64_list` (see `_format/records.py`),
    exactly what `tfds.features.ClassLabel` parses, so stock TFDS reads the
    labels as int64 class ids.
    """

    def __init__(self, inner: ArraySource, num_classes: int, *, feature: str):
        self.inner, self.num_classes, self.feature = inner, num_classes, feature
        self._spec = FeatureSpec(dtype=np.dtype(np.uint32), shape=())
        self._description = inner.description
        self.random_access = getattr(inner, "random_access", False)

    def __len__(self) -> int:
        return len(self.inner)

    def _checked(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        bad = (values < 0) | (values >= self.num_classes)
        if bad.any():
            i = int(np.argmax(bad))
            # The row in the file, also when the source is a row range of it.
            row = int(rows[i]) + getattr(self.inner, "start", 0)
            raise SourceError(
                f"{self.feature}={self.description}: row {row} holds label "
                f"{values[i].item()!r}, outside 0..{self.num_classes - 1} ({self.num_classes} "
                "classes were given). Fix the labels, or give every class a name."
            )
        return values.astype(np.uint32)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._checked(self.inner.read(start, stop), np.arange(start, stop))

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self._checked(self.inner.take(indices), np.asarray(indices))  # type: ignore[attr-defined]

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


def _spec_from(dtype: np.dtype, shape: tuple[int, ...], *, where: str) -> FeatureSpec:
    if not shape:
        raise SourceError(f"{where} holds a 0-d array; the first axis must index examples.")
    try:
        return FeatureSpec(dtype=normalize_dtype(dtype, what=f"{where} dtype"), shape=shape[1:])
    except SpecError as e:
        raise SourceError(str(e)) from e


def _missing(feature: str, text: str, root: str | os.PathLike | None) -> str:
    """The no-such-file message, naming the folder a relative path was taken from."""
    if root is None:
        where = (
            "" if os.path.isabs(user_path(text)) else f" in {os.getcwd()!r} (the current directory)"
        )
        return f"{feature}={text!r}: no such file{where}. Check the path."
    folder = os.path.abspath(user_path(root))
    try:
        held = sorted(os.listdir(folder))
    except OSError:
        held = []
    holds = (
        f"it holds {', '.join(held[:8])}{', ...' if len(held) > 8 else ''}"
        if held
        else "it is empty"
    )
    return (
        f"{feature}={text!r}: no such file in the manual directory {os.fspath(root)!r} "
        f"({folder}), which relative paths are taken from; {holds}. Put the file there, "
        "or give its absolute path."
    )


def open_source(
    value: Any,
    *,
    feature: str,
    root: str | os.PathLike | None = None,
    fetch: Callable[[str], Any] | None = None,
) -> ArraySource:
    """Turns what a user wrote for a feature into an `ArraySource`.

    Args:
      value: a numpy array; a path to a `.npy` file; a directory of `.npy`
        shards; `PATH.npz:MEMBER` or a `.npz` path (the member then defaults
        to the feature name); `PATH.h5:/DATASET` (HDF5, default dataset: the
        feature name); a Zarr store `PATH.zarr` or `PATH.zarr:/group/array`,
        or a `zarr.Array`; or any object implementing `ArraySource`. A path may
        end in a row range, `x.npy[:90%]`, `x.npy[1000:2000]`, `x.npy[-10%:]`
        (row numbers or percents, rounded as TFDS rounds `train[:90%]`).
      feature: the feature's name, for messages and as default `.npz` member.
      root: directory that relative paths are taken from.
      fetch: downloads an http(s) URL and returns the local path (the TFDS
        download manager, which registers and verifies checksums).

    Returns:
      An `ArraySource`.

    Raises:
      SourceError: the value is none of the above, or the file is unusable.
    """
    if isinstance(value, np.ndarray):
        try:
            return InMemorySource(value, name=feature)
        except SpecError as e:
            raise SourceError(f"{feature}: {e}") from e
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        rows = _ROWS.match(text)
        if rows and not os.path.exists(user_path(text)):
            inner = open_source(rows["path"], feature=feature, root=root, fetch=fetch)
            where = f"{feature}={text!r}"
            return RowRangeSource.parse(inner, rows["start"], rows["stop"], where=where)
        path, member = text, None
        lowered = text.lower()
        for ext in (".npz:", ".h5:", ".hdf5:", ".zarr:"):
            if ext in lowered:
                cut = lowered.rindex(ext) + len(ext) - 1
                path, member = text[:cut], text[cut + 1 :]
        if path.lower().startswith(("http://", "https://")):
            if fetch is None:
                raise SourceError(
                    f"{feature}={text!r}: URL sources need a download manager (they work "
                    "in builds, not here)."
                )
            kind = os.path.splitext(path.split("?")[0])[1].lower()
            local = os.fspath(fetch(path))
        else:
            path = user_path(path)
            relative = not os.path.isabs(path)
            if root is not None and relative:
                path = os.path.join(user_path(root), path)
            known = (".npy", ".npz", ".h5", ".hdf5", ".zarr", "")
            if not os.path.exists(path) and os.path.splitext(path)[1].lower() in known:
                raise SourceError(_missing(feature, text, root if relative else None))
            if is_zarr_store(path):
                kind = ".zarr"
            else:
                kind = "dir" if os.path.isdir(path) else os.path.splitext(path)[1].lower()
            local = path
        if kind == ".zarr":
            return ZarrSource.open(local, member, feature=feature)
        if kind in (".h5", ".hdf5"):
            return Hdf5Source(local, member or feature, feature=feature)
        if kind == "dir":
            return ShardDirSource(local, feature=feature)
        if kind == ".npz":
            return NpzMemberSource(local, member or feature, feature=feature)
        if kind == ".npy":
            return NpyFileSource(local, feature=feature)
        raise SourceError(
            f"{feature}={text!r}: unknown source kind. Use a .npy file, a directory of "
            ".npy shards, PATH.npz:MEMBER, PATH.h5:/DATASET, STORE.zarr[:/ARRAY], an http(s) URL of one of "
            "those, or a numpy array."
        )
    if is_dask_array(value):
        return DaskArraySource(value, feature=feature)
    if is_zarr_array(value):
        root = getattr(value.store, "root", None)  # a LocalStore's folder
        reopen = None
        if root is not None and "://" not in str(root):
            # Where it is unpickled (a Beam or Dask worker) it is reopened by
            # absolute path: a pickled LocalStore keeps a relative root, which a
            # worker in another directory would resolve to an empty store,
            # reading zarr's fill value.
            reopen = (os.path.abspath(os.fspath(root)), value.path or None)
        name = f"{reopen[0]}:{reopen[1]}" if reopen and reopen[1] else (reopen or [""])[0]
        return ZarrSource(
            value, feature=feature, description=name or f"zarr array {value.path or '/'!r}",
            reopen=reopen,
        )  # fmt: skip
    if isinstance(value, ArraySource):
        return value
    raise SourceError(
        f"{feature}={value!r} (type {type(value).__name__}) is not an array source. "
        "Pass a numpy array, a .npy path or PATH.npz:MEMBER."
    )

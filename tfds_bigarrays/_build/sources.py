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
import os
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tfds_bigarrays._errors import TfdsBigarraysError
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


def _read_npy_header(fp, *, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Reads a `.npy` header without ever evaluating a pickle.

    numpy's own header parser uses `ast.literal_eval`; the payload is never
    touched here, so an object array is refused before a byte of it is read.
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
    raw = fp.read(hlen)
    if len(raw) < hlen:
        raise SourceError(f"{where} is truncated inside its header.")
    try:
        header = ast.literal_eval(raw.decode("utf8" if major == 3 else "latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise SourceError(f"{where} has a malformed .npy header: {raw[:80]!r}.") from e
    try:
        dtype = np.lib.format.descr_to_dtype(descr)
    except (TypeError, ValueError) as e:
        raise SourceError(f"{where} has an unreadable dtype {descr!r}.") from e
    if dtype.hasobject:
        raise SourceError(
            f"{where} holds Python objects (dtype={dtype}); such files can only "
            "be read by unpickling, which tfds_bigarrays never does. Save a "
            "numeric array instead (np.save with a fixed-width dtype)."
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype


class _MappedRows(_Described):
    """Reads row ranges of an uncompressed payload through a short-lived memmap."""

    _layout: _RawLayout

    def __len__(self) -> int:
        return self._layout.shape[0]

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[np.memmap]:
        """The whole payload, mapped for one read and unmapped right after."""
        lay = self._layout
        mm = np.memmap(
            lay.path,
            dtype=lay.dtype,
            mode="r",
            offset=lay.offset,
            shape=lay.shape,
            order="F" if lay.fortran_order else "C",
        )
        try:
            yield mm
        finally:
            mm._mmap.close()  # type: ignore[attr-defined]  # unmap now, not at GC

    def read(self, start: int, stop: int) -> np.ndarray:
        with self._mapped() as mm:
            return np.array(mm[start:stop], order="C")

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at sorted `indices` (for a permuted write order)."""
        with self._mapped() as mm:
            return np.array(mm[indices], order="C")

    @property
    def random_access(self) -> bool:
        return True


def _check_layout(layout: _RawLayout, *, file_size: int, where: str) -> None:
    needed = math.prod(layout.shape) * layout.dtype.itemsize  # Python ints: no overflow
    if layout.offset + needed > file_size:
        raise SourceError(
            f"{where} is truncated: its header promises shape {layout.shape} "
            f"{layout.dtype} ({needed} bytes of data) but only "
            f"{max(0, file_size - layout.offset)} bytes follow the header. "
            "Re-create or re-copy the file."
        )
    if not layout.shape:
        raise SourceError(f"{where} holds a 0-d array; the first axis must index examples.")


class NpyFileSource(_MappedRows):
    """A `.npy` file, read by row ranges through a memory map."""

    def __init__(self, path: str | os.PathLike, *, feature: str = "array"):
        path = os.fspath(path)
        where = f"{feature}={path!r}"
        if not os.path.isfile(path):
            raise SourceError(
                f"{where}: no such file. Check the path (relative paths are "
                f"taken from {os.getcwd()!r})."
            )
        with open(path, "rb") as fp:
            shape, fortran, dtype = _read_npy_header(fp, where=where)
            offset = fp.tell()
        self._layout = _RawLayout(
            path=path, offset=offset, dtype=dtype, shape=shape, fortran_order=fortran
        )
        _check_layout(self._layout, file_size=os.path.getsize(path), where=where)
        self._spec = _spec_from(dtype, shape, where=where)
        self._description = os.path.abspath(path)


class NpzMemberSource(_MappedRows):
    """One member of a `.npz` archive.

    Stored (``np.savez``) members are memory-mapped in place; compressed
    (``np.savez_compressed``) members are decompressed as a stream, forward
    only, so a sequential writer still never holds more than one block.
    """

    def __init__(self, path: str | os.PathLike, member: str, *, feature: str = "array"):
        path = os.fspath(path)
        where = f"{feature}={path!r}:{member}"
        if not os.path.isfile(path):
            raise SourceError(f"{where}: no such file. Check the path.")
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise SourceError(f"{where}: {path!r} is not a valid .npz (zip) file.") from e
        with zf:
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
            self._compressed = info.compress_type != zipfile.ZIP_STORED
            if not self._compressed:
                # Payload offset: local header (30 bytes + name + extra) + npy header.
                with open(path, "rb") as raw:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    name_len = int.from_bytes(local[26:28], "little")
                    extra_len = int.from_bytes(local[28:30], "little")
                offset = info.header_offset + 30 + name_len + extra_len + header_len
            else:
                offset = header_len
        self._path, self._member = path, member
        self._layout = _RawLayout(
            path=path, offset=offset, dtype=dtype, shape=shape, fortran_order=fortran
        )
        size = os.path.getsize(path) if not self._compressed else info.file_size
        _check_layout(self._layout, file_size=size, where=where)
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
        row_bytes = self._spec.row_bytes if self._spec.shape else lay.dtype.itemsize
        want = lay.offset + start * row_bytes
        if self._stream is None or want < self._stream_pos:
            self.close()
            self._zip = zipfile.ZipFile(self._path)
            self._stream = self._zip.open(self._member + ".npy")
            self._stream_pos = 0
        if want > self._stream_pos:
            self._stream.seek(want)
        data = self._stream.read((stop - start) * row_bytes)
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

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._zip.close()
            self._stream = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_stream=None, _stream_pos=0)
        state.pop("_zip", None)
        return state


class RawFileSource(_MappedRows):
    """A headerless file of C-order rows (what generator sources are spooled to)."""

    def __init__(
        self, path: str | os.PathLike, *, dtype: np.dtype, shape: tuple[int, ...], description: str
    ):
        path = os.fspath(path)
        self._layout = _RawLayout(
            path=path, offset=0, dtype=np.dtype(dtype), shape=tuple(shape), fortran_order=False
        )
        _check_layout(self._layout, file_size=os.path.getsize(path), where=description)
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

    random_access = True

    def __len__(self) -> int:
        return self._length

    def read(self, start: int, stop: int) -> np.ndarray:
        with _h5py().File(self._path, "r") as f:
            return np.asarray(f[self._dataset][start:stop])

    def take(self, indices: np.ndarray) -> np.ndarray:
        with _h5py().File(self._path, "r") as f:
            return np.asarray(f[self._dataset][np.asarray(indices)])


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
                parts.append(self._shards[i].read(a - lo, b - lo))
        if not parts:
            return np.empty((0, *self._spec.shape), self._spec.dtype)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def take(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        which = np.searchsorted(self._bounds, indices, side="right") - 1
        parts = [
            self._shards[i].take(indices[which == i] - self._bounds[i]) for i in np.unique(which)
        ]
        return np.concatenate(parts)


def _spec_from(dtype: np.dtype, shape: tuple[int, ...], *, where: str) -> FeatureSpec:
    if not shape:
        raise SourceError(f"{where} holds a 0-d array; the first axis must index examples.")
    try:
        return FeatureSpec(dtype=normalize_dtype(dtype, what=f"{where} dtype"), shape=shape[1:])
    except SpecError as e:
        raise SourceError(str(e)) from e


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
        feature name); or any object implementing `ArraySource`.
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
        path, member = text, None
        lowered = text.lower()
        for ext in (".npz:", ".h5:", ".hdf5:"):
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
            if root is not None and not os.path.isabs(path):
                path = os.path.join(os.fspath(root), path)
            kind = "dir" if os.path.isdir(path) else os.path.splitext(path)[1].lower()
            local = path
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
            ".npy shards, PATH.npz:MEMBER, PATH.h5:/DATASET, an http(s) URL of one of "
            "those, or a numpy array."
        )
    if isinstance(value, ArraySource):
        return value
    raise SourceError(
        f"{feature}={value!r} (type {type(value).__name__}) is not an array source. "
        "Pass a numpy array, a .npy path or PATH.npz:MEMBER."
    )

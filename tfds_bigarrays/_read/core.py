"""The read core (core.cc) for numpy: no TensorFlow here.

`Reader` reads groups of a split's rows (the same groups, in the same order,
as the TensorFlow op) or any rows, into numpy arrays; `decode` checks and
decodes frames held in memory. The library is called through ctypes, which
releases the GIL for each call, so several threads read at once.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import pathlib
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import Identity
from tfds_bigarrays._files import identity as file_identity
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._read.plan import ReadError, RecordLayout, ShardRead, record_layout

_HERE = pathlib.Path(__file__).parent
_ERR_BYTES = 4096
_I64 = ctypes.POINTER(ctypes.c_int64)
_I32 = ctypes.POINTER(ctypes.c_int32)
_U8 = ctypes.POINTER(ctypes.c_uint8)
_STRS = ctypes.POINTER(ctypes.c_char_p)

REBUILD_HINT = (
    "reinstall tfds-bigarrays so that its native parts are compiled "
    "(`pip install --force-reinstall --no-deps tfds-bigarrays`; in a checkout, `make install`)"
)


class NotBuiltError(TfdsBigarraysError, RuntimeError):
    """A compiled part of tfds_bigarrays is missing or cannot be loaded."""


class ShardReadError(ReadError):
    """A shard is missing, shorter than recorded, replaced or corrupt (the message names it)."""


class _LayoutConfig(ctypes.Structure):
    _fields_ = [
        ("n_fields", ctypes.c_int64),
        ("field_length", _I64),
        ("field_output", _I32),
        ("constants", _U8),
        ("n_constants", ctypes.c_int64),
        ("n_outputs", ctypes.c_int64),
        ("output_kind", _I32),
        ("output_names", _STRS),
        ("verify", ctypes.c_int),
    ]


class _ReaderConfig(ctypes.Structure):
    _fields_ = [
        ("layout", _LayoutConfig),
        ("n_reads", ctypes.c_int64),
        ("names", _STRS),
        ("skips", _I64),
        ("takes", _I64),
        ("identities", _I64),
        ("block_rows", ctypes.c_int64),
        ("group_blocks", ctypes.c_int64),
        ("window_groups", ctypes.c_int64),
        ("shuffle", ctypes.c_int),
        ("lookahead", ctypes.c_int64),
        ("mapped", ctypes.c_int),
        ("read_threads", ctypes.c_int64),
        ("fill_pieces", ctypes.c_int),
    ]


def library_path() -> pathlib.Path | None:
    found = sorted(_HERE.glob("_core*.so"))
    return found[0] if found else None


@functools.cache
def lib() -> ctypes.CDLL:
    """The core's shared library, loaded once."""
    path = library_path()
    if path is None:
        raise NotBuiltError(
            f"The read core of tfds_bigarrays is not built in {_HERE}: {REBUILD_HINT}."
        )
    try:
        so = ctypes.CDLL(str(path))
    except OSError as e:
        raise NotBuiltError(f"The read core {path} cannot be loaded ({e}): {REBUILD_HINT}.") from e
    sig = {
        "tbr_layout_new": (ctypes.c_void_p, [ctypes.POINTER(_LayoutConfig), ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_layout_free": (None, [ctypes.c_void_p]),
        "tbr_output_row_bytes": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_int64]),
        "tbr_reader_layout": (ctypes.c_void_p, [ctypes.c_void_p]),
        "tbr_decode_rows": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_int64, _I64, _STRS, ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_decode": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p), _I64, _STRS, _I64, _I64, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_reader_new": (ctypes.c_void_p, [ctypes.POINTER(_ReaderConfig), ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_reader_free": (None, [ctypes.c_void_p]),
        "tbr_num_rows": (ctypes.c_int64, [ctypes.c_void_p]),
        "tbr_num_groups": (ctypes.c_int64, [ctypes.c_void_p]),
        "tbr_group_rows": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_int64]),
        "tbr_read_group": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_read_rows": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64, _I64, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]),
        "tbr_permute": (None, [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64, _I64, _I64]),
        "tbr_row_order": (None, [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64, _I64]),
        "tbr_crc32c": (ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]),
        "tbr_crc_level": (ctypes.c_int, []),
        "tbr_set_crc_level": (None, [ctypes.c_int]),
        "tbr_open_descriptors": (ctypes.c_int64, []),
        "tbr_descriptor_limit": (ctypes.c_int64, []),
        "tbr_mapped_bytes": (ctypes.c_int64, []),
    }  # fmt: skip
    for name, (restype, argtypes) in sig.items():
        fn = getattr(so, name)
        fn.restype, fn.argtypes = restype, argtypes
    return so


def _i64(values: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _ptr(array: np.ndarray, kind: Any) -> Any:
    return array.ctypes.data_as(kind)


def _strings(values: Sequence[str]) -> Any:
    encoded = [os.fsencode(v) for v in values]
    return (ctypes.c_char_p * max(1, len(encoded)))(*encoded)


class _Keep:
    """Holds the buffers a config points into until the call that reads it."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def __call__(self, value: Any) -> Any:
        self.items.append(value)
        return value


def _layout_config(layout: RecordLayout, *, verify: bool, keep: _Keep) -> _LayoutConfig:
    lengths = keep(_i64(layout.field_lengths))
    outputs = keep(np.ascontiguousarray(layout.field_outputs, dtype=np.int32))
    constants = keep(np.frombuffer(layout.constants or b"\0", np.uint8).copy())
    kinds = keep(np.ascontiguousarray(layout.kinds, dtype=np.int32))
    names = keep(_strings(layout.names))
    return _LayoutConfig(
        n_fields=len(layout.field_lengths),
        field_length=_ptr(lengths, _I64),
        field_output=_ptr(outputs, _I32),
        constants=_ptr(constants, _U8),
        n_constants=len(layout.constants),
        n_outputs=len(layout.names),
        output_kind=_ptr(kinds, _I32),
        output_names=names,
        verify=int(verify),
    )


def _outputs(layout: RecordLayout, n: int) -> tuple[list[np.ndarray], Any]:
    arrays = [np.empty((n, *spec.shape), spec.dtype) for spec in layout.specs]
    pointers = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    return arrays, pointers


def _check_rows(handle: int, layout: RecordLayout) -> None:
    """The numpy outputs hold exactly the rows the core writes (as op.cc checks)."""
    for i, spec in enumerate(layout.specs):
        if lib().tbr_output_row_bytes(handle, i) != spec.row_bytes:
            raise ShardReadError(f"tfds_bigarrays read core: output {i} does not match its field")


def _check(status: int, err: Any) -> None:
    if status != 0:
        raise ShardReadError(err.value.decode(errors="replace"))


def identity(filename: str) -> Identity:
    """What the core checks a shard against when it opens it (see core.h)."""
    return file_identity(os.stat(filename))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ReaderArgs:
    reads: tuple[ShardRead, ...]
    codec: RecordCodec
    block_rows: int
    group_blocks: int
    window_groups: int
    shuffle: bool
    verify: bool
    lookahead: int
    mapped: bool
    read_threads: int
    fill_pieces: bool
    identities: tuple[tuple[int, int, int, int], ...]


class Reader:
    """Reads a split's rows with the core; outputs are numpy arrays by feature.

    Args:
      reads: the split's shard reads, in order.
      codec: the records' codec.
      block_rows, group_blocks, window_groups: the plan's blocks, groups and
        windows (`plan_groups`).
      shuffle: permute blocks and rows by the epoch seed.
      verify: check every record's CRC32C.
      lookahead: groups ahead announced to the kernel while reads are cold.
      mapped: memory-map the shards (kept mapped across readers).
      read_threads: threads sharing the reads of one big group.
      fill_pieces: while cold, read the look-ahead's 2 MiB pieces into the
        page cache as huge pages (`GroupPlan.fill_pieces`).
      identities: per read, the shard identity to insist on (`identity`);
        None takes each shard's identity now.

    Picklable: the state is the configuration, and the shards are opened
    again where it is unpickled (no data travels with it).
    """

    def __init__(
        self,
        reads: Sequence[ShardRead],
        codec: RecordCodec,
        *,
        block_rows: int = 1,
        group_blocks: int = 1,
        window_groups: int = 1,
        shuffle: bool = False,
        verify: bool = True,
        lookahead: int = 0,
        mapped: bool = False,
        read_threads: int = 1,
        fill_pieces: bool = False,
        identities: Sequence[tuple[int, int, int, int]] | None = None,
    ) -> None:
        if identities is None:
            identities = [_identity_or_unknown(r.filename) for r in reads]
        self._args = _ReaderArgs(
            reads=tuple(reads),
            codec=codec,
            block_rows=block_rows,
            group_blocks=group_blocks,
            window_groups=window_groups,
            shuffle=shuffle,
            verify=verify,
            lookahead=lookahead,
            mapped=mapped,
            read_threads=read_threads,
            fill_pieces=fill_pieces,
            identities=tuple((int(a), int(b), int(c), int(d)) for a, b, c, d in identities),
        )
        self._open()

    def _open(self) -> None:
        a = self._args
        self.codec = a.codec
        self.layout = record_layout(self.codec)
        self.names = self.layout.names
        keep = _Keep()
        ids = keep(_i64(np.asarray(a.identities, np.int64).reshape(-1)))
        config = _ReaderConfig(
            layout=_layout_config(self.layout, verify=a.verify, keep=keep),
            n_reads=len(a.reads),
            names=keep(_strings([r.filename for r in a.reads])),
            skips=_ptr(keep(_i64([r.skip for r in a.reads])), _I64),
            takes=_ptr(keep(_i64([r.take for r in a.reads])), _I64),
            identities=_ptr(ids, _I64) if a.reads else None,
            block_rows=a.block_rows,
            group_blocks=a.group_blocks,
            window_groups=a.window_groups,
            shuffle=int(a.shuffle),
            lookahead=a.lookahead,
            mapped=int(a.mapped),
            read_threads=a.read_threads,
            fill_pieces=int(a.fill_pieces),
        )
        err = ctypes.create_string_buffer(_ERR_BYTES)
        handle = lib().tbr_reader_new(ctypes.byref(config), err, _ERR_BYTES)
        if not handle:
            raise ShardReadError(err.value.decode(errors="replace"))
        self._handle = handle
        # Freed with the reader; not at exit, when the library may be gone first.
        weakref.finalize(self, lib().tbr_reader_free, handle).atexit = False
        _check_rows(lib().tbr_reader_layout(handle), self.layout)
        self.num_rows = lib().tbr_num_rows(handle)
        self.num_groups = lib().tbr_num_groups(handle)

    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = state["args"]
        self._open()

    def group_rows(self, group: int) -> int:
        return lib().tbr_group_rows(self._handle, group)

    def read_group(self, group: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Group `group` of the epoch keyed by `seed` (what the op reads)."""
        n = self.group_rows(int(group))
        arrays, pointers = _outputs(self.layout, n)
        err = ctypes.create_string_buffer(_ERR_BYTES)
        status = lib().tbr_read_group(
            self._handle, int(group), int(seed) & (2**64 - 1), pointers, err, _ERR_BYTES
        )
        _check(status, err)
        return dict(zip(self.names, arrays, strict=True))

    def read_rows(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Split rows `rows`, in that order, in one call."""
        rows = _i64(rows).reshape(-1)
        arrays, pointers = _outputs(self.layout, len(rows))
        err = ctypes.create_string_buffer(_ERR_BYTES)
        status = lib().tbr_read_rows(
            self._handle, len(rows), _ptr(rows, _I64), pointers, err, _ERR_BYTES
        )
        _check(status, err)
        return dict(zip(self.names, arrays, strict=True))


def _identity_or_unknown(filename: str) -> tuple[int, int, int, int]:
    try:
        return identity(filename)
    except OSError:
        return (-1, -1, -1, -1)  # reported, by name, when read


def decode(
    codec: RecordCodec,
    blocks: Sequence[bytes],
    names: Sequence[str],
    *,
    first_rows: Sequence[int] | None = None,
    dest: Sequence[int] | None = None,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """Checks and decodes whole frames held in memory.

    Args:
      codec: the records' codec.
      blocks: whole frames; block i comes from shard `names[i]`, starting at
        its frame `first_rows[i]` (for messages; None: not known).
      dest: frame r goes to output row dest[r] (None: row r).
      verify: check every record's CRC32C.
    """
    if len(names) != len(blocks) or (first_rows is not None and len(first_rows) != len(blocks)):
        raise ValueError(
            f"decode: {len(blocks)} blocks need as many names and first rows "
            f"(got {len(names)}, {None if first_rows is None else len(first_rows)})."
        )
    layout = record_layout(codec)
    keep = _Keep()
    config = _layout_config(layout, verify=verify, keep=keep)
    err = ctypes.create_string_buffer(_ERR_BYTES)
    handle = lib().tbr_layout_new(ctypes.byref(config), err, _ERR_BYTES)
    if not handle:
        raise ShardReadError(err.value.decode(errors="replace"))
    try:
        bufs = [np.frombuffer(b, np.uint8) if len(b) else np.zeros(1, np.uint8) for b in blocks]
        lens = _i64([len(b) for b in blocks])
        c_names = _strings(names)
        n = lib().tbr_decode_rows(handle, len(blocks), _ptr(lens, _I64), c_names, err, _ERR_BYTES)
        if n < 0:
            raise ShardReadError(err.value.decode(errors="replace"))
        if dest is not None and len(dest) != n:
            raise ValueError(f"decode: dest has {len(dest)} rows, the blocks {n}.")
        _check_rows(handle, layout)
        arrays, pointers = _outputs(layout, n)
        c_bufs = (ctypes.c_void_p * max(1, len(bufs)))(*[b.ctypes.data for b in bufs])
        c_first = _i64(first_rows) if first_rows is not None else None
        c_dest = _i64(dest) if dest is not None else None
        status = lib().tbr_decode(
            handle, len(blocks), c_bufs, _ptr(lens, _I64), c_names,
            _ptr(c_first, _I64) if c_first is not None else None,
            _ptr(c_dest, _I64) if c_dest is not None else None, pointers, err, _ERR_BYTES,
        )  # fmt: skip
        _check(status, err)
    finally:
        lib().tbr_layout_free(handle)
    return dict(zip(layout.names, arrays, strict=True))


def permute(n: int, seed: int, indices: np.ndarray) -> np.ndarray:
    """The core's block permutation (the twin of `_format.permutation.Permutation`)."""
    x = _i64(indices).reshape(-1)
    out = np.empty_like(x)
    lib().tbr_permute(n, seed, len(x), _ptr(x, _I64), _ptr(out, _I64))
    return out


def row_order(seed: int, group: int, n: int) -> np.ndarray:
    out = np.empty(n, np.int64)
    lib().tbr_row_order(seed & (2**64 - 1), group, n, _ptr(out, _I64))
    return out


def crc32c(data: bytes | np.ndarray, *, level: int = -1) -> int:
    """CRC32C of the bytes of `data` on the core's path `level` (0 table, 1 CRC32, 2 folding, -1 best)."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    buf = np.frombuffer(raw, np.uint8) if raw else np.zeros(1, np.uint8)
    return lib().tbr_crc32c(buf.ctypes.data, len(raw), level)


def crc_level() -> int:
    return lib().tbr_crc_level()


def set_crc_level(level: int) -> None:
    lib().tbr_set_crc_level(level)


def open_descriptors() -> int:
    return lib().tbr_open_descriptors()


def descriptor_limit() -> int:
    return lib().tbr_descriptor_limit()


def mapped_bytes() -> int:
    return lib().tbr_mapped_bytes()

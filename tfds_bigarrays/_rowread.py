"""Random-access reads of a split's rows, in numpy (no TensorFlow here).

Every record of a dataset has the same length, so row `i` of a shard sits at
byte `i * frame_bytes`: a split is one array of rows spread over files, and
any block of rows can be read with one `pread` at a computed offset. This is
what lets the reader shuffle whole epochs without a shuffle buffer (it reads
blocks in a permuted order) and build each batch with one copy of our own: a
scatter read puts each feature's bytes straight from the page cache into its
(permuted) row of the batch, where tf.data's file readers and decoders made
five or six copies.

The pipeline reads through the TensorFlow op (`_read_op.cc`), which does what
`GroupReader.read_group` does, with the same C loops (`_readcore.h`), into
TensorFlow's own tensors. This module plans the op's attributes
(`GroupReader.op_attrs`) and is the fallback where the op is not available:
`GroupReader` is then called from a `tf.numpy_function` by several tf.data
threads at once (its loops, `_native`, release the GIL), and TensorFlow 2.21
copies a `tf.numpy_function`'s outputs once more, while holding the GIL,
whatever their alignment (about 0.27 ms per 4 MiB batch here). With
`mapped=True` the shards stay memory-mapped and rows are copied out of the
mapping (no system call, no kernel copy; the mapped pages count in the
process's RSS).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import itertools
import mmap
import os
import sys
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np

from tfds_bigarrays import _native
from tfds_bigarrays._encoding import (
    BYTES,
    RecordCodec,
    RecordError,
    _read_fixed_varints,
    _unmask,
)
from tfds_bigarrays._permutation import Permutation

_HEADER = 12  # uint64 length + masked crc of it
_SEED_MASK = (1 << 63) - 1
# Reads faster than this came from the page cache; announcing a block taking
# longer than this meant starting a read: the shards are (partly) on disk.
_WARM_BYTES_PER_S = 2e9
_COLD_HINT_SECONDS = 10e-6
_WARM_PROBE_EVERY = 8
_OWNERS = itertools.count()  # reader ids, for the shared descriptor cache
_MAX_DIRECT = 128  # features scattered straight to their outputs (see _plan_segments)
_ALIGN = 64  # cache-line aligned outputs (TF 2.21 copies them anyway, see above)


class ShardReadError(ValueError):
    """A shard is shorter than its recorded length, unreadable or corrupt.

    A ValueError, so that inside `tf.numpy_function` it surfaces as
    `tf.errors.InvalidArgumentError` with this message.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowSpace:
    """A split's rows as one array: read `i` covers rows [starts[i], starts[i+1]).

    Attributes:
      filenames: the shard of each read.
      skips: rows of the shard before the read's first row.
      starts: cumulative row counts, one longer than `filenames`.
    """

    filenames: tuple[str, ...]
    skips: tuple[int, ...]
    starts: tuple[int, ...]

    @classmethod
    def from_reads(cls, reads: Sequence[tuple[str, int, int, int]]) -> RowSpace:
        """From (file, skip, take, rows in shard) reads, in order."""
        starts = [0]
        for _, _, take, _ in reads:
            starts.append(starts[-1] + take)
        return cls(
            filenames=tuple(r[0] for r in reads),
            skips=tuple(r[1] for r in reads),
            starts=tuple(starts),
        )

    @property
    def num_rows(self) -> int:
        return self.starts[-1]

    def runs(self, first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, ...]:
        """Rows [first[j], first[j] + count[j]) as runs inside single reads.

        Returns (read index, row within its shard, rows) per run, in order; a
        block that straddles two reads becomes two runs.
        """
        starts = np.asarray(self.starts, np.int64)
        skips = np.asarray(self.skips, np.int64)
        lo = np.asarray(first, np.int64)
        hi = lo + np.asarray(count, np.int64)
        read = np.searchsorted(starts, lo, side="right") - 1
        last = np.searchsorted(starts, np.maximum(hi - 1, lo), side="right") - 1
        if np.array_equal(read, last):  # the common case: no block straddles
            return read, lo - starts[read] + skips[read], hi - lo
        reads, rows, counts = [], [], []
        for a, b, r0, r1 in zip(
            lo.tolist(), hi.tolist(), read.tolist(), last.tolist(), strict=True
        ):
            for r in range(r0, r1 + 1):
                s, e = max(a, self.starts[r]), min(b, self.starts[r + 1])
                if e > s:
                    reads.append(r)
                    rows.append(s - self.starts[r] + self.skips[r])
                    counts.append(e - s)
        return (
            np.asarray(reads, np.int64),
            np.asarray(rows, np.int64),
            np.asarray(counts, np.int64),
        )


def aligned_empty(
    shape: Sequence[int], dtype: np.typing.DTypeLike, *, pool: BufferPool | None = None
) -> np.ndarray:
    """An uninitialized array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = pool.take(nbytes + _ALIGN) if pool is not None else np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


class BufferPool:
    """Recycles output buffers once nothing references them any more.

    TensorFlow copies a group's outputs when the call returns (TF 2.21), so
    a buffer is usually free again at once. A fresh multi-megabyte buffer
    per group costs a page fault per 4 KiB page (the kernel zeroes each
    one); a recycled one does not. A buffer is reused only
    when the pool holds the sole reference, so batches that a caller keeps
    are never overwritten. The pool keeps at most `limit_bytes` of buffers
    (raised by `reserve`): past that, the least recently used free buffers
    are dropped, and new ones that do not fit are plain allocations.

    One pool serves every reader of the process (`POOL`): TensorFlow keeps a
    pipeline's functions, and so its reader, alive after the dataset is gone,
    so memory held per reader would grow with every `tfds.load`.
    """

    def __init__(self, *, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._buffers: list[np.ndarray] = []  # least recently used first
        self._lock = threading.Lock()
        # The count getrefcount reports, in `_refcounts`, for a buffer that
        # only the pool holds (3 on CPython 3.11: the list, the loop variable,
        # the argument). Measured rather than assumed, so that an interpreter
        # that counts differently never hands out a buffer in use.
        self._free_refs = self._refcounts([np.empty(1, np.uint8)])[0]

    @staticmethod
    def _refcounts(buffers: list[np.ndarray]) -> list[int]:
        return [sys.getrefcount(buf) for buf in buffers]

    def reserve(self, nbytes: int) -> None:
        """Lets the pool keep at least `nbytes` (a reader's working set)."""
        with self._lock:
            self._limit = max(self._limit, nbytes)

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            counts = self._refcounts(self._buffers)
            for i, (buf, count) in enumerate(zip(self._buffers, counts, strict=True)):
                if buf.size == nbytes and count <= self._free_refs:
                    # Most recently used last. Claimed while the lock is held:
                    # the view taken from it raises its count before another
                    # thread can look.
                    self._buffers.append(self._buffers.pop(i))
                    return buf[:]
            # Drop free buffers, least recently used first, until this one fits.
            held = sum(buf.size for buf in self._buffers)
            kept = []
            for buf, count in zip(self._buffers, counts, strict=True):
                if held + nbytes > self._limit and count <= self._free_refs:
                    held -= buf.size
                else:
                    kept.append(buf)
            self._buffers = kept
            buf = np.empty(nbytes, np.uint8)
            if held + nbytes <= self._limit:
                self._buffers.append(buf)
            return buf


POOL = BufferPool(limit_bytes=64 << 20)


class _OpenShards:
    """Open shards, shared by all readers: descriptors, or whole-file mappings.

    Descriptors are keyed by (reader, read): a reader opens its files after
    its dataset was loaded, so a shard rewritten at the same path later is
    never read through an older reader's descriptor. Mappings (`mapped`) are
    keyed by the file's identity (device, inode, size, mtime), so readers of
    the same shards share them (each mapping's pages count in RSS once) and a
    rewritten shard, a new file renamed into place, gets a mapping of its own.
    Shards in use by a read in flight are never closed; idle ones are closed
    least recently used first once the open ones cost more than `limit`: a
    count of descriptors, or the bytes mapped (raised by `reserve`).
    """

    def __init__(self, *, limit: int, mapped: bool = False) -> None:
        self._limit = limit
        self._mapped = mapped
        self._open: dict[Hashable, Any] = {}  # insertion order: LRU first
        self._users: dict[Hashable, int] = {}
        self._cost = 0
        self._lock = threading.Lock()

    def reserve(self, limit: int) -> None:
        with self._lock:
            self._limit = max(self._limit, limit)

    def acquire(
        self, owner: int, reads: list[int], names: Sequence[str]
    ) -> tuple[dict[int, Any], list[Hashable]]:
        """Handles of `reads` (read index -> fd or mapping), and the keys to `release`."""
        out: dict[int, Any] = {}
        keys: list[Hashable] = []
        with self._lock:
            try:
                for read in reads:
                    key = _identity(names[read]) if self._mapped else (owner, read)
                    handle = self._open.pop(key, None)
                    if handle is None:
                        handle = (
                            _map_shard(names[read]) if self._mapped else _open_shard(names[read])
                        )
                        self._cost += self._cost_of(handle)
                    self._open[key] = handle  # most recently used last
                    self._users[key] = self._users.get(key, 0) + 1
                    keys.append(key)
                    out[read] = handle
            except BaseException:
                self._release_locked(keys)
                raise
            finally:
                self._evict_locked()
        return out, keys

    def release(self, keys: list[Hashable]) -> None:
        with self._lock:
            self._release_locked(keys)
            self._evict_locked()

    def _release_locked(self, keys: list[Hashable]) -> None:
        for key in keys:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]

    def _cost_of(self, handle: Any) -> int:
        return len(handle) if self._mapped else 1

    def _evict_locked(self) -> None:
        for key in [k for k in self._open if k not in self._users]:
            if self._cost <= self._limit:
                break
            handle = self._open.pop(key)
            self._cost -= self._cost_of(handle)
            if isinstance(handle, mmap.mmap):
                handle.close()
            elif isinstance(handle, int):
                os.close(handle)


def _open_shard(name: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            raise ShardReadError(
                f"Could not open shard {name}: too many open files ({e.strerror}). Raise "
                "the limit (`ulimit -n`), or read fewer datasets at once."
            ) from e
        raise ShardReadError(
            f"Shard {name} is missing or unreadable ({e.strerror}). The dataset is "
            "incomplete: rebuild it, or restore the shard."
        ) from e


SHARDS = _OpenShards(limit=128)
# Mapped shards (`GroupReader(mapped=True)`): up to the largest split a
# reader asked to map; the page cache holds the bytes, the mapping only
# spares the copy out of it (see GroupReader).
MAPS = _OpenShards(limit=0, mapped=True)


def _file_size(name: str) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0  # reported, by name, when read


def _identity(name: str) -> Hashable:
    try:
        st = os.stat(name)
    except OSError:
        os.close(_open_shard(name))  # raises the error that names the shard
        raise
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _map_shard(name: str) -> mmap.mmap | bytes:
    fd = _open_shard(name)
    try:
        size = os.fstat(fd).st_size
        if not size:
            return b""  # mmap refuses empty files; every read of it is short
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except OSError as e:  # ENOMEM (ulimit -v, vm.max_map_count), ENODEV...
        raise ShardReadError(
            f"Could not memory-map shard {name} ({e.strerror}). Read it with "
            "read_options(access='random') instead, or raise the limit on mappings."
        ) from e
    finally:
        os.close(fd)


def _after_fork_in_child() -> None:
    # A fork while another thread held a lock would leave it held forever in
    # the child; the child's tf.data threads are gone, so none is in use.
    POOL._lock = threading.Lock()  # noqa: SLF001
    SHARDS._lock = threading.Lock()  # noqa: SLF001
    MAPS._lock = threading.Lock()  # noqa: SLF001


@functools.cache
def _register_fork_hook() -> None:
    """Registered by the first reader, not at import (no side effects then)."""
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclasses.dataclass(frozen=True)
class _Segment:
    start: int  # byte offset in the frame
    length: int
    target: int  # index of the direct output it fills, or -1: the junk row


def _direct_features(codec: RecordCodec) -> list[str]:
    """Features read straight into their outputs, in `codec.slots` order:
    stored as raw bytes (not bool), non-empty, at most _MAX_DIRECT (the
    largest): each costs about two iovecs per row, and one preadv takes at
    most 1024. The rest are copied out of the junk row and decoded in numpy."""
    raw = [
        name
        for name, slot in codec.slots.items()
        if slot.encoding == BYTES and slot.spec.dtype != np.bool_ and slot.stop > slot.start
    ]
    largest = sorted(raw, key=lambda n: codec.slots[n].start - codec.slots[n].stop)
    keep = set(largest[:_MAX_DIRECT])
    return [name for name in raw if name in keep]


def op_can_read(codec: RecordCodec) -> bool:
    """Whether the TensorFlow op (`_read_op.cc`) can read this layout: every
    feature read straight into its output (none decoded in numpy)."""
    return len(_direct_features(codec)) == len(codec.slots)


class GroupReader:
    """Reads groups of equal blocks of a split's rows and decodes them.

    Block `j` is rows [j * block_rows, (j + 1) * block_rows) of the split (the
    last may be shorter). `read(blocks, key)` reads the blocks, checks every
    frame header and Example layout (and with `verify` every CRC32C), and
    returns one array per feature (sorted by name), rows in block order, or
    permuted by `_native.row_order` keyed by `key` = (seed, group) if `key`
    is not empty.

    Each frame is read with one scatter read: a feature stored as raw bytes
    goes straight to its row of the output (permuted rows included); the
    rest of the frame (length header, Example framing, bool and uint32
    features, CRC) goes to a small per-row "junk" row that is checked and
    decoded in numpy.

    Thread-safe. File descriptors come from `SHARDS` and output buffers
    from `POOL`, both shared by all readers and bounded: TensorFlow keeps a
    pipeline's functions, and so its reader, alive after the dataset is gone.
    """

    def __init__(
        self,
        space: RowSpace,
        codec: RecordCodec,
        *,
        block_rows: int,
        verify: bool,
        group_blocks: int = 16,
        shuffle: bool = False,
        groups_in_flight: int = 8,
        lookahead: int = 0,
        mapped: bool = False,
    ) -> None:
        self.space = space
        self.mapped = mapped
        self.codec = codec
        self.block_rows = block_rows
        self.verify = verify
        self.group_blocks = group_blocks
        self.shuffle = shuffle
        self.lookahead = lookahead
        # Whether the shards seem to be on disk rather than in the page cache:
        # the last read ran slower than _WARM_BYTES_PER_S, or announcing blocks
        # took the kernel time (it had to start reads). Only then is every
        # group's look-ahead announced (see `advise`).
        self._cold = True
        self._slow_read = True
        self._countdown = 0
        self.num_blocks = -(-space.num_rows // block_rows)
        self.num_groups = -(-self.num_blocks // group_blocks)
        self._frame = codec.frame_bytes
        self._plan_segments()
        self._owner = next(_OWNERS)
        _register_fork_hook()
        # Room for this reader's outputs in flight, in the shared pool.
        POOL.reserve(groups_in_flight * group_blocks * block_rows * codec.frame_bytes)
        # The bytes mapped at once (all the split's shards), for MAPS or the op's cache.
        self._map_bytes = sum(_file_size(f) for f in set(space.filenames)) if mapped else 0
        MAPS.reserve(self._map_bytes)

    def _plan_segments(self) -> None:
        codec = self.codec
        pieces: list[tuple[int, int, str | None, np.ndarray | None]] = []
        for offset, constant in codec._constants:  # noqa: SLF001
            pieces.append((_HEADER + offset, len(constant), None, constant))
        self._direct = _direct_features(codec)
        self._direct_index = {name: i for i, name in enumerate(self._direct)}
        for feature, slot in codec.slots.items():
            pieces.append((_HEADER + slot.start, slot.stop - slot.start, feature, None))
        pieces.sort(key=lambda p: p[0])
        segments = [_Segment(0, _HEADER, -1)]  # the length header: outside the CRC
        junk_pos = _HEADER
        expected = [np.frombuffer(codec._frame_header.tobytes(), np.uint8)]  # noqa: SLF001
        expected_at = [np.arange(_HEADER)]
        self._junk_slots: dict[str, int] = {}
        for start, length, piece_name, const in pieces:
            target = -1 if piece_name is None else self._direct_index.get(piece_name, -1)
            if length == 0:  # a feature of zero-size rows: nothing to read
                self._junk_slots[str(piece_name)] = junk_pos
                continue
            if target < 0:
                if const is not None:
                    expected.append(const)
                    expected_at.append(junk_pos + np.arange(length))
                else:
                    self._junk_slots[str(piece_name)] = junk_pos
                junk_pos += length
                last = segments[-1]
                if len(segments) > 1 and last.target < 0 and last.start + last.length == start:
                    segments[-1] = _Segment(last.start, last.length + length, -1)
                    continue
            segments.append(_Segment(start, length, target))
        segments.append(_Segment(self._frame - 4, 4, -1))  # the stored CRC: its own segment
        self._crc_at = junk_pos
        self._junk_bytes = junk_pos + 4
        self._segments = np.array(
            [(s.start, s.length, s.target) for s in segments], np.int64
        ).reshape(-1, 3)
        self._expected_at = np.concatenate(expected_at).astype(np.intp)
        self._expected = np.concatenate(expected)

    def op_attrs(self) -> dict[str, Any] | None:
        """The attributes of `_read_op.cc`'s op reading this reader's groups.

        None where the op cannot: a feature that is not stored as raw bytes
        (bool, uint32, empty rows, or past _MAX_DIRECT), which this class
        decodes in numpy.
        """
        if not op_can_read(self.codec):
            return None
        specs = [self.codec.slots[name].spec for name in self._direct]
        return {
            "filenames": list(self.space.filenames),
            "skips": list(self.space.skips),
            "starts": list(self.space.starts),
            "frame_bytes": self._frame,
            "block_rows": self.block_rows,
            "group_blocks": self.group_blocks,
            "shuffle": self.shuffle,
            "verify": self.verify,
            "lookahead": self.lookahead,
            "segments": self._segments.ravel().tolist(),
            "expected_at": self._expected_at.tolist(),
            "expected": self._expected.tobytes(),
            "crc_at": self._crc_at,
            "out_types": [spec.dtype for spec in specs],
            "out_shapes": [list(spec.shape) for spec in specs],
            "mapped": self.mapped,
            "map_bytes": self._map_bytes,
        }

    def read_group(self, group: np.integer | int, epoch_seed: np.integer | int) -> list[np.ndarray]:
        """Group `group` of an epoch: its blocks, then rows, in epoch order.

        Unshuffled, group g is blocks g*group_blocks.. in stored order.
        Shuffled, position p of the epoch holds full block `Permutation(p)`
        (keyed by the epoch seed; the short last block, if any, stays last)
        and the group's rows are permuted by a key of (epoch seed, group).
        All stateless: any group of any epoch can be read again exactly,
        which is what makes checkpoints of the pipeline exact.
        """
        group = int(group)
        if not 0 <= group < self.num_groups:
            raise ShardReadError(f"group={group} is not in [0, {self.num_groups}).")
        seed = int(epoch_seed) & _SEED_MASK
        if self.lookahead and group + self.lookahead < self.num_groups:
            self._countdown -= 1
            if self._cold or self._countdown <= 0:
                # While cold, every group; while warm, a probe now and then.
                self._countdown = _WARM_PROBE_EVERY
                per_block = self.advise(self._blocks(group + self.lookahead, seed))
                self._cold = per_block > _COLD_HINT_SECONDS or self._slow_read
        key = np.array([seed, group], np.int64) if self.shuffle else np.zeros(0, np.int64)
        return self.read(self._blocks(group, seed), key)

    def _blocks(self, group: int, seed: int) -> np.ndarray:
        positions = np.arange(
            group * self.group_blocks,
            min((group + 1) * self.group_blocks, self.num_blocks),
            dtype=np.int64,
        )
        full = self.space.num_rows // self.block_rows
        if not self.shuffle or full < 2:
            return positions
        blocks = positions.copy()
        inside = positions < full
        blocks[inside] = Permutation(n=full, seed=seed)(positions[inside])
        return blocks

    def advise(self, blocks: np.ndarray) -> float:
        """Asks the kernel to start reading `blocks` (a later group's).

        Returns the seconds the kernel took per block: about 2 us when the
        blocks are already in the page cache, 15 to 70 us when it had to start
        reads (measured here).

        Reads of shards on disk wait for each seek in turn; announcing the
        blocks of the group `lookahead` groups ahead keeps several requests
        in flight. Measured on this project's machine, one cold epoch of 1 GB
        of 64x64 float32: see the README. Costs a few microseconds a block
        when the shards are in the page cache.
        """
        reads, rows, counts = self._runs(blocks)
        with self._descriptors(reads) as fds:
            start = time.perf_counter()
            _native.advise(fds, rows * self._frame, counts * self._frame)
            return (time.perf_counter() - start) / max(1, len(blocks))

    def _runs(self, blocks: np.ndarray) -> tuple[np.ndarray, ...]:
        """(read, row in shard, rows) runs of `blocks`, in order."""
        first = np.asarray(blocks, np.int64) * self.block_rows
        count = np.minimum(first + self.block_rows, self.space.num_rows) - first
        if (count <= 0).any():
            raise ShardReadError(
                f"Block ids {np.asarray(blocks).tolist()} are past the split's end."
            )
        return self.space.runs(first, count)

    @contextlib.contextmanager
    def _held(
        self, cache: _OpenShards, reads: np.ndarray
    ) -> Iterator[tuple[np.ndarray, list[Any]]]:
        """Each run's index into the handles of its distinct reads, held while in the block."""
        used = np.unique(reads).tolist()
        handle_of, keys = cache.acquire(self._owner, used, self.space.filenames)
        try:
            yield np.searchsorted(used, reads).astype(np.int64), [handle_of[r] for r in used]
        finally:
            cache.release(keys)

    @contextlib.contextmanager
    def _descriptors(self, reads: np.ndarray) -> Iterator[np.ndarray]:
        """The file descriptor of each run's read, held while in the block."""
        with self._held(SHARDS, reads) as (index, fds):
            yield np.array(fds, np.int64)[index]

    @contextlib.contextmanager
    def _sources(self, reads: np.ndarray) -> Iterator[tuple[np.ndarray, tuple[Any, ...] | None]]:
        """What `read_frames` reads each run from: descriptors, or mapped shards
        (then each run's index into a tuple of mappings)."""
        if self.mapped:
            with self._held(MAPS, reads) as (index, maps):
                yield index, tuple(maps)
        else:
            with self._descriptors(reads) as fds:
                yield fds, None

    def read(self, blocks: np.ndarray, key: np.ndarray) -> list[np.ndarray]:
        reads, rows, counts = self._runs(blocks)
        n = int(counts.sum())
        if len(key):
            # The same permutation as the TensorFlow op's (_readcore.h).
            dest = np.empty(n, np.int64)
            _native.row_order(int(key[0]), int(key[1]), dest)
        else:
            dest = np.arange(n, dtype=np.int64)
        slots = self.codec.slots
        direct = [
            aligned_empty((n, slots[name].stop - slots[name].start), np.dtype(np.uint8), pool=POOL)
            for name in self._direct
        ]
        junk = np.empty((n, self._junk_bytes), np.uint8)
        crcs = np.empty(n, np.uint32) if self.verify else None
        try:
            with self._sources(reads) as (sources, maps):
                start = time.perf_counter()
                _native.read_frames(
                    sources, rows * self._frame, counts, self._frame, self._segments,
                    tuple(direct), dest, junk, crcs, False, maps,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
            self._slow_read = elapsed * _WARM_BYTES_PER_S > n * self._frame
        except EOFError as e:
            run, got, err = e.args
            name = self.space.filenames[int(reads[run])]
            why = os.strerror(err) if err else f"it ended {got} bytes into a read"
            raise ShardReadError(
                f"Shard {name} could not be read at row {int(rows[run])} ({why}): it was "
                "truncated or altered after the build. Rebuild the dataset, or restore "
                "the shard."
            ) from None
        self._check(junk, crcs, reads, counts)
        out = []
        for name, slot in slots.items():
            spec = slot.spec
            if name in self._direct_index:
                values = direct[self._direct_index[name]].view(spec.dtype)
                out.append(values.reshape(n, *spec.shape))
                continue
            at = self._junk_slots[name]
            raw = junk[:, at : at + slot.stop - slot.start]
            if slot.encoding == BYTES and spec.dtype == np.bool_:
                decoded = raw != 0  # any non-zero byte is True, as in TF's cast
            elif slot.encoding == BYTES:  # zero-size rows, or past _MAX_DIRECT
                decoded = np.ascontiguousarray(raw).view(spec.dtype)
            else:  # uint32 stored as fixed-width varints
                try:
                    decoded = _read_fixed_varints(raw, name=name).astype(np.uint32)
                except RecordError as e:  # only without CRCs: else caught above
                    groups = raw.reshape(n, -1, 5)
                    ok = (groups[..., :-1] & 0x80).all(axis=(1, 2))
                    bad = np.asarray(~(ok & (groups[..., -1] < 0x10).all(axis=1)))
                    raise ShardReadError(
                        f"tfds_bigarrays: shard {self._names(bad, reads, counts)}: {e}"
                    ) from None
            values = aligned_empty(decoded.shape, decoded.dtype, pool=POOL)
            values[dest] = decoded
            out.append(values.reshape(n, *spec.shape))
        return out

    def _check(
        self,
        junk: np.ndarray,
        crcs: np.ndarray | None,
        reads: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        ok = (junk[:, self._expected_at] == self._expected).all(axis=1)
        if not ok.all():
            raise ShardReadError(
                f"tfds_bigarrays: shard {self._names(~ok, reads, counts)} holds a record "
                "that does not match the dataset's layout (tfds_bigarrays.json); it is "
                "corrupt or from another dataset. Rebuild the dataset or restore the shard."
            )
        if crcs is not None:
            stored = _unmask(
                np.ascontiguousarray(junk[:, self._crc_at : self._crc_at + 4]).view("<u4").ravel()
            )
            bad = crcs != stored
            if bad.any():
                raise ShardReadError(
                    f"tfds_bigarrays: shard {self._names(bad, reads, counts)} has records "
                    "whose CRC32C does not match (bit rot or an altered file). Rebuild the "
                    "dataset or restore the shard."
                )

    def _names(self, bad: np.ndarray, reads: np.ndarray, counts: np.ndarray) -> str:
        run_of_row = np.repeat(np.arange(len(reads)), counts)
        names = sorted({self.space.filenames[int(reads[r])] for r in run_of_row[bad]})
        return ", ".join(names)

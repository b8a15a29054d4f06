"""Read planning, in plain Python: which rows, cut how, held where, read by what.

Everything a read pipeline needs to know is decided here, from the layout,
the memory budget and the requested rows, so that it is tested without
TensorFlow and never changes by accident. The measurements behind each
constant are in docs/design.md#tuning.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import Identity, identity
from tfds_bigarrays._format.records import INT64, RecordCodec
from tfds_bigarrays._format.spec import FeatureSpec

MiB = 1 << 20
DEFAULT_MEMORY_BUDGET = 128 * MiB
MIN_MEMORY_BUDGET = 4 * MiB
MAX_MEMORY_BUDGET = 1 << 40

# Sequential access (tf.data's file readers); docs/design.md#tuning.
TARGET_BLOCK_BYTES = 64 * 1024  # one tf.data element
MAX_INTERLEAVE = 4  # shards read at once
GROUP_BLOCKS = 16  # blocks whose rows are shuffled together, at least

# Random access (the read core); docs/design.md#tuning.
GROUP_MIN_BYTES = 1 * MiB  # small rows: a call carries at least this
EXACT_BATCH_BYTES = 256 * 1024  # batches this big are read as one group each
RANDOM_BLOCK_BYTES = 128 * 1024  # the unit of the permutation and of disk reads
MAX_PARALLEL_READS = 4  # groups read at once (and no more than the cores)
PREFETCH_BYTES = 8 * MiB  # batches prefetched at the end
LOOKAHEAD_BYTES = 64 * MiB  # page cache announced ahead of cold reads
MIX_NEIGHBOURS = 0.02  # aimed share of rows stored side by side that share a batch
MIX_WINDOW_BYTES = 128 * MiB  # most rows dealt among groups (held by the page cache)
MIX_GROUP_BYTES = 8 * MiB  # most bytes a rebatched group grows to for mixing

ACCESS_PATHS = ("random", "mapped", "sequential")


class ReadError(TfdsBigarraysError, ValueError):
    """A read setting is out of range, or a shard does not match its record."""


def check_budget(budget: object) -> None:
    """Refuses a memory budget out of range, naming it (None: not this function's)."""
    if (
        isinstance(budget, bool)
        or not isinstance(budget, int)
        or not MIN_MEMORY_BUDGET <= budget <= MAX_MEMORY_BUDGET
    ):
        raise ReadError(
            f"memory_budget={budget!r} must be an int of at least {MIN_MEMORY_BUDGET} bytes "
            f"(4 MiB) and at most {MAX_MEMORY_BUDGET} (1 TiB); for example 256 * 2**20."
        )


# ---------------------------------------------------------------- shard reads


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardRead:
    """Rows `[skip, skip + take)` of a shard of `shard_rows` records."""

    filename: str
    skip: int
    take: int
    shard_rows: int


def shard_reads(file_instructions: Sequence[Any]) -> list[ShardRead]:
    """The reads of TFDS's file instructions for a split (`SplitInfo.file_instructions`)."""
    return [
        ShardRead(
            filename=str(fi.filename),
            skip=int(fi.skip),
            take=int(fi.take),
            shard_rows=int(fi.examples_in_shard),
        )
        for fi in file_instructions
    ]


def share_of_reads(reads: Sequence[ShardRead], *, num_shares: int, index: int) -> list[ShardRead]:
    """Share `index` of `num_shares` of the reads.

    Each read is cut into `num_shares` contiguous pieces, so shares are
    disjoint, together complete, balanced to one example per shard, and fixed
    before any shuffling (every worker computes the same cut).
    """
    if not 0 <= index < num_shares:
        raise ReadError(f"input_pipeline_id={index} must be in [0, {num_shares}).")
    out = []
    for r in reads:
        lo = r.skip + r.take * index // num_shares
        hi = r.skip + r.take * (index + 1) // num_shares
        if hi > lo:
            out.append(dataclasses.replace(r, skip=lo, take=hi - lo))
    return out


def shard_identities(reads: Sequence[ShardRead], *, frame_bytes: int) -> tuple[Identity, ...]:
    """Checks that every shard is exactly rows x frame bytes; returns its identity.

    The read core refuses a shard whose identity changes after this (it was
    replaced: rebuilt or overwritten). Shards on other file systems (`://`)
    get no identity; only the sequential path reads them.
    """
    seen: dict[str, Identity] = {}
    for r in reads:
        if r.filename in seen:
            continue
        want = r.shard_rows * frame_bytes
        try:
            if "://" in r.filename:
                size, ident = epath.Path(r.filename).stat().length, (0, 0, 0, 0)
            else:
                st = os.stat(r.filename)
                size, ident = st.st_size, identity(st)
        except OSError as e:
            raise ReadError(
                f"Shard {r.filename} is missing or unreadable ({e.strerror}). The dataset "
                "is incomplete: rebuild it, or restore the shard."
            ) from e
        if size != want:
            raise ReadError(
                f"Shard {r.filename} is {size} bytes but should be {want} ({r.shard_rows} "
                f"records of {frame_bytes} bytes): it was truncated or altered after the "
                "build. Rebuild the dataset, or restore the shard."
            )
        seen[r.filename] = ident
    return tuple(seen[r.filename] for r in reads)


# ---------------------------------------------------------------- records


# How a feature's bytes become its output row (core.h's TBR_RAW...).
RAW, BOOL, UINT32_VARINT = 0, 1, 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordLayout:
    """What the read core needs to know about a record, from its codec.

    Attributes:
      field_lengths: the record's byte ranges, front to back.
      field_outputs: per range, -1 (constant bytes, checked) or its output.
      constants: the constant ranges' bytes, concatenated.
      names, kinds, specs: per output (features sorted by name): its name, how
        its bytes decode (RAW, BOOL, UINT32_VARINT) and its spec.
      frame_bytes: bytes of a TFRecord frame of one record.
    """

    field_lengths: tuple[int, ...]
    field_outputs: tuple[int, ...]
    constants: bytes
    names: tuple[str, ...]
    kinds: tuple[int, ...]
    specs: tuple[FeatureSpec, ...]
    frame_bytes: int


def record_layout(codec: RecordCodec) -> RecordLayout:
    names = tuple(codec.slots)
    index = {name: i for i, name in enumerate(names)}
    fields = codec.fields()
    kinds = []
    for name in names:
        slot = codec.slots[name]
        if slot.encoding == INT64:
            kinds.append(UINT32_VARINT)
        elif slot.spec.dtype == np.bool_:
            kinds.append(BOOL)
        else:
            kinds.append(RAW)
    return RecordLayout(
        field_lengths=tuple(f.length for f in fields),
        field_outputs=tuple(-1 if f.feature is None else index[f.feature] for f in fields),
        constants=b"".join(f.constant for f in fields),
        names=names,
        kinds=tuple(kinds),
        specs=tuple(codec.slots[n].spec for n in names),
        frame_bytes=codec.frame_bytes,
    )


# ---------------------------------------------------------------- sequential


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """How a memory budget is spent by the sequential pipeline.

    Attributes:
      block_rows: examples per block (one tf.data element before decoding).
      shuffle_blocks: blocks held by the block shuffle buffer.
      group_blocks: blocks decoded together, and whose rows are shuffled
        together (at least a batch).
      cycle_length: shards read at once.
      prefetch_batches: batches prefetched at the end.
      autotune_ram_bytes: budget handed to tf.data's autotuner for its buffers.
    """

    block_rows: int
    shuffle_blocks: int
    group_blocks: int
    cycle_length: int
    prefetch_batches: int
    autotune_ram_bytes: int

    def bytes_bound(self, frame_bytes: int, batch_rows: int) -> int:
        """Rough upper bound of bytes held in buffers (for docs and tests)."""
        block = self.block_rows * frame_bytes
        return (
            self.shuffle_blocks * block
            + self.cycle_length * 2 * block
            + 2 * self.group_blocks * block
            + self.prefetch_batches * batch_rows * frame_bytes
            + self.autotune_ram_bytes
        )


def plan_memory(
    *,
    frame_bytes: int,
    num_examples: int,
    num_files: int,
    batch_rows: int,
    budget: int = DEFAULT_MEMORY_BUDGET,
    shuffle: bool = True,
) -> MemoryPlan:
    """Splits `budget` bytes between the sequential pipeline's buffers.

    Half goes to the shuffle buffer, an eighth to tf.data's autotuned buffers,
    the rest to interleave, groups and prefetch (their bound is computed, not
    assumed: see `MemoryPlan.bytes_bound`).
    """
    check_budget(budget)
    block_rows = max(1, min(TARGET_BLOCK_BYTES // frame_bytes, num_examples))
    block = block_rows * frame_bytes
    shuffle_blocks = max(1, (budget // 2) // block) if shuffle else 1
    total_blocks = -(-num_examples // block_rows)
    shuffle_blocks = min(shuffle_blocks, total_blocks)
    batch_blocks = -(-batch_rows // block_rows)
    group_blocks = batch_blocks
    if shuffle:
        # A group must fit its share of the budget (two in flight).
        group_blocks = max(batch_blocks, min(GROUP_BLOCKS, (budget // 16) // block))
    cycle = max(1, min(num_files, MAX_INTERLEAVE, (budget // 16) // (2 * block))) if shuffle else 1
    prefetch = max(1, min(4, (budget // 16) // max(1, batch_rows * frame_bytes)))
    return MemoryPlan(
        block_rows=block_rows,
        shuffle_blocks=shuffle_blocks,
        group_blocks=group_blocks,
        cycle_length=cycle,
        prefetch_batches=prefetch,
        autotune_ram_bytes=budget // 8,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Piece:
    """A run of equal-size blocks of one shard, as FixedLengthRecordDataset reads it."""

    filename: str
    record_bytes: int
    header_bytes: int
    footer_bytes: int


def pieces(reads: Sequence[ShardRead], *, frame_bytes: int, block_rows: int) -> list[Piece]:
    """Turns shard reads into fixed-size block pieces.

    A read of `take` rows is `take // block_rows` full blocks plus, if any rows
    remain, one shorter block; header and footer bytes skip the rest of the
    shard, so a slice like `train[10:20]` decodes only its rows. Shards are
    not cut further for mixing: FixedLengthRecordDataset reads through
    `header_bytes` instead of seeking, so N pieces per shard cost O(N^2).
    """
    out = []
    for r in reads:
        full = r.take // block_rows * block_rows
        if full:
            out.append(
                Piece(
                    filename=r.filename,
                    record_bytes=block_rows * frame_bytes,
                    header_bytes=r.skip * frame_bytes,
                    footer_bytes=(r.shard_rows - r.skip - full) * frame_bytes,
                )
            )
        if r.take > full:
            out.append(
                Piece(
                    filename=r.filename,
                    record_bytes=(r.take - full) * frame_bytes,
                    header_bytes=(r.skip + full) * frame_bytes,
                    footer_bytes=(r.shard_rows - r.skip - r.take) * frame_bytes,
                )
            )
    return out


# ---------------------------------------------------------------- random access


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupPlan:
    """How random-access reads cut a split into blocks and groups.

    Attributes:
      block_rows: consecutive rows read with one pread (or announced together,
        where a window deals them); blocks are the unit of the epoch
        permutation (rows of a group are then permuted too).
      group_blocks: blocks read and decoded by one call.
      window_groups: shuffled reads deal the rows of this many consecutive
        groups' blocks among those groups (1: a group reads whole blocks), so
        that rows stored side by side rarely share a batch although the disk
        reads whole blocks.
      exact_batches: every group is exactly one batch (the last may be
        short), so no rebatching is needed.
      parallel_reads: groups read at once.
      read_threads: threads sharing one group's reads, so that the cores
        are used when the budget holds fewer groups in flight than cores.
      prefetch_batches: batches prefetched at the end.
      lookahead_groups: while reads wait for the disk, the blocks of the group
        this far ahead are announced to the kernel, so that several reads are
        in flight. They land in the page cache, not in the process's memory.
      fill_pieces: instead of announcing the look-ahead's blocks alone, read
        the aligned 2 MiB pieces that hold them into the page cache as huge
        pages, which later epochs copy from about 1.4x faster than from the
        4 KiB pages that announced blocks make (docs/page_cache_copy.md). Only
        for a split that stays in the page cache (`fits_memory`): the other
        rows of a piece are read before their turn, once.
    """

    block_rows: int
    group_blocks: int
    window_groups: int
    exact_batches: bool
    parallel_reads: int
    read_threads: int
    prefetch_batches: int
    lookahead_groups: int
    fill_pieces: bool = False

    @property
    def group_rows(self) -> int:
        return self.block_rows * self.group_blocks

    @property
    def groups_in_flight(self) -> int:
        """Groups alive at once: being read, prefetched, and with the consumer."""
        return self.parallel_reads + self.prefetch_batches + 2

    def bytes_bound(self, frame_bytes: int) -> int:
        """Upper bound of bytes of decoded rows held by the pipeline."""
        return self.groups_in_flight * self.group_rows * frame_bytes


def plan_groups(
    *,
    frame_bytes: int,
    num_examples: int,
    batch_rows: int,
    budget: int = DEFAULT_MEMORY_BUDGET,
    cores: int | None = None,
    shuffle: bool = True,
    deal: bool = True,
    fill: bool = False,
) -> GroupPlan:
    """Block, group and buffer sizes for random-access reads.

    Blocks stay near `RANDOM_BLOCK_BYTES` (small blocks mix better: a batch
    gathers rows from `group_blocks` places of the split). When a batch is
    large (`EXACT_BATCH_BYTES`), the block size divides it and a group is
    exactly one batch, not rebatched; otherwise a group holds at least
    `GROUP_MIN_BYTES` and `GROUP_BLOCKS` blocks, and is rebatched. There is
    no shuffle buffer: the budget bounds the groups in flight (see
    `GroupPlan.bytes_bound`), down to two besides the consumer's.

    Two rows stored side by side share a block with odds (b - 1) / b for
    blocks of b rows, and then a batch of B rows with odds about B / g for a
    group of g rows whose rows are permuted. Rebatched groups grow for that
    share to reach `MIX_NEIGHBOURS`, up to `MIX_GROUP_BYTES` (less under a
    budget below the default: there the order depends on the budget too). An
    exact batch is its own group: there the rows of a window of groups are
    dealt among them (with odds 1 / k for k groups), the window as large as
    `MIX_NEIGHBOURS` asks within `MIX_WINDOW_BYTES`; its blocks sit in the
    page cache, announced a window ahead, while its groups are read. Reads
    in stored order (`shuffle=False`) need neither, and `deal=False` (reads
    from disk, `ReadOptions.mixing`) keeps whole blocks in a batch. `fill`
    (a split that stays in the page cache) sets `GroupPlan.fill_pieces`.
    """
    check_budget(budget)
    if batch_rows * frame_bytes >= EXACT_BATCH_BYTES:
        small = [d for d in range(1, math.isqrt(batch_rows) + 1) if batch_rows % d == 0]
        divisors = small + [batch_rows // d for d in small]
        block = max([d for d in divisors if d * frame_bytes <= RANDOM_BLOCK_BYTES] or [1])
        group_blocks, exact = batch_rows // block, True
    else:
        block = max(1, min(RANDOM_BLOCK_BYTES // frame_bytes, num_examples))
        mixed = (block - 1) / block * batch_rows / MIX_NEIGHBOURS if shuffle else 0
        reach = max(GROUP_MIN_BYTES, min(MIX_GROUP_BYTES, budget // 16))
        rows = max(
            batch_rows, GROUP_MIN_BYTES // frame_bytes, math.ceil(min(mixed, reach / frame_bytes))
        )
        group_blocks, exact = max(GROUP_BLOCKS, -(-rows // block)), False
    group_bytes = block * group_blocks * frame_bytes
    # Three quarters of the budget for the groups in flight, the consumer's two
    # (a batch being trained on, the next one) among them: enough for 64 KiB
    # rows to read two 16 MiB batches at once (docs/design.md#tuning). The
    # rest is tf.data's and the scratch rows of each read.
    slots = max(2, (budget * 3 // 4) // max(1, group_bytes) - 2)
    cores = max(1, cores or os.cpu_count() or 1)
    # Two slots (128 KiB rows in 32 MiB batches) go to two reads rather than a
    # read and a prefetch: one read at a time left a core idle between groups,
    # which threads sharing the group did not fill (docs/design.md#tuning).
    parallel = max(1, min(cores, MAX_PARALLEL_READS, slots - 1 if slots > 2 else slots))
    # Parallel reads already hide most jitter; big batches prefetch little.
    prefetch = min(4, slots - parallel, max(1, PREFETCH_BYTES // max(1, group_bytes)))
    window = 1
    if exact and shuffle and deal:
        window = math.ceil((block - 1) / block / MIX_NEIGHBOURS - 1e-9)
        num_groups = -(-num_examples // (block * group_blocks))
        window = max(1, min(window, MIX_WINDOW_BYTES // max(1, group_bytes), num_groups))
    lookahead = max(parallel, min(64, LOOKAHEAD_BYTES // max(1, group_bytes)))
    if window > 1:
        lookahead += window  # a window's blocks are announced before its first group
    return GroupPlan(
        block_rows=block,
        group_blocks=group_blocks,
        window_groups=window,
        exact_batches=exact,
        parallel_reads=parallel,
        read_threads=max(1, min(64, cores // parallel)),
        prefetch_batches=prefetch,
        lookahead_groups=lookahead,
        fill_pieces=fill,
    )


# ---------------------------------------------------------------- the whole read


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadPlan:
    """Everything one read pipeline does, decided before it is built.

    Attributes:
      reads: the shard rows, in split order.
      identities: each read's shard identity, taken now (see `shard_identities`).
      layout: the record layout for the core.
      num_examples: rows in `reads`.
      batch_size: rows per batch, or None for single examples.
      shuffle: shuffle the order (`shuffle_files=True`).
      access: "random", "mapped" or "sequential".
      verify: check every record's CRC32C.
      memory: the sequential pipeline's buffers (and tf.data's RAM budget).
      groups: random access's blocks and groups; None for sequential access.
    """

    reads: tuple[ShardRead, ...]
    identities: tuple[Identity, ...]
    layout: RecordLayout
    num_examples: int
    batch_size: int | None
    shuffle: bool
    access: str
    verify: bool
    memory: MemoryPlan
    groups: GroupPlan | None

    @property
    def batch_rows(self) -> int:
        return self.batch_size or 256

    @property
    def exact_batches(self) -> bool:
        """Whether the engine already yields the batches asked for."""
        return self.groups is not None and self.groups.exact_batches and bool(self.batch_size)


def choose_access(reads: Sequence[ShardRead], *, access: str, data_service: str | None) -> str:
    """The access path for `ReadOptions.access` ("auto" picks random where it can)."""
    remote = next((r.filename for r in reads if "://" in r.filename), None)
    if access == "sequential":
        return access
    if access in ("random", "mapped") and (data_service or remote):
        where = (
            f"data_service={data_service!r}"
            if data_service
            else f"shards on {str(remote).split('://')[0]}://"
        )
        raise ReadError(
            f"access={access!r} cannot read with {where}: positioned reads need the shards "
            "on a local or mounted file system, in this process. Use access='auto' or "
            "'sequential'."
        )
    if access == "auto":
        return "sequential" if data_service or remote else "random"
    return access


def memory_bytes(*, proc: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup") -> int:
    """The memory this process may use: the machine's, or its memory cgroups' smallest limit.

    Every limit from the process's cgroup up to the hierarchy's root counts
    (cgroup v2's `memory.max`, v1's `memory.limit_in_bytes`). In a container
    the listed path may not exist under the mount: there the mount's own
    files are the container's cgroup.
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        lines = pathlib.Path(proc).read_text().splitlines()
    except OSError:
        return total
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            root, name = pathlib.Path(mount), "memory.max"
        elif "memory" in controllers.split(","):
            root, name = pathlib.Path(mount) / "memory", "memory.limit_in_bytes"
        else:
            continue
        here = root / path.lstrip("/")
        if not here.is_dir():
            here = root
        for folder in (here, *here.parents):
            try:
                value = (folder / name).read_text().strip()
            except OSError:
                value = ""
            if value.isdigit():
                total = min(total, int(value))
            if folder == root:
                break
    return total


def fits_memory(split_bytes: int, *, memory: int | None = None) -> bool:
    """Whether a split stays in the page cache: at most half the memory (`memory_bytes`)."""
    return split_bytes <= (memory_bytes() if memory is None else memory) // 2


def deals_rows(mixing: str, *, split_bytes: int, memory: int | None = None) -> bool:
    """Whether random access deals rows (`ReadOptions.mixing`; "auto" decides by size).

    A split that does not fit in memory is read from disk, where dealt rows
    wait for their window in a page cache that cannot keep them: 0.71-0.79x
    against 1.02-1.15x of the cold sequential read for 7 GB of 16 KiB rows
    in a 2 GiB cgroup, in two runs (docs/bigger_than_ram.md).
    """
    if mixing != "auto":
        return mixing == "rows"
    return fits_memory(split_bytes, memory=memory)


def plan_read(
    *,
    reads: Sequence[ShardRead],
    codec: RecordCodec,
    batch_size: int | None,
    shuffle: bool,
    options: Any,
    cores: int | None = None,
) -> ReadPlan:
    """The plan of one read (`options`: resolved `ReadOptions`)."""
    reads = tuple(reads)
    frame = codec.frame_bytes
    identities = shard_identities(reads, frame_bytes=frame)
    num_examples = sum(r.take for r in reads)
    if batch_size == -1:
        batch_size = max(1, num_examples)
    batch_rows = batch_size or 256
    budget = int(options.memory_budget)
    access = choose_access(reads, access=options.access, data_service=options.data_service)
    memory = plan_memory(
        frame_bytes=frame,
        num_examples=max(1, num_examples),
        num_files=len({r.filename for r in reads}),
        batch_rows=batch_rows,
        budget=budget,
        shuffle=shuffle,
    )
    groups = None
    if access != "sequential":
        # Only a shuffled read asks the memory (files under /proc and /sys).
        split_bytes, memory_now = num_examples * frame, memory_bytes() if shuffle else 0
        groups = plan_groups(
            frame_bytes=frame,
            num_examples=max(1, num_examples),
            batch_rows=batch_rows,
            budget=budget,
            cores=cores,
            shuffle=shuffle,
            deal=shuffle and deals_rows(options.mixing, split_bytes=split_bytes, memory=memory_now),
            fill=shuffle and access == "random" and fits_memory(split_bytes, memory=memory_now),
        )
    return ReadPlan(
        reads=reads,
        identities=identities,
        layout=record_layout(codec),
        num_examples=num_examples,
        batch_size=batch_size,
        shuffle=shuffle,
        access=access,
        verify=bool(options.verify_checksums),
        memory=memory,
        groups=groups,
    )

"""Read planning: block sizes, buffer sizes and file pieces, in plain Python.

Everything the tf.data pipeline needs to know is decided here, from the
layout, the memory budget and the requested rows, so that it can be tested
without TensorFlow and never changes by accident.
"""

from __future__ import annotations

import dataclasses
import math
import os

from etils import epath

MiB = 1 << 20
DEFAULT_MEMORY_BUDGET = 128 * MiB
MIN_MEMORY_BUDGET = 4 * MiB
# A block is what one tf.data element carries: enough rows to amortize the
# per-element cost, small enough that a shuffle buffer holds many of them.
TARGET_BLOCK_BYTES = 64 * 1024
# Shards read at once: more threads than cores only contend (measured: 16
# parallel readers halved throughput on 2 cores versus 2 to 4).
MAX_INTERLEAVE = 4
# Rows are shuffled within groups of at least this many blocks.
GROUP_BLOCKS = 16
# Shards are not cut into smaller pieces for mixing: FixedLengthRecordDataset
# reads through `header_bytes` instead of seeking (measured: a piece at the end
# of a 160 MB shard took 4x as long as one at its start), so N pieces per shard
# cost O(N^2) reads. Mixing comes from interleaving whole shards, the block
# shuffle buffer and the in-group permutation; smaller shards mix better.


class ReadPlanError(ValueError):
    """A read setting is out of range, or a shard does not match its record."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """How a memory budget is spent by one read pipeline.

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


def _check_budget(budget: object) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_MEMORY_BUDGET:
        raise ReadPlanError(
            f"memory_budget={budget!r} must be an int of at least {MIN_MEMORY_BUDGET} bytes "
            "(4 MiB); for example 256 * 2**20."
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
    """Splits `budget` bytes between the pipeline's buffers.

    Half goes to the shuffle buffer, an eighth to tf.data's autotuned buffers,
    the rest to interleave, groups and prefetch (their bound is computed, not
    assumed: see `MemoryPlan.bytes_bound`).
    """
    _check_budget(budget)
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


def pieces(
    reads: list[tuple[str, int, int, int]], *, frame_bytes: int, block_rows: int
) -> list[Piece]:
    """Turns (file, skip, take, rows in shard) reads into fixed-size block pieces.

    A read of `take` rows is `take // block_rows` full blocks plus, if any rows
    remain, one shorter block; header and footer bytes skip the rest of the
    shard, so a slice like `train[10:20]` decodes only its rows.
    """
    out = []
    for filename, skip, take, rows in reads:
        full = take // block_rows * block_rows
        if full:
            out.append(
                Piece(
                    filename=filename,
                    record_bytes=block_rows * frame_bytes,
                    header_bytes=skip * frame_bytes,
                    footer_bytes=(rows - skip - full) * frame_bytes,
                )
            )
        if take > full:
            out.append(
                Piece(
                    filename=filename,
                    record_bytes=(take - full) * frame_bytes,
                    header_bytes=(skip + full) * frame_bytes,
                    footer_bytes=(rows - skip - take) * frame_bytes,
                )
            )
    return out


def share_of_reads(
    reads: list[tuple[str, int, int, int]], *, num_shares: int, index: int
) -> list[tuple[str, int, int, int]]:
    """Share `index` of `num_shares` of (file, skip, take, rows) reads.

    Each file's range is cut into `num_shares` contiguous pieces, so shares are
    disjoint, together complete, balanced to one example per file, and fixed
    before any shuffling (every worker computes the same cut).
    """
    if not 0 <= index < num_shares:
        raise ReadPlanError(f"input_pipeline_id={index} must be in [0, {num_shares}).")
    out = []
    for filename, skip, take, rows in reads:
        lo = skip + take * index // num_shares
        hi = skip + take * (index + 1) // num_shares
        if hi > lo:
            out.append((filename, lo, hi - lo, rows))
    return out


def check_shard_sizes(reads: list[tuple[str, int, int, int]], *, frame_bytes: int) -> None:
    """Every shard must be exactly rows x frame bytes; else name the shard."""
    seen = set()
    for filename, _, _, rows in reads:
        if filename in seen:
            continue
        seen.add(filename)
        want = rows * frame_bytes
        try:
            if "://" in filename:
                size = epath.Path(filename).stat().length
            else:
                size = os.path.getsize(filename)
        except OSError as e:
            raise ReadPlanError(
                f"Shard {filename} is missing or unreadable ({e.strerror}). The dataset "
                "is incomplete: rebuild it, or restore the shard."
            ) from e
        if size != want:
            raise ReadPlanError(
                f"Shard {filename} is {size} bytes but should be {want} ({rows} records of "
                f"{frame_bytes} bytes): it was truncated or altered after the build. "
                "Rebuild the dataset, or restore the shard."
            )


# Random-access reads (`_rowread`): a group is what one call (of the op, or of
# the tf.numpy_function where the op is not available) reads and decodes.
# Small rows: a group carries at least this many bytes (a numpy_function call
# costs some tens of microseconds of Python).
GROUP_MIN_BYTES = 1 * MiB
# A batch at least this big is read as exactly one group (no rebatching): the
# block size divides the batch. The same plan for the op and for the
# tf.numpy_function fallback, so that a seed (and a checkpoint) means the same
# order on both. With the op, a call costs little: one-batch groups measured
# 342-347k examples/s against 308-324k with 8 MiB groups (64x64 float32 rows,
# batches of 256; one-off script). The fallback pays about 0.4 ms of Python and
# TensorFlow per call and did better with 8 MiB groups (266k against 232k
# examples/s, last session), but it is the fallback.
EXACT_BATCH_BYTES = 256 * 1024
# Blocks of random-access reads: one pread each, so larger than the blocks of
# sequential reads (a batch of 64x64 float32 rows takes 64 preads of 4 rows).
RANDOM_BLOCK_BYTES = 128 * 1024
# Groups read at once: one per core keeps both busy; more only contend
# (measured on 2 cores: 1 read 150k rows/s of 64x64 float32, 2 to 4 reads 190-200k).
MAX_PARALLEL_READS = 4
# Batches prefetched at the end, in bytes (at least one batch): with 4 MiB
# batches, prefetching 1 or 4 measured the same speed, 8 MB less memory.
PREFETCH_BYTES = 8 * MiB
# Page cache announced ahead of the reads while they wait for the disk
# (measured, a cold epoch of 4 GB of 64x64 float32 rows: 475 MB/s announcing
# nothing, 760 MB/s at 16 MiB ahead, 900 MB/s at 64 MiB; the disk reads 1.4 GB/s
# sequentially).
LOOKAHEAD_BYTES = 64 * MiB


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupPlan:
    """How random-access reads cut a split into blocks and groups.

    Attributes:
      block_rows: consecutive rows read with one pread; blocks are the unit
        of the epoch permutation (rows of a group are then permuted too).
      group_blocks: blocks read and decoded by one call.
      exact_batches: every group is exactly one batch (the last may be
        short), so no rebatching is needed.
      parallel_reads: groups read at once.
      prefetch_batches: batches prefetched at the end.
      lookahead_groups: while reads wait for the disk, the blocks of the group
        this far ahead are announced to the kernel (`posix_fadvise`), so that
        several reads are in flight. They land in the page cache, not in the
        process's memory.
    """

    block_rows: int
    group_blocks: int
    exact_batches: bool
    parallel_reads: int
    prefetch_batches: int
    lookahead_groups: int

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
) -> GroupPlan:
    """Block, group and buffer sizes for random-access reads.

    Blocks stay near `RANDOM_BLOCK_BYTES` (small blocks mix better: a batch
    gathers rows from `group_blocks` places of the split). When a batch is
    large (`EXACT_BATCH_BYTES`), the block size divides it and a group is
    exactly one batch, not rebatched; otherwise a group holds at least
    `GROUP_MIN_BYTES` and `GROUP_BLOCKS` blocks, and is rebatched. There is no shuffle
    buffer: the budget bounds the groups in flight (see
    `GroupPlan.bytes_bound`), down to one read and one prefetch.
    """
    _check_budget(budget)
    if batch_rows * frame_bytes >= EXACT_BATCH_BYTES:
        small = [d for d in range(1, math.isqrt(batch_rows) + 1) if batch_rows % d == 0]
        divisors = small + [batch_rows // d for d in small]
        block = max([d for d in divisors if d * frame_bytes <= RANDOM_BLOCK_BYTES] or [1])
        group_blocks, exact = batch_rows // block, True
    else:
        block = max(1, min(RANDOM_BLOCK_BYTES // frame_bytes, num_examples))
        rows = max(batch_rows, GROUP_MIN_BYTES // frame_bytes)
        group_blocks, exact = max(GROUP_BLOCKS, -(-rows // block)), False
    group_bytes = block * group_blocks * frame_bytes
    # Half the budget for rows in flight; the rest is tf.data's and the
    # consumer's (a batch being trained on, the scratch rows of each read).
    slots = max(2, (budget // 2) // max(1, group_bytes) - 2)
    parallel = max(1, min(cores or os.cpu_count() or 1, MAX_PARALLEL_READS, slots // 2))
    # Parallel reads already hide most jitter; big batches prefetch little.
    prefetch = max(1, min(4, slots - parallel, PREFETCH_BYTES // max(1, group_bytes)))
    lookahead = max(parallel, min(64, LOOKAHEAD_BYTES // max(1, group_bytes)))
    return GroupPlan(
        block_rows=block,
        group_blocks=group_blocks,
        exact_batches=exact,
        parallel_reads=parallel,
        prefetch_batches=prefetch,
        lookahead_groups=lookahead,
    )

"""Read planning, pure Python: budgets, pieces, shares, shard checks, access."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from twins import epoch_twin

from tfds_bigarrays._read.options import ReadOptions
from tfds_bigarrays._read.plan import (
    EXACT_BATCH_BYTES,
    GROUP_MIN_BYTES,
    MIN_MEMORY_BUDGET,
    MIX_WINDOW_BYTES,
    RANDOM_BLOCK_BYTES,
    ReadError,
    ShardRead,
    deals_rows,
    fits_memory,
    memory_bytes,
    pieces,
    plan_groups,
    plan_memory,
    shard_identities,
    share_of_reads,
)

MiB = 1 << 20


@pytest.mark.parametrize("frame", [50, 150, 16_400, 5 * MiB])
@pytest.mark.parametrize("budget", [4 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB])
def test_memory_plan_stays_within_budget(frame, budget):
    plan = plan_memory(
        frame_bytes=frame, num_examples=10**9, num_files=1000, batch_rows=256, budget=budget
    )
    bound = plan.bytes_bound(frame, 256)
    # Rows bigger than the budget's slices still need one block, one batch.
    floor = 4 * 256 * frame + 3 * frame
    assert bound <= max(budget, floor) + 4 * 256 * frame, (plan, bound)
    assert plan.shuffle_blocks * plan.block_rows * frame <= max(budget // 2, frame)
    assert plan.group_blocks * plan.block_rows >= 256


def test_memory_plan_is_stable():
    # Fixed expectations: changing them changes every user's pipeline.
    plan = plan_memory(
        frame_bytes=160, num_examples=10**6, num_files=4, batch_rows=256, budget=256 * MiB
    )
    assert (plan.block_rows, plan.shuffle_blocks, plan.group_blocks, plan.cycle_length) == (
        409,
        2051,
        16,
        4,
    )


def test_memory_plan_small_dataset_and_no_shuffle():
    plan = plan_memory(frame_bytes=100, num_examples=10, num_files=1, batch_rows=4)
    assert plan.block_rows == 10 and plan.shuffle_blocks == 1
    plan = plan_memory(
        frame_bytes=100, num_examples=10**6, num_files=8, batch_rows=32, shuffle=False
    )
    assert plan.cycle_length == 1 and plan.group_blocks == 1


@pytest.mark.parametrize("budget", [0, MIN_MEMORY_BUDGET - 1, 1.5e9, "1G", True])
def test_bad_budget_is_named(budget):
    with pytest.raises(ReadError, match="memory_budget=.*at least"):
        plan_memory(frame_bytes=100, num_examples=10, num_files=1, batch_rows=4, budget=budget)


def _r(filename, skip, take, rows):
    return ShardRead(filename=filename, skip=skip, take=take, shard_rows=rows)


def _rows(ps, frame, shard_rows):
    """The (file, row) pairs that FixedLengthRecordDataset would read."""
    out = []
    for p in ps:
        size = shard_rows[p.filename] * frame
        body = size - p.header_bytes - p.footer_bytes
        assert body % p.record_bytes == 0, p  # whole blocks only
        first, last = p.header_bytes // frame, (size - p.footer_bytes) // frame
        out.extend((p.filename, r) for r in range(first, last))
    return out


@pytest.mark.parametrize("skip, take, rows", [(0, 100, 100), (3, 10, 100), (0, 7, 7), (95, 5, 100)])
def test_pieces_cover_exactly_the_requested_rows(skip, take, rows):
    ps = pieces([_r("f", skip, take, rows)], frame_bytes=10, block_rows=4)
    assert _rows(ps, 10, {"f": rows}) == [("f", r) for r in range(skip, skip + take)]


@pytest.mark.parametrize("shares", [1, 2, 3, 7, 250])
def test_shares_are_disjoint_complete_and_balanced(shares):
    reads = [_r("a", 0, 100, 100), _r("b", 10, 37, 50), _r("c", 0, 1, 1)]
    sizes = {"a": 100, "b": 50, "c": 1}
    got = []
    for i in range(shares):
        share = share_of_reads(reads, num_shares=shares, index=i)
        got.append(_rows(pieces(share, frame_bytes=1, block_rows=3), 1, sizes))
    flat = [r for share in got for r in share]
    assert sorted(flat) == sorted(_rows(pieces(reads, frame_bytes=1, block_rows=3), 1, sizes))
    assert len(flat) == len(set(flat))
    counts = [len(s) for s in got]
    assert max(counts) - min(counts) <= len(reads)
    with pytest.raises(ReadError, match="input_pipeline_id=5"):
        share_of_reads(reads, num_shares=5, index=5)


def test_shard_size_check_names_the_shard(tmp_path):
    good, short = tmp_path / "good", tmp_path / "short"
    good.write_bytes(b"x" * 100)
    short.write_bytes(b"x" * 90)
    (ident,) = shard_identities([_r(str(good), 0, 10, 10)], frame_bytes=10)
    st = good.stat()
    assert ident == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with pytest.raises(ReadError, match=r"short is 90 bytes but should be 100"):
        shard_identities([_r(str(good), 0, 10, 10), _r(str(short), 0, 10, 10)], frame_bytes=10)
    with pytest.raises(ReadError, match=r"missing is missing or unreadable"):
        shard_identities([_r(str(tmp_path / "missing"), 0, 1, 1)], frame_bytes=10)


@pytest.mark.parametrize("frame", [20, 150, 16_438, 300_000, 5 * MiB])
@pytest.mark.parametrize("batch", [1, 32, 100, 256, 257])
@pytest.mark.parametrize("budget", [4 * MiB, 128 * MiB, 1024 * MiB])
def test_group_plan_covers_batches_and_respects_the_budget(frame, batch, budget):
    plan = plan_groups(frame_bytes=frame, num_examples=10**7, batch_rows=batch, budget=budget)
    group_bytes = plan.group_rows * frame
    if batch * frame >= EXACT_BATCH_BYTES:
        assert plan.exact_batches and plan.group_rows == batch  # one group, one batch
    else:
        assert not plan.exact_batches
        assert plan.group_rows >= batch and plan.group_blocks >= 16
        assert group_bytes >= min(GROUP_MIN_BYTES, 10**7 * frame) - plan.block_rows * frame
    assert plan.block_rows * frame <= max(RANDOM_BLOCK_BYTES, frame)
    assert plan.parallel_reads >= 1 and plan.prefetch_batches >= 0
    assert plan.parallel_reads + plan.prefetch_batches >= 2
    # Within 3/4 of the budget, unless two groups besides the consumer's exceed it.
    floor = (2 + 2) * group_bytes
    assert plan.bytes_bound(frame) <= max(budget * 3 // 4, floor), plan


def test_group_plan_is_stable():
    # Fixed expectations: changing them changes every user's pipeline.
    # 4 MiB batches: one batch per group, no rebatching.
    image = plan_groups(frame_bytes=16_438, num_examples=20_000, batch_rows=256, cores=2)
    assert (image.block_rows, image.group_blocks, image.exact_batches) == (4, 64, True)
    assert (image.parallel_reads, image.prefetch_batches, image.lookahead_groups) == (2, 1, 46)
    assert image.window_groups == 31  # 124 MiB of rows dealt among 31 batches
    huge = plan_groups(frame_bytes=16_438, num_examples=20_000, batch_rows=1024, cores=2)
    assert (huge.block_rows, huge.group_blocks, huge.exact_batches) == (4, 256, True)
    assert huge.window_groups == 7
    small = plan_groups(frame_bytes=150, num_examples=10**6, batch_rows=256, cores=2)
    assert (small.block_rows, small.group_blocks, small.exact_batches) == (873, 16, False)
    assert (small.parallel_reads, small.prefetch_batches, small.lookahead_groups) == (2, 4, 32)
    assert small.window_groups == 1  # a group of 13,968 rows already mixes its blocks
    big = plan_groups(frame_bytes=65_566, num_examples=20_000, batch_rows=256, cores=2)
    assert (big.block_rows, big.window_groups) == (1, 1)  # a block is a row: nothing to deal
    assert (big.parallel_reads, big.prefetch_batches) == (2, 1)
    # 32 MiB batches: the default budget holds two besides the consumer's, both read at once.
    rows128k = plan_groups(frame_bytes=131_102, num_examples=20_000, batch_rows=256, cores=2)
    assert (rows128k.parallel_reads, rows128k.prefetch_batches, rows128k.read_threads) == (2, 0, 1)
    assert rows128k.groups_in_flight == 4
    one_core = plan_groups(frame_bytes=131_102, num_examples=20_000, batch_rows=256, cores=1)
    assert (one_core.parallel_reads, one_core.prefetch_batches) == (1, 1)


def neighbours(groups: list[np.ndarray], batch: int) -> float:
    """Share of rows stored side by side that land in one batch."""
    order = np.concatenate(groups)
    batch_of = np.empty(len(order), np.int64)
    batch_of[order] = np.arange(len(order)) // batch
    return float(np.mean(batch_of[1:] == batch_of[:-1]))


# Frames of rows from 32 bytes to 128 KiB (a frame adds its record's framing).
@pytest.mark.parametrize("frame", [64, 150, 540, 1_054, 3_100, 4_126, 16_438, 32_800, 131_102])
def test_stored_neighbours_rarely_share_a_batch_at_every_row_size(frame):
    # tf.data's shuffle(3000) in memory puts about 0.04 of them in one batch;
    # a uniform shuffle of n rows 256 / n.
    n = 200_000
    plan = plan_groups(frame_bytes=frame, num_examples=n, batch_rows=256, cores=2)
    groups = epoch_twin(n, plan.block_rows, plan.group_blocks, 7, plan.window_groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(n))
    if plan.window_groups > 1:
        assert plan.window_groups * plan.group_rows * frame <= MIX_WINDOW_BYTES
        assert plan.lookahead_groups > plan.window_groups
    assert neighbours(groups, 256) <= 0.04, plan


def test_group_plan_refuses_a_tiny_budget():
    with pytest.raises(ReadError, match="memory_budget=1024 must be"):
        plan_groups(frame_bytes=100, num_examples=10, batch_rows=4, budget=1024)


def test_mixing_deals_rows_unless_the_split_is_bigger_than_half_the_memory():
    assert deals_rows("auto", split_bytes=12 << 30, memory=24 << 30)
    assert not deals_rows("auto", split_bytes=(12 << 30) + 1, memory=24 << 30)
    assert deals_rows("rows", split_bytes=1 << 40, memory=1)
    assert not deals_rows("blocks", split_bytes=1, memory=1 << 40)
    image = dict(frame_bytes=16_438, num_examples=20_000, batch_rows=256, cores=2)
    assert plan_groups(**image, deal=False).window_groups == 1
    assert plan_groups(**image).window_groups == 31
    with pytest.raises(ReadError, match=r"mixing='shuffled' is not a way of mixing rows"):
        ReadOptions(mixing="shuffled")


def test_pieces_are_filled_only_for_shuffled_splits_that_fit_in_memory(tmp_path, monkeypatch):
    import tfds_bigarrays as tb
    from tfds_bigarrays._format.layout import read_layout
    from tfds_bigarrays._read import plan
    from tfds_bigarrays._read.options import resolve

    assert fits_memory(12 << 30, memory=24 << 30)
    assert not fits_memory((12 << 30) + 1, memory=24 << 30)
    builder = tb.build("fit", data_dir=tmp_path, splits={"train": {"x": np.zeros((64, 1000))}})
    reads = plan.shard_reads(builder.info.splits["train"].file_instructions)
    split_bytes = sum(r.take for r in reads) * read_layout(builder.data_path).codec().frame_bytes

    def planned(*, shuffle: bool, memory: int, mixing: str = "auto"):
        monkeypatch.setattr(plan, "memory_bytes", lambda: memory)
        return plan.plan_read(
            reads=reads,
            codec=read_layout(builder.data_path).codec(),
            batch_size=16,
            shuffle=shuffle,
            options=resolve(ReadOptions(access="random", mixing=mixing), recorded_budget=64 << 20),
        ).groups

    assert planned(shuffle=True, memory=2 * split_bytes).fill_pieces
    # Bigger than half the memory: the rest of a piece would be evicted before its turn.
    assert not planned(shuffle=True, memory=2 * split_bytes - 2).fill_pieces
    # The decision is the memory's, whatever the mixing; stored order reads ahead by itself.
    assert planned(shuffle=True, memory=2 * split_bytes, mixing="blocks").fill_pieces
    assert not planned(shuffle=False, memory=2 * split_bytes).fill_pieces


def test_memory_is_the_smallest_limit_of_the_memory_cgroups(tmp_path):
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    proc = tmp_path / "cgroup"

    def limit(path: str, name: str, value: str) -> None:
        (tmp_path / path).mkdir(parents=True, exist_ok=True)
        (tmp_path / path / name).write_text(value + "\n")

    # v1 in a container: the listed path is the host's; the mount is the container's cgroup.
    limit("memory", "memory.limit_in_bytes", str(2 << 30))
    proc.write_text("12:memory:/kubepods/pod1/cid\n4:pids:/x\nnot a cgroup line\n")
    assert memory_bytes(proc=str(proc), mount=str(tmp_path)) == min(physical, 2 << 30)
    # v2: a leaf without a limit under a limited slice.
    limit("slice", "memory.max", str(1 << 30))
    limit("slice/job/step", "memory.max", "max")
    proc.write_text("0::/slice/job/step\n")
    assert memory_bytes(proc=str(proc), mount=str(tmp_path)) == min(physical, 1 << 30)
    proc.write_text("0::/elsewhere\n")
    assert memory_bytes(proc=str(proc), mount=str(tmp_path)) == physical


def test_memory_is_the_memory_cgroups_limit():
    # A real cgroup (root, as in CI): a child moved into it sees its limit.
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < memory_bytes() <= physical
    root = pathlib.Path("/sys/fs/cgroup/memory")
    if not (root / "memory.limit_in_bytes").exists():  # cgroup v2: the same file read, memory.max
        root = pathlib.Path("/sys/fs/cgroup")
    group = root / f"tfds_bigarrays_test_{os.getpid()}"
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot make a memory cgroup here ({e.strerror}): needs root and cgroups")
    try:
        limit = (
            "memory.limit_in_bytes" if (group / "memory.limit_in_bytes").exists() else "memory.max"
        )
        (group / limit).write_text(str(768 << 20))
        code = (
            f"import os; open({str(group / 'cgroup.procs')!r}, 'w').write(str(os.getpid())); "
            "from tfds_bigarrays._read.plan import memory_bytes; print(memory_bytes())"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == 768 << 20
    finally:
        group.rmdir()

"""Random-access reads (`_rowread`, `_native`): numpy in, numpy out, no TensorFlow."""

import google_crc32c
import numpy as np
import pytest

import tfds_bigarrays as tb
from tfds_bigarrays import _native, _rowread
from tfds_bigarrays._layout import read_layout


def _reader(builder, split="train", **kwargs):
    layout = read_layout(builder.data_path)
    reads = [
        (str(fi.filename), int(fi.skip), int(fi.take), int(fi.examples_in_shard))
        for fi in builder.info.splits[split].file_instructions
    ]
    kwargs.setdefault("verify", True)
    return _rowread.GroupReader(_rowread.RowSpace.from_reads(reads), layout.codec(), **kwargs)


@pytest.fixture
def mixed(tmp_path):
    """Every kind of feature the reader decodes: raw bytes, bool, uint32, 0-d."""
    n = 203
    rng = np.random.default_rng(3)
    cols = {
        "img": rng.normal(size=(n, 5, 3)).astype(np.float32),
        "flag": rng.random((n, 4)) > 0.5,
        "count": rng.integers(0, 2**32, size=(n, 2), dtype=np.uint32),
        "label": np.arange(n, dtype=np.int64),
        "half": rng.normal(size=n).astype(np.float16),
    }
    builder = tb.build("mixed", data_dir=tmp_path, splits={"train": cols}, shard_bytes=4000)
    assert builder.info.splits["train"].num_shards > 3
    return builder, cols


def _as_dict(reader, arrays):
    return dict(zip(reader.codec.slots, arrays, strict=True))


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("block_rows", [1, 3, 7, 64])
def test_reads_every_feature_bit_exactly(mixed, block_rows, mapped):
    builder, cols = mixed
    reader = _reader(builder, block_rows=block_rows, mapped=mapped)
    n = len(cols["label"])
    num_blocks = -(-n // block_rows)
    got = _as_dict(reader, reader.read(np.arange(num_blocks), np.zeros(0, np.int64)))
    for name, want in cols.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert np.array_equal(got[name], want), name
        assert got[name].ctypes.data % 64 == 0


@pytest.mark.parametrize("mapped", [False, True])
def test_blocks_in_any_order_and_rows_permuted_by_key(mixed, mapped):
    builder, cols = mixed
    reader = _reader(builder, block_rows=5, mapped=mapped)
    blocks = np.array([40, 3, 17, 0, 22])  # block 40 is the short last one (rows 200..202)
    key = np.array([12, -7], np.int64)
    got = _as_dict(reader, reader.read(blocks, key))
    rows = np.concatenate([np.arange(b * 5, min(b * 5 + 5, 203)) for b in blocks])
    assert sorted(got["label"].tolist()) == sorted(rows.tolist())
    assert got["label"].tolist() != rows.tolist()  # permuted
    order = got["label"]  # labels are row numbers: every feature moved with its row
    for name, want in cols.items():
        assert np.array_equal(got[name], want[order]), name
    again = _as_dict(reader, reader.read(blocks, key))
    assert np.array_equal(again["label"], got["label"])  # the key fixes the order


def test_row_space_runs_split_blocks_at_read_boundaries():
    space = _rowread.RowSpace.from_reads([("a", 5, 3, 10), ("b", 0, 4, 4), ("c", 2, 6, 9)])
    assert space.num_rows == 13
    reads, rows, counts = space.runs(np.array([0, 8, 2]), np.array([5, 5, 1]))
    # Block 0 straddles a (shard rows 5..7) and b (rows 0..1); 8..12 is c.
    assert reads.tolist() == [0, 1, 2, 0]
    assert rows.tolist() == [5, 0, 3, 7]
    assert counts.tolist() == [3, 2, 5, 1]
    assert counts.sum() == 11


def test_split_slices_read_only_their_rows(mixed):
    builder, cols = mixed
    reader = _reader(builder, split="train[150:175]", block_rows=4)
    got = _as_dict(reader, reader.read(np.arange(7), np.zeros(0, np.int64)))
    assert got["label"].tolist() == list(range(150, 175))


@pytest.mark.parametrize("where", ["payload", "layout"])
def test_damage_is_named(mixed, where):
    builder, _ = mixed
    shards = sorted(builder.data_path.glob("mixed-train.tfrecord-*"))
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    codec = read_layout(builder.data_path).codec()
    row = 3  # a payload byte of the 4th row, or the Example framing of the first
    offset = row * codec.frame_bytes + 12 + codec.slots["img"].start + 5
    data[12 + 2 if where == "layout" else offset] ^= 0x08
    victim.write_bytes(bytes(data))
    reader = _reader(builder, block_rows=8)
    every_block = np.arange(-(-203 // 8))
    expect = "CRC32C does not match" if where == "payload" else "does not match the dataset"
    with pytest.raises(_rowread.ShardReadError, match=f"{victim}.*") as info:
        reader.read(every_block, np.zeros(0, np.int64))
    assert expect in str(info.value)
    assert str(shards[0]) not in str(info.value)
    unverified = _reader(builder, block_rows=8, verify=False)
    if where == "layout":  # layout is checked on every read, CRCs only with verify
        with pytest.raises(_rowread.ShardReadError, match="does not match the dataset"):
            unverified.read(every_block, np.zeros(0, np.int64))
    else:
        unverified.read(every_block, np.zeros(0, np.int64))


@pytest.mark.parametrize("mapped", [False, True])
def test_short_or_missing_shard_is_named(mixed, mapped):
    builder, _ = mixed
    shards = sorted(builder.data_path.glob("mixed-train.tfrecord-*"))
    reader = _reader(builder, block_rows=8, mapped=mapped)
    every_block = np.arange(-(-203 // 8))
    shards[-1].write_bytes(shards[-1].read_bytes()[:-10])
    with pytest.raises(_rowread.ShardReadError, match=f"Shard {shards[-1]} could not be read"):
        reader.read(every_block, np.zeros(0, np.int64))
    shards[2].unlink()
    with pytest.raises(_rowread.ShardReadError, match=f"Shard {shards[2]} is missing"):
        _reader(builder, block_rows=8, mapped=mapped).read(every_block, np.zeros(0, np.int64))


def test_blocks_past_the_end_are_refused(mixed):
    builder, _ = mixed
    with pytest.raises(_rowread.ShardReadError, match="past the split's end"):
        _reader(builder, block_rows=8).read(np.array([26]), np.zeros(0, np.int64))


def test_buffer_pool_reuses_only_unreferenced_buffers():
    pool = _rowread.BufferPool(limit_bytes=3000)
    a = pool.take(1000)
    address = a.ctypes.data
    b = pool.take(1000)
    assert b.ctypes.data != address  # a is still referenced
    del a
    c = pool.take(1000)
    assert c.ctypes.data == address  # recycled
    view = c[10:20].view(np.uint16)
    del c
    d = pool.take(1000)
    assert d.ctypes.data != address  # a view keeps it alive
    del view, b, d
    assert {pool.take(1000).ctypes.data for _ in range(3)} >= {address}
    assert pool.take(999).size == 999  # other sizes are not confused


def test_buffer_pool_stays_within_its_bytes():
    pool = _rowread.BufferPool(limit_bytes=3000)
    held = [pool.take(1000) for _ in range(5)]  # in use: never dropped, not all kept
    assert sum(b.size for b in pool._buffers) <= 3000
    del held
    big = pool.take(2500)  # free buffers make room, least recently used first
    assert sum(b.size for b in pool._buffers) <= 3000
    assert any(b.ctypes.data == big.ctypes.data for b in pool._buffers)
    pool.reserve(10_000)
    keep = [pool.take(2000) for _ in range(4)]
    assert sum(b.size for b in pool._buffers) <= 10_000 and len(keep) == 4


def test_open_shards_are_bounded_and_never_closed_in_use(tmp_path):
    import os

    names = []
    for i in range(6):
        (tmp_path / f"s{i}").write_bytes(b"x" * 10)
        names.append(str(tmp_path / f"s{i}"))
    shards = _rowread._OpenShards(limit=2)
    in_use, keys1 = shards.acquire(1, [0, 1, 2], names)  # over the limit while in use
    assert len(shards._open) == 3
    other, keys2 = shards.acquire(2, [0], names)  # another reader: its own descriptor
    assert other[0] != in_use[0]
    for fd in in_use.values():
        os.fstat(fd)  # still open
    shards.release(keys1)
    shards.release(keys2)
    assert len(shards._open) == 2  # idle ones closed, least recently used first
    with pytest.raises(OSError):
        os.fstat(in_use[0])
    with pytest.raises(_rowread.ShardReadError, match="is missing or unreadable"):
        shards.acquire(1, [5], names[:5] + [str(tmp_path / "gone")])
    assert not shards._users  # a failed acquire holds nothing


def test_mapped_shards_are_shared_bounded_in_bytes_and_never_closed_in_use(tmp_path):
    names = []
    for i in range(4):
        (tmp_path / f"s{i}").write_bytes(bytes([i]) * 100)
        names.append(str(tmp_path / f"s{i}"))
    (tmp_path / "empty").write_bytes(b"")
    maps = _rowread._OpenShards(limit=250, mapped=True)
    held, keys = maps.acquire(1, [0, 1, 2], names)  # 300 bytes, over the limit while in use
    assert [m[:1] for m in held.values()] == [b"\x00", b"\x01", b"\x02"]
    shared, other = maps.acquire(2, [2], names)  # another reader shares the mapping
    assert shared[2] is held[2] and maps._cost == 300
    maps.release(keys)
    maps.release(other)
    assert maps._cost == 200 and held[0].closed and not held[2].closed  # LRU first
    maps.reserve(400)  # a reader that maps a larger split raises the bound
    maps.release(maps.acquire(1, [0, 3], names)[1])
    assert maps._cost == 400 and len(maps._open) == 4
    empty, keys = maps.acquire(1, [4], [*names, str(tmp_path / "empty")])
    assert empty[4] == b""  # mmap refuses empty files; reads of it are short
    maps.release(keys)
    maps.reserve(0)
    maps._limit = 0  # everything idle is evicted, the empty entry included
    maps.release(maps.acquire(1, [0], names)[1])
    assert not maps._open and maps._cost == 0
    # A shard rewritten at the same path (a new file renamed into place) is
    # mapped anew, never read through the old mapping.
    held, keys = maps.acquire(1, [1], names)
    (tmp_path / "new").write_bytes(b"\x07" * 50)
    (tmp_path / "new").rename(names[1])
    again, keys2 = maps.acquire(1, [1], names)
    assert again[1][:1] == b"\x07" and held[1][:1] == b"\x01"
    maps.release(keys + keys2)
    with pytest.raises(_rowread.ShardReadError, match="is missing or unreadable"):
        maps.acquire(1, [0], [str(tmp_path / "gone")])
    with pytest.raises(
        _rowread.ShardReadError, match="Could not memory-map shard .*access='random'"
    ):
        maps.acquire(1, [0], [str(tmp_path)])  # a directory: mmap fails (ENODEV)
    assert not maps._users  # failed acquires hold nothing


def test_readers_do_not_accumulate_descriptors(mixed):
    import os

    builder, _ = mixed
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):  # TensorFlow keeps readers alive: each must not hold files
        _reader(builder, block_rows=8).read(np.arange(26), np.zeros(0, np.int64))
    assert len(os.listdir("/proc/self/fd")) - before <= _rowread.SHARDS._limit


@pytest.mark.parametrize("software", [0, 1, 2])  # best, table, CRC32 instruction only
@pytest.mark.parametrize(
    "stride,start,length,rows",
    [(37, 3, 0, 9), (37, 3, 33, 9), (100, 0, 100, 1), (164, 12, 148, 7), (1029, 12, 1013, 13)]
    # Long rows, folded where the CPU can (HARDWARE_CRC == 2): every length
    # class of the fold (256, 64 and 8 bytes at a time, and single bytes).
    + [(length + 5, 3, length, 3) for length in (255, 256, 257, 319, 320, 327, 511, 512, 4099)]
    + [(16400, 16, 16384, 2)],
)
def test_crc32c_rows_matches_google_crc32c(software, stride, start, length, rows):
    data = np.random.default_rng(stride).integers(0, 256, rows * stride, dtype=np.uint8)
    out = np.empty(rows, np.uint32)
    _native.crc32c_rows(data, out, stride, start, length, software=software)
    want = [
        google_crc32c.value(data[r * stride + start : r * stride + start + length].tobytes())
        for r in range(rows)
    ]
    assert out.tolist() == want


def test_native_refuses_bad_geometry():
    # Each of these once passed validation and wrote or read out of bounds.
    with pytest.raises(ValueError, match="do not fit"):
        _native.crc32c_rows(np.zeros(10, np.uint8), np.empty(3, np.uint32), 4, 0, 4)
    with pytest.raises(ValueError, match="do not fit"):  # start + length overflows
        _native.crc32c_rows(np.zeros(16, np.uint8), np.empty(1, np.uint32), 16, 2**63 - 1, 1)
    with pytest.raises(ValueError, match="do not fit"):  # rows * stride overflows
        _native.crc32c_rows(np.zeros(16, np.uint8), np.empty(4, np.uint32), 2**62, 0, 1)

    segs = np.array([[0, 12, -1], [12, 4, 0], [16, 4, -1]], np.int64)
    one = np.ones(1, np.int64)

    def call(*, fds=None, offsets=None, counts=one, segs=segs, out=None, dest=None, junk=None):
        _native.read_frames(
            np.zeros(1, np.int64) if fds is None else fds,
            np.zeros(1, np.int64) if offsets is None else offsets,
            counts, 20, segs,
            (np.zeros(4, np.uint8) if out is None else out,),
            np.zeros(1, np.int64) if dest is None else dest,
            np.zeros(16, np.uint8) if junk is None else junk,
            None,
        )  # fmt: skip

    with pytest.raises(ValueError, match="malformed"):
        call(counts=np.ones(2, np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        call(out=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="out of range"):  # the row count sum overflows
        call(
            fds=np.zeros(4, np.int64),
            offsets=np.zeros(4, np.int64),
            counts=np.full(4, 2**62, np.int64),
            dest=np.zeros(0, np.int64),
            junk=np.zeros(0, np.uint8),
        )
    with pytest.raises(ValueError, match="first segment must be the 12-byte header"):
        call(
            segs=np.array([[0, 12, 0], [12, 4, -1], [16, 4, -1]], np.int64),
            out=np.zeros(12, np.uint8),
        )
    with pytest.raises(ValueError, match="permutation"):
        call(dest=np.array([1], np.int64))
    two = dict(
        counts=np.array([2], np.int64),
        out=np.zeros(8, np.uint8),
        junk=np.zeros(32, np.uint8),
    )
    with pytest.raises(ValueError, match="permutation"):  # a row written twice, one never
        call(dest=np.array([0, 0], np.int64), **two)


def test_many_features_are_read(tmp_path):
    # More raw features than one preadv's iovecs allow (1024 per call, two or
    # so per feature): the small ones are read to the junk row instead.
    cols = {f"f{i:03d}": np.full((5, 2), i, np.int16) for i in range(600)}
    builder = tb.build("many", data_dir=tmp_path, splits={"train": cols})
    reader = _reader(builder, block_rows=2)
    got = _as_dict(reader, reader.read(np.arange(3), np.zeros(0, np.int64)))
    assert all(np.array_equal(got[k], v) for k, v in cols.items())


@pytest.mark.parametrize("mapped", [False, True])
def test_software_and_hardware_crcs_agree_in_scatter_reads(mixed, mapped):
    builder, cols = mixed
    reader = _reader(builder, block_rows=6, mapped=mapped)
    original = _native.read_frames
    try:
        _native_calls = []

        def software(*args):
            _native_calls.append(1)
            return original(*args[:9], True, *args[10:])  # software=True

        _rowread._native.read_frames = software  # type: ignore[attr-defined]
        got = _as_dict(reader, reader.read(np.arange(34), np.array([1, 2], np.int64)))
    finally:
        _rowread._native.read_frames = original  # type: ignore[attr-defined]
    assert _native_calls
    assert sorted(got["label"].tolist()) == list(range(203))


def test_malformed_uint32_is_named_without_crcs(mixed):
    builder, _ = mixed
    shards = sorted(builder.data_path.glob("mixed-train.tfrecord-*"))
    codec = read_layout(builder.data_path).codec()
    data = bytearray(shards[2].read_bytes())
    data[codec.frame_bytes + 12 + codec.slots["count"].start] &= 0x7F  # a continuation bit
    shards[2].write_bytes(bytes(data))
    reader = _reader(builder, block_rows=8, verify=False)
    with pytest.raises(_rowread.ShardReadError, match=f"shard {shards[2]}: Feature 'count'"):
        reader.read(np.arange(26), np.zeros(0, np.int64))


def test_read_group_is_a_permutation_and_announces_groups_ahead(mixed):
    builder, cols = mixed
    reader = _reader(builder, block_rows=4, group_blocks=3, shuffle=True, lookahead=2)
    announced = []
    real_advise = reader.advise
    reader.advise = lambda blocks: announced.append(blocks.tolist()) or real_advise(blocks)
    labels = [_as_dict(reader, reader.read_group(g, 77))["label"] for g in range(reader.num_groups)]
    seen = np.concatenate(labels)
    assert sorted(seen.tolist()) == list(range(203))  # 51 blocks, the last short
    assert seen.tolist() != list(range(203))
    # While cold (first reads), group g announces the blocks of group g + 2.
    blocks_of = [sorted(set((lab // 4).tolist())) for lab in labels]
    assert sorted(announced[0]) == blocks_of[2]
    assert {200, 201, 202} <= set(labels[-1].tolist())  # the short block stays last
    again = [_as_dict(reader, reader.read_group(g, 77))["label"] for g in range(2)]
    assert all(map(np.array_equal, again, labels[:2]))  # stateless: same group, same rows
    other = _as_dict(reader, reader.read_group(0, 78))["label"]
    assert not np.array_equal(other, labels[0])  # another epoch seed, another order


def test_advise_ignores_what_it_cannot_use():
    # A hint: bad descriptors and empty ranges are skipped, never raised.
    _native.advise(np.array([-1, 10**6], np.int64), np.zeros(2, np.int64), np.ones(2, np.int64))
    with pytest.raises(ValueError, match="one length"):
        _native.advise(np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(2, np.int64))


def test_a_forked_child_can_read(mixed):
    import os

    builder, _ = mixed
    reader = _reader(builder, block_rows=8)
    _rowread.SHARDS._lock.acquire()  # as if another thread held it at fork time
    pid = os.fork()
    if pid == 0:  # the child: read, report by exit status
        import signal

        signal.alarm(30)  # a deadlock kills the child instead of hanging the suite
        try:
            got = reader.read(np.arange(26), np.zeros(0, np.int64))
            os._exit(0 if len(got[0]) == 203 else 1)
        except BaseException:
            os._exit(2)
    _rowread.SHARDS._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("software", [0, 1, 2])  # best, table, CRC32 instruction only
def test_long_pieces_are_checked_by_every_crc_path(tmp_path, software):
    # Pieces of 300 and 1029 bytes between short ones: folded (HARDWARE_CRC
    # == 2), four CRC32 streams, or the table; a wrong CRC fails the read.
    n = 41
    rng = np.random.default_rng(11)
    cols = {
        "img": rng.normal(size=(n, 75)).astype(np.float32),
        "wide": rng.integers(0, 256, size=(n, 1029), dtype=np.uint8),
        "label": np.arange(n, dtype=np.int64),
    }
    builder = tb.build("long", data_dir=tmp_path, splits={"train": cols}, shard_bytes=20_000)
    reader = _reader(builder, block_rows=3)
    original = _native.read_frames

    def read_frames(*args):
        return original(*args[:9], software, *args[10:])

    _rowread._native.read_frames = read_frames  # type: ignore[attr-defined]
    try:
        got = _as_dict(reader, reader.read(np.arange(-(-n // 3)), np.zeros(0, np.int64)))
    finally:
        _rowread._native.read_frames = original  # type: ignore[attr-defined]
    for name, want in cols.items():
        assert np.array_equal(got[name], want), name
    # And a flipped byte in the long piece (row 4's "wide") is caught by the same path.
    shard = sorted(builder.data_path.glob("long-train.tfrecord-*"))[0]
    data = bytearray(shard.read_bytes())
    wide = reader.codec.slots["wide"]
    data[4 * reader.codec.frame_bytes + 12 + wide.start + 500] ^= 0x10
    shard.write_bytes(bytes(data))
    _rowread._native.read_frames = read_frames  # type: ignore[attr-defined]
    try:
        with pytest.raises(_rowread.ShardReadError, match="CRC32C does not match"):
            _reader(builder, block_rows=3).read(np.arange(3), np.zeros(0, np.int64))
    finally:
        _rowread._native.read_frames = original  # type: ignore[attr-defined]

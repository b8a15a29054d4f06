"""The read core (core.cc) through its numpy binding, against independent oracles.

The oracle for values is the pure-numpy record codec (`unframe` + `decode`
of the shard files); for orders, the numpy twins of the permutations (twins.py).
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import google_crc32c
import numpy as np
import pytest
from twins import epoch_twin, row_order_twin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
from _common import (  # noqa: E402  (shared with the benchmarks)
    WITHOUT_CAPABILITIES,
    evict_files,
    given_away,
    huge_cached_bytes,
)

import tfds_bigarrays as tb
from tfds_bigarrays._format.layout import read_layout
from tfds_bigarrays._format.permutation import Permutation
from tfds_bigarrays._format.records import unframe
from tfds_bigarrays._read import core, plan
from tfds_bigarrays._read.plan import ShardRead


def shard_reads(builder, split="train") -> list[ShardRead]:
    return plan.shard_reads(builder.info.splits[split].file_instructions)


def reader(builder, split="train", **kwargs) -> core.Reader:
    return core.Reader(
        shard_reads(builder, split), read_layout(builder.data_path).codec(), **kwargs
    )


def oracle(builder, split="train") -> dict[str, np.ndarray]:
    """The split's rows, decoded by the numpy codec from the shard files."""
    codec = read_layout(builder.data_path).codec()
    parts = []
    for r in shard_reads(builder, split):
        records = unframe(open(r.filename, "rb").read())[r.skip : r.skip + r.take]
        parts.append(codec.decode(np.frombuffer(b"".join(records), np.uint8)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture
def mixed(tmp_path):
    """Every kind of feature: raw bytes, bool, uint32 varints, 0-d, empty rows."""
    n = 203
    rng = np.random.default_rng(3)
    cols = {
        "img": rng.normal(size=(n, 5, 3)).astype(np.float32),
        "flag": rng.random((n, 4)) > 0.5,
        "count": rng.integers(0, 2**32, size=(n, 2), dtype=np.uint32),
        "label": np.arange(n, dtype=np.int64),
        "half": rng.normal(size=n).astype(np.float16),
        "nothing": np.zeros((n, 0, 3), np.float32),
    }
    builder = tb.build("mixed", data_dir=tmp_path, splits={"train": cols}, shard_bytes=4000)
    assert builder.info.splits["train"].num_shards > 3
    return builder, cols


def _equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert got[k].tobytes() == want[k].tobytes(), k


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("block_rows", [1, 5, 64])
@pytest.mark.parametrize("split", ["train", "train[7:190]"])
def test_groups_in_stored_order_match_the_codec(mixed, mapped, block_rows, split):
    builder, cols = mixed
    want = oracle(builder, split)
    r = reader(builder, split, block_rows=block_rows, group_blocks=3, mapped=mapped)
    groups = [r.read_group(g) for g in range(r.num_groups)]
    _equal({k: np.concatenate([g[k] for g in groups]) for k in want}, want)
    if split == "train":
        _equal(want, cols)  # and the codec oracle holds the arrays that were built


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("seed", [0, 99, 2**63 + 5])
@pytest.mark.parametrize("window", [1, 4, 100])
def test_shuffled_groups_follow_the_block_permutation_and_row_order(mixed, mapped, seed, window):
    builder, _ = mixed
    want = oracle(builder)
    r = reader(
        builder, block_rows=5, group_blocks=3, window_groups=window, shuffle=True, mapped=mapped
    )
    twin = epoch_twin(r.num_rows, 5, 3, seed & ((1 << 63) - 1), window)
    assert len(twin) == r.num_groups
    for g, rows in enumerate(twin):
        _equal(r.read_group(g, seed), {k: v[rows] for k, v in want.items()})
    assert sorted(np.concatenate(twin).tolist()) == list(range(r.num_rows))


def test_read_rows_reads_any_rows_in_the_order_asked(mixed):
    builder, cols = mixed
    r = reader(builder)
    rows = np.array([5, 6, 7, 202, 0, 6, 6, 100, 101, 99])  # runs, repeats, shard ends
    _equal(r.read_rows(rows), {k: v[rows] for k, v in cols.items()})
    _equal(r.read_rows([]), {k: v[:0] for k, v in cols.items()})
    with pytest.raises(core.ShardReadError, match="index 203 is out of range"):
        r.read_rows([1, 203])


def test_decode_of_whole_shards_matches_the_codec(mixed):
    builder, cols = mixed
    reads = shard_reads(builder)
    codec = read_layout(builder.data_path).codec()
    blocks = [open(r.filename, "rb").read() for r in reads]
    names = [r.filename for r in reads]
    _equal(core.decode(codec, blocks, names), cols)
    dest = np.random.default_rng(0).permutation(len(cols["label"]))
    got = core.decode(codec, blocks, names, dest=dest)
    _equal(got, {k: v[np.argsort(dest)] for k, v in cols.items()})
    with pytest.raises(core.ShardReadError, match="not a permutation"):
        core.decode(codec, blocks, names, dest=np.zeros(len(dest), np.int64))
    with pytest.raises(core.ShardReadError, match=f"Shard {names[0]} gave a block of"):
        core.decode(codec, [blocks[0][:-1]], names[:1])


@pytest.fixture
def wide(tmp_path):
    """512 rows of 64 KiB (32 MiB) in shards of 5 MiB: groups big enough for threads."""
    n = 512
    rng = np.random.default_rng(5)
    cols = {"i": np.arange(n), "x": rng.integers(0, 255, (n, 64 << 10), dtype=np.uint8)}
    return tb.build("wide", data_dir=tmp_path, splits={"train": cols}, shard_bytes=5 << 20)


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_big_group_read_by_several_threads_is_the_same_group(wide, mapped, shuffle):
    # Parts of at least 4 MiB go to their own thread: up to 8 parts here.
    want = oracle(wide)
    kwargs = dict(block_rows=1, group_blocks=512, shuffle=shuffle, mapped=mapped)
    one = reader(wide, **kwargs).read_group(0, 3)
    for threads in (2, 3, 8, 64):
        _equal(reader(wide, read_threads=threads, **kwargs).read_group(0, 3), one)
    _equal(one, {k: v[one["i"]] for k, v in want.items()})
    if not shuffle:
        assert one["i"].tolist() == list(range(512))


@pytest.mark.parametrize("mapped", [False, True])
def test_dealt_windows_read_by_several_threads_follow_their_twin(wide, mapped):
    want = oracle(wide)
    r = reader(
        wide, block_rows=2, group_blocks=64, window_groups=4, shuffle=True, mapped=mapped,
        read_threads=2,
    )  # fmt: skip
    twin = epoch_twin(r.num_rows, 2, 64, 11, 4)
    for g, rows in enumerate(twin):
        _equal(r.read_group(g, 11), {k: v[rows] for k, v in want.items()})


FILL = dict(block_rows=2, group_blocks=64, window_groups=4, shuffle=True, lookahead=6)


def _read_epoch(r: core.Reader, seed: int) -> list[dict]:
    return [r.read_group(g, seed) for g in range(r.num_groups)]


@pytest.mark.parametrize("threads", [1, 2])
def test_filled_pieces_change_no_row(wide, threads):
    want = oracle(wide)
    evict_files({r.filename for r in shard_reads(wide)})
    r = reader(wide, fill_pieces=True, read_threads=threads, **FILL)
    twin = epoch_twin(r.num_rows, 2, 64, 5, 4)
    for got, rows in zip(_read_epoch(r, 5), twin, strict=True):
        _equal(got, {k: v[rows] for k, v in want.items()})


def _cached_huge(files, read) -> int:
    """Bytes of `files` in huge folios after `read()` from an evicted cache."""
    evict_files(files)
    read()
    return sum(huge_cached_bytes(name) for name in files)


def _skip_without_huge_folios(files) -> None:
    def faulted_with_huge_pages() -> None:  # the kernel's own way, without the core
        import mmap

        for name in files:
            with open(name, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                m.madvise(mmap.MADV_HUGEPAGE)
                for at in range(0, len(m), 2 << 20):
                    m[at]

    # Large folios on ext4 arrived in Linux 6.16; other file systems differ.
    if _cached_huge(files, faulted_with_huge_pages) < 2 << 20:
        pytest.skip("this kernel or file system caches no file in huge folios")


def test_filled_pieces_come_in_huge_pages(wide):
    files = sorted({r.filename for r in shard_reads(wide)})
    total = sum(os.path.getsize(name) for name in files)
    _skip_without_huge_folios(files)
    # Pieces of 2 MiB over every shard of 5 MiB: all but the tails.
    epoch = lambda **kw: lambda: _read_epoch(reader(wide, **FILL, **kw), 5)  # noqa: E731
    assert _cached_huge(files, epoch(fill_pieces=True)) >= total // 2
    # Announced blocks alone come in 4 KiB pages.
    assert _cached_huge(files, epoch()) == 0


_AS_ANOTHER_USER = """
import ctypes, hashlib, json, os, resource, sys
from tfds_bigarrays._format.layout import read_layout
from tfds_bigarrays._read import core
from tfds_bigarrays._read.plan import ShardRead
reads = [ShardRead(**r) for r in json.loads(sys.argv[1])]
# The premise: the kernel will not say which of these pages are cached.
fd = os.open(reads[0].filename, os.O_RDONLY)
args = (ctypes.c_uint64 * 2)(0, 4096), (ctypes.c_uint64 * 5)()
refused = ctypes.CDLL(None, use_errno=True).syscall(451, fd, *args, 0) != 0
print("cannot tell" if refused else "cachestat answered")
r = core.Reader(reads, read_layout(sys.argv[2]).codec(), fill_pieces=True, **json.loads(sys.argv[3]))
groups = [r.read_group(g, 5) for g in range(r.num_groups)]
print(json.dumps([[int(i) for i in g["i"]] for g in groups]))
print(hashlib.sha256(b"".join(g["x"].tobytes() for g in groups)).hexdigest())
# Page faults of one more epoch by a new reader, filling and not: once the
# pieces were found cached, the process maps none of them again. (Twice
# each: the first epochs fault in the output buffers the later ones reuse.)
for fill in (False, True, False, True):
    again = core.Reader(reads, r.codec, fill_pieces=fill, **json.loads(sys.argv[3]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for g in range(again.num_groups):
        again.read_group(g, 6)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_pieces_of_shards_the_reader_may_not_write_are_filled_too(wide):
    # cachestat (like mincore) answers only for files the process owns or
    # may write: a team's shared datasets, read by other users. The reader
    # here is root without capabilities, over shards given to nobody.
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root, to give the shards to another user, and util-linux's setpriv")
    reads = shard_reads(wide)
    files = sorted({r.filename for r in reads})
    total = sum(os.path.getsize(name) for name in files)
    _skip_without_huge_folios(files)
    reads_json = json.dumps([dataclasses.asdict(r) for r in reads])
    command = [*WITHOUT_CAPABILITIES, sys.executable, "-c", _AS_ANOTHER_USER, reads_json]
    command += [os.fspath(wide.data_path), json.dumps(FILL)]
    outs = []

    def read_as_another_user() -> None:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout.splitlines())

    with given_away(files):
        assert _cached_huge(files, read_as_another_user) >= total // 2
        # Again in a new process, every piece cached: told by their first faults.
        read_as_another_user()
    want = oracle(wide)
    rows = np.concatenate(epoch_twin(want["i"].size, 2, 64, 5, 4))
    digest = hashlib.sha256(want["x"][rows].tobytes()).hexdigest()
    for premise, order, got, _, _, plain_faults, filling_faults in outs:
        assert premise == "cannot tell"  # else this reads as the test above does
        assert np.concatenate(json.loads(order)).tolist() == want["i"][rows].tolist()
        assert got == digest
        # A reader that probed again would fault each of the epoch's 256 runs once.
        assert int(filling_faults) < int(plain_faults) + 64, (filling_faults, plain_faults)


def test_a_shard_truncated_under_a_filling_reader_is_named(wide):
    files = sorted({r.filename for r in shard_reads(wide)})
    r = reader(wide, fill_pieces=True, **FILL)
    evict_files(files)
    r.read_group(0, 5)  # descriptors held, the look-ahead's pieces filled
    os.truncate(files[-1], os.path.getsize(files[-1]) // 2)
    evict_files(files)
    with pytest.raises(core.ShardReadError, match=f"Shard {files[-1]} could not be read"):
        _read_epoch(r, 5)


@pytest.mark.parametrize("mapped", [False, True])
def test_a_failure_in_a_helper_thread_is_named(wide, mapped):
    # The last shard is read by the last part's thread, in stored order.
    r = reader(wide, block_rows=1, group_blocks=512, mapped=mapped, read_threads=4)
    last = shard_reads(wide)[-1].filename
    os.truncate(last, os.path.getsize(last) - 1)
    with pytest.raises(core.ShardReadError, match=f"Shard {last} .*(changed|truncated)"):
        r.read_group(0)


@pytest.mark.parametrize(
    "bad", [dict(window_groups=0), dict(read_threads=0), dict(read_threads=65)]
)
def test_malformed_windows_and_threads_are_refused(mixed, bad):
    builder, _ = mixed
    with pytest.raises(core.ShardReadError, match="malformed reader"):
        reader(builder, block_rows=5, group_blocks=3, **bad)


def test_many_features_are_read(tmp_path):
    # More raw features than one preadv's iovecs allow: the smallest go to the
    # junk row and are copied from there.
    cols = {f"f{i:03d}": np.full((5, 2), i, np.int16) for i in range(600)}
    builder = tb.build("many", data_dir=tmp_path, splits={"train": cols})
    r = reader(builder, block_rows=2, group_blocks=3)
    _equal(r.read_group(0), cols)


def _flip(path, offset: int, bit: int = 0x10) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= bit
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize(
    "where,message",
    [
        ("value", "has records whose CRC32C does not match"),
        ("constant", "holds a record that does not match the dataset's layout"),
        ("header", "holds a record that does not match the dataset's layout"),
    ],
)
def test_damage_is_named_with_its_row(mixed, mapped, where, message):
    builder, _ = mixed
    reads = shard_reads(builder)
    victim = reads[2].filename
    codec = read_layout(builder.data_path).codec()
    offset = {
        "value": 12 + codec.slots["img"].start + 3,
        "constant": 12 + codec.fields()[0].start,
        "header": 2,
    }[where]
    _flip(victim, 3 * codec.frame_bytes + offset)  # row 3 of the shard
    r = reader(builder, block_rows=7, mapped=mapped)
    with pytest.raises(core.ShardReadError, match=f"shard {victim} {message}.*row 3 of {victim}"):
        for g in range(r.num_groups):
            r.read_group(g)
    if where == "value":
        r = reader(builder, block_rows=7, mapped=mapped, verify=False)
        for g in range(r.num_groups):
            r.read_group(g)  # without CRCs the values pass; the layout still holds


def test_malformed_uint32_is_named_without_crcs(mixed):
    builder, _ = mixed
    victim = shard_reads(builder)[1].filename
    codec = read_layout(builder.data_path).codec()
    _flip(victim, 12 + codec.slots["count"].start, 0x80)  # a continuation bit
    r = reader(builder, block_rows=500, verify=False)
    with pytest.raises(core.ShardReadError, match=f"shard {victim}: Feature 'count': malformed"):
        r.read_group(0)


@pytest.mark.parametrize("mapped", [False, True])
def test_short_missing_or_replaced_shards_are_named(mixed, mapped):
    builder, _ = mixed
    reads = shard_reads(builder)
    r = reader(builder, block_rows=1000, mapped=mapped)  # identities taken now
    last = reads[-1].filename
    os.truncate(last, os.path.getsize(last) - 5)
    with pytest.raises(
        core.ShardReadError, match=f"Shard {last} changed after the dataset was loaded"
    ):
        r.read_group(0)
    r = reader(builder, block_rows=1000, mapped=mapped)
    with pytest.raises(core.ShardReadError, match=f"Shard {last} could not be read at row 0"):
        r.read_group(0)
    os.remove(reads[2].filename)
    with pytest.raises(core.ShardReadError, match=f"Shard {reads[2].filename} is missing"):
        reader(builder, block_rows=1000, mapped=mapped).read_group(0)


def test_a_reader_never_reads_a_shard_replaced_after_it_opened(tmp_path):
    # float32 -> int32 at the same width: the layout alone cannot tell them apart.
    x = np.arange(400, dtype=np.float32)
    b = tb.build("swap", data_dir=tmp_path / "a", splits={"train": {"x": x}}, shard_bytes=1024)
    r = reader(b, block_rows=4)
    r.read_group(0)  # opened and cached
    other = tb.build(
        "swap",
        data_dir=tmp_path / "b",
        splits={"train": {"x": x.astype(np.int32) + 7}},
        shard_bytes=1024,
    )
    for new, old in zip(shard_reads(other), shard_reads(b), strict=True):
        os.replace(new.filename, old.filename)
    with pytest.raises(core.ShardReadError, match="changed after the dataset was loaded"):
        for g in range(r.num_groups):
            r.read_group(g)


def test_group_out_of_range_is_refused(mixed):
    r = reader(mixed[0], block_rows=10)
    with pytest.raises(
        core.ShardReadError, match=rf"group={r.num_groups} is not in \[0, {r.num_groups}\)"
    ):
        r.read_group(r.num_groups)


def test_reader_pickles_small_and_reopens(mixed):
    builder, cols = mixed
    r = reader(builder, block_rows=5, group_blocks=3, shuffle=True)
    blob = pickle.dumps(r)
    assert len(blob) < 8000  # the configuration, not the rows
    again = pickle.loads(blob)
    _equal(again.read_group(2, 11), r.read_group(2, 11))


@pytest.mark.parametrize("n,seed", [(1, 0), (2, 3), (5000, 5), (10**9 + 7, 2**62), (3, 1)])
def test_block_permutation_matches_its_numpy_twin(n, seed):
    idx = np.random.default_rng(n).integers(0, n, 1000)
    assert np.array_equal(core.permute(n, seed, idx), Permutation(n=n, seed=seed)(idx))


def test_row_order_is_a_keyed_uniform_permutation():
    for n in (0, 1, 2, 7, 512):
        assert core.row_order(5, 1, n).tolist() == row_order_twin(5, 1, n)
    assert not np.array_equal(core.row_order(5, 1, 512), core.row_order(5, 2, 512))
    assert not np.array_equal(core.row_order(5, 1, 512), core.row_order(6, 1, 512))
    # Uniform: where row 0 lands, over 4,000 keys, fills 8 bins evenly (chi-square,
    # 7 degrees of freedom: 24.3 is the 0.1% tail).
    where = np.array([core.row_order(seed, 0, 64)[0] for seed in range(4000)])
    counts = np.bincount(where // 8, minlength=8)
    assert ((counts - 500) ** 2 / 500).sum() < 24.3


def test_crc32c_of_an_array_is_the_crc_of_its_bytes():
    a = np.arange(10, dtype=np.int32)
    assert core.crc32c(a) == google_crc32c.value(a.tobytes())


@pytest.mark.parametrize("level", [0, 1, 2])  # table, CRC32 instruction, folding
def test_every_crc_path_matches_google_crc32c(level):
    if level > core.crc_level():
        pytest.skip(f"this CPU has CRC level {core.crc_level()}, not {level}")
    rng = np.random.default_rng(level)
    data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for n in [*range(0, 300), 1023, 1024, 1029, 4096, 4999]:
        for start in (0, 1, 7):
            piece = data[start : start + n]
            assert core.crc32c(piece, level=level) == google_crc32c.value(piece), (n, start)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_every_crc_path_checks_scatter_reads(tmp_path, level):
    if level > core.crc_level():
        pytest.skip(f"this CPU has CRC level {core.crc_level()}, not {level}")
    # Pieces of 300 and 1029 bytes between short ones: folded, four CRC32
    # streams, or the table; and a flipped byte in the long piece is caught.
    n = 41
    rng = np.random.default_rng(11)
    cols = {
        "img": rng.normal(size=(n, 75)).astype(np.float32),
        "wide": rng.integers(0, 256, size=(n, 1029), dtype=np.uint8),
        "label": np.arange(n, dtype=np.int64),
    }
    builder = tb.build("long", data_dir=tmp_path, splits={"train": cols}, shard_bytes=20_000)
    best = core.crc_level()
    core.set_crc_level(level)
    try:
        r = reader(builder, block_rows=3, group_blocks=100)
        _equal(r.read_group(0), cols)
        shard = shard_reads(builder)[0].filename
        codec = read_layout(builder.data_path).codec()
        _flip(shard, 4 * codec.frame_bytes + 12 + codec.slots["wide"].start + 500)
        with pytest.raises(core.ShardReadError, match="CRC32C does not match"):
            reader(builder, block_rows=3, group_blocks=100).read_group(0)
    finally:
        core.set_crc_level(best)


def test_descriptors_are_bounded_and_released(tmp_path):
    # Hundreds of shards under a descriptor limit of 64: the shared cache keeps at
    # most a quarter of it, and every read still works, repeatedly.
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
import numpy as np, tfds_bigarrays as tb
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_core import reader
from tfds_bigarrays._read import core
b = tb.build("fds", data_dir={str(tmp_path)!r}, splits={{"train": {{"x": np.arange(12000)}}}},
             shard_bytes=1024)
assert b.info.splits["train"].num_shards >= 300, b.info.splits["train"].num_shards
for _ in range(20):
    r = reader(b, block_rows=3, group_blocks=8, shuffle=True)
    got = np.concatenate([r.read_group(g, 1)["x"] for g in range(r.num_groups)])
    assert sorted(got.tolist()) == list(range(12000))
    assert core.open_descriptors() <= core.descriptor_limit() == 16, core.open_descriptors()
print("ok", core.open_descriptors())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_mapped_shards_are_shared_and_bounded(mixed):
    builder, _ = mixed
    total = sum(os.path.getsize(r.filename) for r in shard_reads(builder))
    a = reader(builder, block_rows=50, mapped=True)
    b = reader(builder, block_rows=50, mapped=True)
    before = core.mapped_bytes()
    for g in range(a.num_groups):
        a.read_group(g)
        b.read_group(g)
    # One mapping per shard for both readers, within the largest split reserved.
    assert core.mapped_bytes() - before <= total

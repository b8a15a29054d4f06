"""Nothing lost, nothing silently wrong: the defects of an adversarial trial.

Each test is named for its item: `test_item<N>_...`. Real processes, real
signals, a real tmpfs for the full disk.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_cli, run_python, tmpfs

import tfds_bigarrays as tb
from tfds_bigarrays._build.sources import NpyFileSource, SourceError
from tfds_bigarrays._registry.verify import verify

# A rebuild of "kept" whose source stops half-way until the test opens a gate.
REBUILD = textwrap.dedent("""
    import pathlib, sys, time
    import numpy as np, tfds_bigarrays as tb

    data_dir, gate, value, mode = sys.argv[1:5]
    x = np.full((400, 256), float(value), np.float32)

    class Gated:
        spec = tb.FeatureSpec(dtype=np.float32, shape=(256,))
        description = "gated array"
        def __len__(self):
            return len(x)
        def read(self, start, stop):
            if mode == "slow":
                time.sleep(0.05)
            g = pathlib.Path(gate)
            if start >= 200 and mode != "slow":
                (g / "halfway").touch()
                while not (g / "open").exists():
                    time.sleep(0.02)
                if mode == "fail":
                    raise ValueError("the source broke half-way")
            return x[start:stop]

    tb.build("kept", data_dir=data_dir, splits={"train": {"x": Gated()}},
             shard_bytes=32 * 1024, overwrite=True, beam=False)
    print("done", flush=True)
""")


def _one_line_error(proc) -> str:
    """The CLI's one error line (progress bars may precede it); exit status 2."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr[-3000:]
    return errors[0]


def _values(data_dir, **kwargs) -> np.ndarray:
    ds = tfds.load("kept", data_dir=data_dir, split="train", batch_size=100, **kwargs)
    return np.concatenate([b["x"] for b in tfds.as_numpy(ds)])


@pytest.fixture
def kept(tmp_path):
    """Version 1.0.0 of "kept", all ones, and a way to start a gated rebuild."""
    data = tmp_path / "data"
    tb.build(
        "kept",
        data_dir=data,
        splits={"train": {"x": np.ones((400, 256), np.float32)}},
        shard_bytes=32 * 1024,
    )
    script = tmp_path / "rebuild.py"
    script.write_text(REBUILD)

    def start(value: float, mode: str = "wait", name: str = "gate") -> tuple:
        gate = tmp_path / name
        gate.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), str(gate), str(value), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        return proc, gate

    return data, start


def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _leftovers(data: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (data / "kept").iterdir() if p.name.startswith(".rebuild-"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_item1_a_killed_overwrite_keeps_the_old_version(kept, sig):
    data, start = kept
    proc, gate = start(2.0)
    _wait_for(gate / "halfway", proc)
    assert _values(data).min() == 1.0  # while it runs, the old version loads
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    got = _values(data)
    assert got.shape == (400, 256) and (got == 1.0).all()  # intact, every row
    if sig == signal.SIGINT:
        assert _leftovers(data) == []  # cleaned up on the way out
    # A later overwrite completes, and clears what a killed one left.
    proc, gate2 = start(3.0, name="gate2")
    (gate2 / "open").touch()
    assert proc.wait(timeout=120) == 0, proc.communicate()
    assert (_values(data) == 3.0).all()
    assert _leftovers(data) == []


def test_item1_a_source_error_half_way_keeps_the_old_version(kept):
    data, start = kept
    proc, gate = start(2.0, mode="fail")
    _wait_for(gate / "halfway", proc)
    (gate / "open").touch()
    assert proc.wait(timeout=120) != 0
    assert "the source broke half-way" in proc.communicate()[1]
    assert (_values(data) == 1.0).all()
    assert _leftovers(data) == []


def test_item1_a_full_disk_during_an_overwrite_keeps_the_old_version(tmp_path):
    small = np.arange(300 * 256, dtype=np.float32).reshape(300, 256)  # 300 KiB
    np.save(tmp_path / "small.npy", small)
    np.save(tmp_path / "big.npy", np.zeros((900, 256), np.float32))  # 900 KiB
    with tmpfs(tmp_path / "disk", size="1m") as disk:
        args = ("--data-dir", str(disk), "--shard-size", "64KiB")
        proc = run_cli("build", "kept", "--split", f"train:x={tmp_path / 'small.npy'}", *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        proc = run_cli(
            "build", "kept", "--split", f"train:x={tmp_path / 'big.npy'}", "--overwrite", *args
        )
        assert "No space left on device" in _one_line_error(proc)
        np.testing.assert_array_equal(_values(disk), small)
        assert _leftovers(disk) == []


READERS = """
import json, pathlib, sys, numpy as np, tensorflow_datasets as tfds
import tfds_bigarrays
data, out, stop = sys.argv[1:4]
while not pathlib.Path(stop).exists():
    try:
        ds = tfds.load("kept", data_dir=data, split="train", batch_size=50, shuffle_files=True)
        x = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
        seen = ["ok", len(x), sorted(set(x.ravel().tolist()))]
    except Exception as e:
        seen = ["error", type(e).__name__, str(e)[:300]]
    with open(out, "a") as f:
        f.write(json.dumps(seen) + "\\n")
"""


def test_item1_readers_during_an_overwrite_always_get_one_complete_version(kept, tmp_path):
    data, start = kept
    out, stop = tmp_path / "seen.jsonl", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READERS, str(data), str(out), str(stop)],
        stderr=subprocess.PIPE,
        text=True,
    )

    def seen():
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def wait(condition):
        deadline = time.monotonic() + 300
        while not condition(seen()):
            assert reader.poll() is None, reader.communicate()
            assert time.monotonic() < deadline, seen()
            time.sleep(0.1)

    wait(lambda s: any(x[0] == "ok" for x in s))  # the reader reads the old version
    proc, _ = start(2.0, mode="slow")
    assert proc.wait(timeout=300) == 0, proc.communicate()
    wait(lambda s: any(x[0] == "ok" and x[2] == [2.0] for x in s))  # and then the new
    stop.touch()
    reader.wait(timeout=300)
    results = seen()
    assert {tuple(x[2]) for x in results if x[0] == "ok"} == {(1.0,), (2.0,)}, results
    assert all(x[1] == 400 for x in results if x[0] == "ok")
    for x in results:  # a read across the swap may fail, saying why; nothing else
        assert x[0] == "ok" or "changed after the dataset was loaded" in x[2], x


def test_item10_of_two_concurrent_overwrites_the_second_to_finish_fails(kept):
    data, start = kept
    first, gate1 = start(2.0, name="gate1")
    second, gate2 = start(3.0, name="gate2")
    _wait_for(gate1 / "halfway", first)
    _wait_for(gate2 / "halfway", second)
    (gate1 / "open").touch()
    assert first.wait(timeout=120) == 0, first.communicate()
    (gate2 / "open").touch()
    assert second.wait(timeout=120) != 0
    err = second.communicate()[1]
    assert "DatasetExistsError" in err and "replaced by a concurrent build" in err, err
    assert (_values(data) == 2.0).all()
    assert _leftovers(data) == []


@pytest.mark.parametrize("access", ["random", "mapped", "sequential"])
def test_item2_a_reader_loaded_before_an_overwrite_never_decodes_the_new_shards(tmp_path, access):
    x = np.arange(2000, dtype=np.float32)
    tb.build("stale", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=2048)
    with tb.read_options(access=access):
        ds = tfds.load("stale", data_dir=tmp_path, split="train", batch_size=100)
    # The same width, another dtype: the layout alone cannot tell them apart.
    tb.build(
        "stale",
        data_dir=tmp_path,
        splits={"train": {"x": x.view(np.int32) + 1}},
        shard_bytes=2048,
        overwrite=True,
    )
    with pytest.raises(Exception, match="changed after the dataset was loaded"):
        for _ in tfds.as_numpy(ds):
            pass
    fresh = tfds.load("stale", data_dir=tmp_path, split="train", batch_size=2000)
    got = next(iter(tfds.as_numpy(fresh)))["x"]
    assert got.dtype == np.int32 and (got == x.view(np.int32) + 1).all()


def test_item3_a_source_replaced_during_a_build_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(50_000, dtype=np.float32))
    other = tmp_path / "other.npy"
    np.save(other, np.arange(50_000, dtype=np.int32))  # the same size, another dtype

    class Swapping:  # replaces the file by rename once the build has read from it
        def __init__(self):
            self.inner, self.reads = NpyFileSource(path, feature="x"), 0

        spec = property(lambda self: self.inner.spec)
        description = property(lambda self: self.inner.description)

        def __len__(self):
            return len(self.inner)

        def read(self, start, stop):
            self.reads += 1
            if self.reads == 2:
                os.replace(other, path)
            return self.inner.read(start, stop)

    with pytest.raises(SourceError, match=f"x='{path}' changed during the build"):
        tb.build(
            "swapped", data_dir=tmp_path / "d", splits={"train": {"x": Swapping()}},
            shard_bytes=20_000,
        )  # fmt: skip
    assert not (tmp_path / "d").exists()
    # And in a worker: a source pickled to it checks the file is the one planned.
    np.save(path, np.arange(10, dtype=np.float32))
    source = NpyFileSource(path, feature="x")
    blob = pickle.dumps(source)
    np.save(tmp_path / "again.npy", np.arange(10, dtype=np.int32))
    os.replace(tmp_path / "again.npy", path)
    with pytest.raises(SourceError, match="changed during the build"):
        pickle.loads(blob).read(0, 5)


def test_item3_a_source_truncated_during_a_build_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(100_000, dtype=np.float64))
    source = NpyFileSource(path, feature="x")
    source.read(0, 10)
    os.truncate(path, 4096)
    with pytest.raises(SourceError, match="changed during the build"):
        source.read(50_000, 60_000)


@pytest.fixture
def edited(tmp_path):
    x = np.arange(600, dtype=np.float32)
    builder = tb.build("edited", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=1024)
    return tmp_path, builder.data_path


def _edit_json(path: pathlib.Path, fn) -> None:
    value = json.loads(path.read_text())
    fn(value)
    path.write_text(json.dumps(value))


def test_item4_an_edited_layout_file_is_refused_by_load_and_verify(edited):
    data, directory = edited

    def to_int32(v):
        v["features"]["x"]["dtype"] = "int32"

    _edit_json(directory / "tfds_bigarrays.json", to_int32)
    with pytest.raises(tb.TfdsBigarraysError, match="tfds_bigarrays.json and features.json"):
        tfds.load("edited", data_dir=data, split="train")
    with pytest.raises(tb.TfdsBigarraysError, match="disagree on the features"):
        verify(directory)
    proc = run_cli("verify", "edited", "--data-dir", str(data))
    assert proc.returncode == 2 and "features.json" in proc.stderr, proc.stderr


def test_item4_a_truncated_shard_hidden_by_edited_lengths_is_found(edited):
    data, directory = edited
    shard = sorted(directory.glob("*.tfrecord-*"))[0]
    frame = read_frame(directory)
    shard.write_bytes(shard.read_bytes()[: -10 * frame])  # ten rows lost

    def shorter(v):
        v["splits"][0]["shardLengths"][0] = str(int(v["splits"][0]["shardLengths"][0]) - 10)
        v["splits"][0]["numBytes"] = str(int(v["splits"][0]["numBytes"]) - 10 * frame)

    _edit_json(directory / "dataset_info.json", shorter)
    with pytest.raises(tb.TfdsBigarraysError, match="disagree on the shards of split 'train'"):
        tfds.load("edited", data_dir=data, split="train")
    proc = run_cli("verify", "edited", "--data-dir", str(data))
    assert proc.returncode == 2 and "dataset_info.json" in proc.stderr, proc.stderr


def read_frame(directory: pathlib.Path) -> int:
    from tfds_bigarrays._format.layout import read_layout

    return read_layout(directory).codec().frame_bytes


def _npy(header: str, payload: bytes = b"\0" * 64) -> bytes:
    h = header.encode("latin1")
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + payload


BAD_HEADERS = {
    "fortran-no": ("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2, 2), }", "fortran_order"),
    "float-dim": ("{'descr': '<f4', 'fortran_order': False, 'shape': (3.7, 4), }", "shape"),
    "str-dim": ("{'descr': '<f4', 'fortran_order': False, 'shape': ('3', 4), }", "shape"),
    "bool-dim": ("{'descr': '<f4', 'fortran_order': False, 'shape': (True, 12), }", "shape"),
    "negative": ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 4), }", "shape"),
    "int-shape": ("{'descr': '<f4', 'fortran_order': False, 'shape': 3, }", "shape"),
    "none-shape": ("{'descr': '<f4', 'fortran_order': False, 'shape': None, }", "shape"),
    "deep": (
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 3000 + ")" * 3000 + "}",
        "header",
    ),
    "extra-key": ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "header keys"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_item5_malformed_npy_headers_are_refused_as_numpy_does(tmp_path, case):
    header, field = BAD_HEADERS[case]
    path = tmp_path / "x.npy"
    path.write_bytes(_npy(header))
    with pytest.raises(SourceError, match=f"x='{path}' has a malformed .npy header: {field}"):
        NpyFileSource(path, feature="x")
    proc = run_cli("build", "bad", "--data-dir", str(tmp_path / "d"), "--split", f"train:x={path}")
    assert f"{field}" in _one_line_error(proc)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("how", ["records-swapped", "shards-swapped", "foreign-shard"])
def test_item6_misplaced_records_are_found_by_verify(tmp_path, how):
    x = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)
    b = tb.build("placed", data_dir=tmp_path / "a", splits={"train": {"x": x}}, shard_bytes=4096)
    shards = sorted(b.data_path.glob("*.tfrecord-*"))
    frame = read_frame(b.data_path)
    sizes = [os.path.getsize(s) for s in shards]
    pair = next(i for i in range(1, len(shards) - 1) if sizes[i] == sizes[i + 1])
    shards = [shards[0], shards[pair], shards[pair + 1]]
    if how == "records-swapped":
        data = bytearray(shards[1].read_bytes())
        data[:frame], data[frame : 2 * frame] = data[frame : 2 * frame], data[:frame]
        shards[1].write_bytes(bytes(data))
    elif how == "shards-swapped":
        one, two = shards[1].read_bytes(), shards[2].read_bytes()
        shards[1].write_bytes(two)
        shards[2].write_bytes(one)
    else:
        other = tb.build(
            "placed", data_dir=tmp_path / "b", splits={"train": {"x": x + 1}}, shard_bytes=4096
        )
        theirs = sorted(other.data_path.glob("*.tfrecord-*"))[pair]
        shards[1].write_bytes(theirs.read_bytes())
    for quick in (False, True):
        bad = [r for r in verify(b.data_path, quick=quick) if r.problem]
        assert [pathlib.Path(r.path).name for r in bad][:1] in ([shards[1].name], [shards[2].name])
        assert "records were moved, swapped or replaced" in bad[0].problem
    proc = run_cli("verify", "placed", "--data-dir", str(tmp_path / "a"), "--quick")
    assert proc.returncode == 1 and "swapped" in proc.stdout, proc.stdout


ZERO_WIDTH = """
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays as tb
x = np.arange(10, dtype=np.float32).reshape(5, 2)
tb.build("zw", data_dir={d!r}, splits={{"train": {{"x": x, "e": np.zeros((5, 0), np.int8)}}}})
for access in ("random", "mapped", "sequential"):
    with tb.read_options(access=access):
        ds = tfds.load("zw", data_dir={d!r}, split="train", shuffle_files=False)
    rows = list(tfds.as_numpy(ds))
    assert [r["x"].tolist() for r in rows] == x.tolist(), rows
    assert all(r["e"].shape == (0,) for r in rows)
print("ok")
"""


def test_item7_a_zero_width_feature_reads_without_batch_size(tmp_path):
    proc = run_python(ZERO_WIDTH.format(d=str(tmp_path)))
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "ok", proc.stderr[-3000:]


FD_LOADS = """
import os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays as tb
x = np.arange({rows}, dtype=np.int64)
tb.build("fds", data_dir={d!r}, splits={{"train": {{"x": x}}}}, shard_bytes=1024)
n = len(os.listdir({d!r} + "/fds/1.0.0"))
base = len(os.listdir("/proc/self/fd"))
for access in ("random", "mapped", "sequential"):
    with tb.read_options(access=access):
        for i in range({loads}):
            full = tfds.load("fds", data_dir={d!r}, split="train", batch_size=-1)
            assert sorted(full["x"].numpy().tolist()) == x.tolist()
            ds = tfds.load("fds", data_dir={d!r}, split="train", batch_size=256,
                           shuffle_files=True)
            got = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
            assert sorted(got.tolist()) == x.tolist()
    print(access, n, len(os.listdir("/proc/self/fd")) - base)
"""


def _fd_growth(stdout: str) -> dict[str, tuple[int, int]]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("random", "mapped", "sequential"):
            out[parts[0]] = (int(parts[1]), int(parts[2]))
    return out


def test_item8_descriptors_stay_bounded_over_many_loads_of_many_shards(tmp_path):
    # 572 shards under `ulimit -n 64`, every access path, 5 loads each of a
    # full batch and an epoch; the process's open descriptors stay bounded.
    proc = run_python(
        FD_LOADS.format(limit=64, rows=600 * 26, d=str(tmp_path), loads=5), timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = _fd_growth(proc.stdout)
    assert set(growth) == {"random", "mapped", "sequential"}, proc.stdout
    assert all(files >= 572 for files, _ in growth.values()), growth
    assert max(grown for _, grown in growth.values()) <= 20, growth


def test_item8_two_hundred_full_loads_keep_descriptors_bounded(tmp_path):
    proc = run_python(
        FD_LOADS.format(limit=128, rows=15 * 26, d=str(tmp_path), loads=200), timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = _fd_growth(proc.stdout)
    assert len(growth) == 3 and max(grown for _, grown in growth.values()) <= 20, growth


def test_item9_absurd_row_counts_are_refused_before_any_allocation(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(
        _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 0), }")
    )
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import tfds_bigarrays as tb
try:
    tb.build("huge", data_dir={str(tmp_path / "d")!r}, splits={{"train": {{"x": {str(path)!r}}}}})
except tb.TfdsBigarraysError as e:
    print("refused:", e)
"""
    proc = run_python(code, timeout=120)
    assert "refused:" in proc.stdout and "4611686018427387904 rows" in proc.stdout, proc.stderr[
        -2000:
    ]
    assert not (tmp_path / "d").exists()
    with pytest.raises(tb.PlanError, match="every feature has rows of no values"):
        tb.build("empty", data_dir=tmp_path / "d", splits={"train": {"e": np.zeros((10**9, 0))}})
    assert not (tmp_path / "d").exists()


def test_item11_a_catalog_name_is_refused_at_build(tmp_path):
    with pytest.raises(
        tb.PlanError, match="name='mnist' is a dataset of TFDS's catalog.*'mnist_arrays'"
    ):
        tb.build("mnist", data_dir=tmp_path, splits={"train": {"x": np.zeros((3, 2))}})
    assert not tmp_path.joinpath("mnist").exists()


UNPRIVILEGED = """
import os, sys, tempfile
import numpy as np
from tfds_bigarrays._cli.main import main
src, locked = sys.argv[1:3]
# Everything the build imports, imported as root: the user below cannot read
# the interpreter's own folders.
with tempfile.TemporaryDirectory() as warm:
    assert main(["build", "warm", "--data-dir", warm, "--split", f"train:x={src}"]) == 0
os.setgid(65534)
os.setuid(65534)
sys.exit(main(["build", "t", "--data-dir", locked + "/d", "--split", f"train:x={src}"]))
"""


def test_item12_a_build_into_an_unwritable_directory():
    if os.geteuid() != 0:
        pytest.skip("needs root, to switch to an unprivileged user")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        os.chmod(base, 0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        np.save(base / "x.npy", np.zeros((4, 2)))
        os.chmod(base / "x.npy", 0o644)
        proc = subprocess.run(
            [sys.executable, "-c", UNPRIVILEGED, str(base / "x.npy"), str(locked)],
            capture_output=True, text=True, cwd=base,
            env={**os.environ, "HOME": str(base), "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        message = _one_line_error(proc)
        assert "cannot be written" in message and "--data-dir" in message
        assert list(locked.iterdir()) == []


def test_item12_a_build_onto_a_read_only_file_system(tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        np.save(tmp_path / "x.npy", np.zeros((4, 2)))
        proc = run_cli(
            "build", "t", "--data-dir", str(ro / "d"), "--split", f"train:x={tmp_path / 'x.npy'}"
        )
        assert "cannot be written" in _one_line_error(proc)


@pytest.mark.parametrize(
    "args,why",
    [
        (["--version", "01.0.0"], "no leading zeros"),
        (["NAME250"], "characters; at most 100"),
    ],
)
def test_item12_cli_refusals_are_one_line(tmp_path, args, why):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    name = "n" * 250 if args == ["NAME250"] else "okname"
    rest = [] if args == ["NAME250"] else args
    proc = run_cli(
        "build", name, "--data-dir", str(tmp_path / "d"), "--split",
        f"train:x={tmp_path / 'x.npy'}", *rest,
    )  # fmt: skip
    assert why in _one_line_error(proc)
    assert not (tmp_path / "d").exists()


def test_item12_an_npz_whose_directory_lies_is_one_line(tmp_path):
    path = tmp_path / "lies.npz"
    np.savez_compressed(path, x=np.arange(100_000.0))
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x01\x02")  # the central directory entry: its uncompressed size
    data[at + 24 : at + 28] = (5000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    proc = run_cli(
        "build", "lies", "--data-dir", str(tmp_path / "d"), "--split", f"train:x={path}:x"
    )
    assert "lies.npz" in _one_line_error(proc)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("damaged", ["tfds_bigarrays.json", "dataset_info.json"])
@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_item12_verify_and_inspect_on_damaged_json(edited, damaged, command):
    data, directory = edited
    (directory / damaged).write_text("{ not json")
    proc = run_cli(command, "edited", "--data-dir", str(data))
    assert damaged in _one_line_error(proc)


@pytest.mark.parametrize("damaged", ["tfds_bigarrays.json", "dataset_info.json", "features.json"])
def test_item12_load_on_malformed_json_names_the_file(edited, damaged):
    data, directory = edited
    (directory / damaged).write_text("[1, 2")
    with pytest.raises(tb.TfdsBigarraysError, match=damaged):
        tfds.load("edited", data_dir=data, split="train")


@pytest.mark.parametrize("split", ["train[10:10]", "train[:0%]"])
def test_item13_empty_selections_are_tfds_errors(edited, split):
    data, _ = edited
    with pytest.raises(ValueError, match="corresponds to no data"):
        tfds.load("edited", data_dir=data, split=split)
    b = tb.build("tiny", data_dir=data, splits={"train": {"x": np.zeros((3, 1))}})
    with pytest.raises(ValueError, match="corresponds to no data"):
        for part in tfds.even_splits("train", 5):
            b.as_dataset(split=part)


def test_item14_a_killed_publish_is_cleaned_by_the_next(edited, tmp_path):
    data, directory = edited
    registry = tmp_path / "registry.toml"
    registry.write_text('[team]\npaths = ["shared"]\n')  # relative to the TOML's folder
    code = f"""
import os, signal, sys
from tfds_bigarrays._registry import publish as p
from tfds_bigarrays._registry.lookup import Registry
def slow(*args, **kw):
    os.kill(os.getpid(), signal.SIGKILL)  # killed half-way through the copy
p._copy_hashed = slow
p.publish({str(directory)!r}, registry=Registry.from_files([{str(registry)!r}]), namespace="team")
"""
    proc = run_python(code)
    assert proc.returncode == -signal.SIGKILL
    left = list((tmp_path / "shared" / "edited").glob(".1.0.0.incomplete-*"))
    assert len(left) == 1
    proc = run_cli(
        "publish", "edited", "--data-dir", str(data), "--to", "team", "--registry", str(registry)
    )
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "shared" / "edited").glob(".*incomplete-*")) == []
    assert (tmp_path / "shared" / "edited" / "1.0.0" / "dataset_info.json").exists()


def test_item14_registry_paths_expand_home_and_resolve_relative_to_the_file(tmp_path, monkeypatch):
    from tfds_bigarrays._registry.lookup import Registry

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "conf").mkdir()
    toml = tmp_path / "conf" / "r.toml"
    toml.write_text('[a]\npaths = ["~/data"]\n[b]\npaths = ["../shared", "/abs"]\n')
    reg = Registry.from_files([toml])
    assert [str(p) for p in reg.namespace("a").paths] == [str(tmp_path / "home" / "data")]
    resolved = [os.path.normpath(str(p)) for p in reg.namespace("b").paths]
    assert resolved == [str(tmp_path / "shared"), "/abs"]


def test_item14_a_killed_op_compile_leaves_nothing_the_next_keeps(tmp_path):
    from tfds_bigarrays._read import build, core

    stale = tmp_path / ".op-killed.so"  # what a compile killed half-way leaves
    stale.write_bytes(b"")
    build.build_op(out=tmp_path / "_op.so", core=core.library_path())
    assert (tmp_path / "_op.so").stat().st_size > 0
    assert not stale.exists() and list(tmp_path.glob(".op-*.so")) == []

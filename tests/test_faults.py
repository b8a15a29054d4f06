"""Faults: kills at several stages, a full disk, damaged shards, interrupted
publishes, concurrent builds, readers during a publish. Nothing lost, nothing
silently wrong."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_cli, tmpfs

import tfds_bigarrays as tb
from tfds_bigarrays._registry.lookup import Registry
from tfds_bigarrays._registry.publish import publish
from tfds_bigarrays._registry.verify import verify

ROWS = 320  # rows of 1 KiB: 20 shards of 16 KiB
SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, tfds_bigarrays as tb

    data_dir, delay, kind = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    x = np.arange(320 * 128, dtype=np.int64).reshape(320, 128)

    class Slow:  # an ArraySource that takes its time, so kills land mid-build
        spec = tb.FeatureSpec(dtype=np.int64, shape=(128,))
        description = "slow array"
        def __len__(self):
            return len(x)
        def read(self, start, stop):
            # The first and the last shard take much longer: wide windows for
            # the kills aimed at them, even on a loaded machine.
            time.sleep(delay * (20 if start == 0 or stop == len(x) else 1))
            return x[start:stop]

    def rows():
        for i, row in enumerate(x):
            time.sleep(delay * (20 if i == 100 else 1 / 16))
            yield {"x": row}

    if kind == "generator":
        source = tb.from_generator(rows, specs={"x": (np.int64, (128,))})
        splits = {"train": source}
    else:
        splits = {"train": {"x": Slow()}}
    tb.build("faulty", data_dir=data_dir, splits=splits, shard_bytes=16 * 1024, beam=False)
    print("done", flush=True)
""")
WANT = np.arange(ROWS * 128, dtype=np.int64).reshape(ROWS, 128)


def _shards_done(data: pathlib.Path) -> int:
    return len([p for p in data.rglob("*.tfrecord-*") if ".incomplete-" not in p.name])


def _started(data: pathlib.Path) -> bool:
    return any(".incomplete-" in p.name for p in data.rglob("*.tfrecord-*"))


def _spooling(data: pathlib.Path) -> bool:
    """Rows are being spooled (files beyond the folder's owner marker)."""
    return any(
        p.is_file() and not p.name.startswith(".")
        for spool in data.glob("*/incomplete.spool_*")
        for p in spool.rglob("*")
    )


STAGES = {
    # stage: (source kind, condition on the data dir at which to kill)
    "while-spooling-a-generator": ("generator", _spooling),
    "during-the-first-shard": ("array", lambda d: _started(d) and _shards_done(d) == 0),
    "half-way": ("array", lambda d: _shards_done(d) >= 10),
    "during-the-last-shard": ("array", lambda d: _shards_done(d) >= 19),
}


def _load_all(data_dir, name="faulty"):
    ds = tfds.load(name, data_dir=data_dir, split="train", batch_size=1000, shuffle_files=False)
    return np.concatenate([b["x"] for b in tfds.as_numpy(ds)])


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_each_stage_then_rerun(tmp_path, stage):
    kind, condition = STAGES[stage]
    script = tmp_path / "build.py"
    script.write_text(SCRIPT)
    data = tmp_path / "data"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), "0.15", kind],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (data.exists() and condition(data)):
        assert proc.poll() is None, f"build ended before stage {stage}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"stage {stage} never reached"
        time.sleep(0.01)
    assert proc.poll() is None, f"build ended before the kill at stage {stage}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(Exception, match="faulty"):
        tfds.load("faulty", data_dir=data, split="train")
    assert not (data / "faulty" / "1.0.0").exists()
    rerun = subprocess.run(
        [sys.executable, str(script), str(data), "0", kind],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    np.testing.assert_array_equal(_load_all(data), WANT)
    # The killed build's folder (its owner is dead) was cleared by the rerun.
    assert sorted(p.name for p in (data / "faulty").iterdir()) == ["1.0.0"]


def test_disk_full_fails_cleanly_and_loses_nothing(tmp_path):
    x = np.random.default_rng(0).normal(size=(4000, 256)).astype(np.float32)  # 4 MB
    np.save(tmp_path / "x.npy", x)
    before = (tmp_path / "x.npy").read_bytes()
    with tmpfs(tmp_path / "disk", size="1m") as disk:
        proc = run_cli(
            "build", "full", "--data-dir", str(disk), "--split", f"train:x={tmp_path / 'x.npy'}",
            "--shard-size", "256KiB",
        )  # fmt: skip
        assert proc.returncode != 0
        assert "No space left on device" in proc.stderr, proc.stderr[-2000:]
        assert [p for p in disk.rglob("*") if p.is_file()] == [], "half-written files left"
    assert (tmp_path / "x.npy").read_bytes() == before  # the source is untouched
    # With room, the same command works.
    proc = run_cli(
        "build", "full", "--data-dir", str(tmp_path / "roomy"),
        "--split", f"train:x={tmp_path / 'x.npy'}", "--shard-size", "256KiB",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(_load_all(tmp_path / "roomy", "full"), x)


@pytest.fixture
def damaged(tmp_path):
    x = np.arange(3000 * 4, dtype=np.int32).reshape(3000, 4)
    builder = tb.build("damaged", data_dir=tmp_path, splits={"train": {"x": x}}, shard_bytes=8192)
    shards = sorted(builder.data_path.glob("*.tfrecord-*"))
    assert len(shards) > 3
    return builder.data_path, shards[2]


@pytest.mark.parametrize("damage", ["truncated", "deleted", "flipped-byte", "appended"])
def test_damaged_shard_is_named_by_reading_and_by_verify(damaged, damage):
    directory, victim = damaged
    data = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "deleted":
        victim.unlink()
    elif damage == "flipped-byte":
        victim.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        victim.write_bytes(data + b"\0" * 64)
    with pytest.raises(Exception, match=victim.name):
        _load_all(directory.parent.parent, "damaged")
    bad = [r for r in verify(directory) if r.problem]
    assert [pathlib.Path(r.path).name for r in bad] == [victim.name]
    proc = run_cli("verify", "damaged", "--data-dir", str(directory.parent.parent))
    assert proc.returncode == 1 and victim.name in proc.stdout + proc.stderr


def _registry(tmp_path) -> pathlib.Path:
    toml = tmp_path / "registry.toml"
    toml.write_text(f'[team]\npaths = ["{tmp_path / "published"}"]\n')
    return toml


def _many_shards(tmp_path, *, version="1.0.0", value=0) -> pathlib.Path:
    x = np.full((4000, 64), value, dtype=np.int64)  # 512 B rows, 400 shards of 5 rows
    built = tb.build(
        "many",
        data_dir=tmp_path / f"build-{version}",
        splits={"train": {"x": x}},
        shard_bytes=4096,
        version=version,
    )
    return built.data_path


def test_publish_killed_midway_leaves_no_version_and_reruns(tmp_path):
    toml = _registry(tmp_path)
    source = _many_shards(tmp_path)
    env = {**os.environ, "TFDS_BIGARRAYS_REGISTRY": str(toml)}
    cli = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
    proc = subprocess.Popen(
        [str(cli), "publish", "many", "--to", "team", "--data-dir", str(source.parent.parent)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    target_parent = tmp_path / "published" / "many"
    deadline = time.monotonic() + 120
    while True:
        tmps = list(target_parent.glob(".1.0.0.incomplete-*")) if target_parent.exists() else []
        if tmps and len(list(tmps[0].iterdir())) > 20:
            break
        assert proc.poll() is None, f"publish ended before the kill: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    registry = Registry.from_files([toml])
    assert registry.datasets("team") == {}, "a half-published version is visible"
    target = publish(source, registry=registry, namespace="team")
    assert [r for r in verify(target) if r.problem] == []
    assert registry.datasets("team") == {"many": ["1.0.0"]}


_CONCURRENT = textwrap.dedent("""
    import sys, numpy as np, tfds_bigarrays as tb
    x = np.arange(20000 * 16, dtype=np.int64).reshape(20000, 16)
    try:
        tb.build("twice", data_dir=sys.argv[1], splits={"train": {"x": x}}, shard_bytes=65536)
    except tb.DatasetExistsError as e:
        print("EXISTS", e, flush=True)
        sys.exit(3)
    print("BUILT", flush=True)
""")


def test_two_builds_of_one_name_at_once(tmp_path):
    script = tmp_path / "b.py"
    script.write_text(_CONCURRENT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "data")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    # One is told that the other finished first (3), unless the other had
    # finished before it began writing, when TFDS hands it the finished
    # dataset (0). Never a crash, never a mixed dataset.
    assert codes in ([0, 0], [0, 3]), outs
    for proc, (out, _) in zip(procs, outs, strict=True):
        if proc.returncode == 3:
            # Told either before starting or when finishing second.
            assert "already exists" in out or "finished by another build" in out, out
    got = _load_all(tmp_path / "data", "twice")
    np.testing.assert_array_equal(got, np.arange(20000 * 16).reshape(20000, 16))
    assert sorted(p.name for p in (tmp_path / "data" / "twice").iterdir()) == ["1.0.0"]


_READER = textwrap.dedent("""
    import os, sys, numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
    stop_file, ready_file = sys.argv[1], sys.argv[2]
    before = after = 0
    while True:
        published = os.path.exists(stop_file)  # v2 is complete once this exists
        ds = tfds.load("team:many:1.0.0", split="train", batch_size=500, shuffle_files=True)
        x = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
        assert x.shape == (4000, 64) and (x == 0).all(), "wrong data"
        if published:
            after += 1
            break
        before += 1
        open(ready_file, "w").close()
    latest = tfds.load("team:many", split="train", batch_size=4000)
    print("BEFORE", before, "AFTER", after,
          "LATEST", int(next(iter(tfds.as_numpy(latest)))["x"][0, 0]))
""")


def test_readers_keep_reading_while_a_new_version_is_published(tmp_path):
    toml = _registry(tmp_path)
    registry = Registry.from_files([toml])
    publish(_many_shards(tmp_path), registry=registry, namespace="team")
    v2 = _many_shards(tmp_path, version="1.1.0", value=7)
    script, stop = tmp_path / "reader.py", tmp_path / f"stop-{uuid.uuid4().hex}"
    script.write_text(_READER)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TFDS_BIGARRAYS_REGISTRY": str(toml)}
    ready = [tmp_path / f"ready-{i}" for i in range(3)]
    readers = [
        subprocess.Popen(
            [sys.executable, str(script), str(stop), str(flag)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 240
    while not all(flag.exists() for flag in ready):  # every reader has read v1 once
        assert all(p.poll() is None for p in readers), [p.communicate() for p in readers]
        assert time.monotonic() < deadline, "readers did not start"
        time.sleep(0.1)
    publish(v2, registry=registry, namespace="team")  # while they keep reading v1
    stop.touch()
    for proc in readers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        # Rounds before and after the publish read v1 exactly; then the new
        # version is the default.
        assert "AFTER 1" in out and "LATEST 7" in out, out
    shutil.rmtree(tmp_path / "published")


def test_only_folders_of_dead_builds_on_this_host_are_removed(tmp_path):
    import socket

    from etils import epath

    from tfds_bigarrays._build.scratch import OWNER_FILE as _OWNER_FILE
    from tfds_bigarrays._build.scratch import owned as _owned
    from tfds_bigarrays._build.scratch import remove_abandoned as _remove_abandoned

    name_dir = epath.Path(tmp_path)
    live, dead, foreign, unmarked = (name_dir / f"incomplete.{n}" for n in "ABCD")
    for folder in (live, dead, foreign, unmarked):
        folder.mkdir()
        (folder / "shard").write_text("data")
    (dead / _OWNER_FILE).write_text(socket.gethostname())  # marker, nobody holds its lock
    (foreign / _OWNER_FILE).write_text("another-host")
    with _owned(live):  # a build running now (this process holds the lock)
        _remove_abandoned(name_dir)
        assert live.exists() and foreign.exists() and unmarked.exists()
        assert not dead.exists()
    assert not (live / _OWNER_FILE).exists()  # the marker goes with its build
    assert sorted(p.name for p in name_dir.iterdir()) == [
        "incomplete.A",
        "incomplete.C",
        "incomplete.D",
    ]

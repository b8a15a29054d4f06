"""A build killed with SIGKILL leaves nothing tfds.load accepts; rerunning completes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, tfds_bigarrays as tb

    class Slow:  # an ArraySource that takes its time, so the kill lands mid-build
        def __init__(self, array):
            self.array = array
            self.spec = tb.FeatureSpec(dtype=array.dtype, shape=array.shape[1:])
            self.description = "slow array"
        def __len__(self):
            return len(self.array)
        def read(self, start, stop):
            time.sleep(float(sys.argv[2]))
            return self.array[start:stop]

    x = np.arange(200 * 1024, dtype=np.int64).reshape(-1, 128)  # 1600 rows of 1 KiB
    tb.build("killed", data_dir=sys.argv[1], splits={"train": {"x": Slow(x)}},
             shard_bytes=16 * 1024, beam=False)
    print("done")
""")


def test_kill_9_mid_build_then_rerun(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(SCRIPT)
    data = tmp_path / "data"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        written = [p for p in data.rglob("*.tfrecord-*") if ".incomplete-" not in p.name]
        if len(written) >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(written) >= 5, "the build ended before it could be killed mid-way"
    assert not (data / "killed" / "1.0.0").exists()
    with pytest.raises(Exception, match="killed"):
        tfds.load("killed", data_dir=data, split="train")
    rerun = subprocess.run(
        [sys.executable, str(script), str(data), "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ds = tfds.load("killed", data_dir=data, split="train", batch_size=400, shuffle_files=False)
    got = np.concatenate([b["x"] for b in tfds.as_numpy(ds)])
    assert np.array_equal(got, np.arange(200 * 1024).reshape(-1, 128))

"""The no-code contract: `tfds-bigarrays build` in one process, tfds.load in another."""

import re

import numpy as np
import pytest
from conftest import run_cli, run_python

from tfds_bigarrays._cli.build import parse_split
from tfds_bigarrays._cli.common import UsageError, parse_size
from tfds_bigarrays._cli.main import main


def test_build_then_load_in_another_process(small_arrays, tmp_path):
    d = small_arrays["dir"]
    data_dir = tmp_path / "data"
    proc = run_cli(
        "build",
        "cli_small",
        "--data-dir",
        str(data_dir),
        "--split",
        f"train:x={d}/x_train.npy,y={d}/y_train.npy",
        "--split",
        f"validation:x={d}/x_validation.npy,y={d}/y_validation.npy",
        "--supervised",
        "x,y",
        "--shard-size",
        "16KiB",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train: 3000 examples" in proc.stdout
    code = f"""
import numpy as np, tensorflow_datasets as tfds
import tfds_bigarrays
ds = tfds.load("cli_small", data_dir={str(data_dir)!r}, split="train", as_supervised=True,
               shuffle_files=True, batch_size=256)
xs, ys = [], []
for x, y in tfds.as_numpy(ds):
    xs.append(x); ys.append(y)
x, y = np.concatenate(xs), np.concatenate(ys)
want = np.load({str(d / "x_train.npy")!r})
assert x.shape == want.shape and sorted(map(bytes, x)) == sorted(map(bytes, want))
assert not np.array_equal(x, want), "not shuffled"
assert np.array_equal(y, (x.sum(1) > 0).astype(np.int64))
print("loaded", len(xs), "batches")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded 12 batches" in result.stdout

    again = run_cli(
        "build", "cli_small", "--data-dir", str(data_dir), "--split", f"train:x={d}/x_train.npy"
    )
    assert again.returncode != 0 and "already exists" in again.stderr


def _bad_inputs(d):
    xs, ys = f"{d}/x_train.npy", f"{d}/y_train.npy"
    return {
        "missing file": (["ok_name", "--split", f"train:x={d}/nope.npy"], "nope.npy.*no such file"),
        "length mismatch": (
            ["ok_name", "--split", f"train:x={xs},y={d}/y_validation.npy"],
            "different numbers of examples: x=3000.*y=500",
        ),
        "object dtype": (["ok_name", "--split", f"train:x={d}/objects.npy"], "never does"),
        "no split name": (["ok_name", "--split", f"x={xs}"], "has no split name"),
        "no feature=path": (["ok_name", "--split", f"train:{xs}"], "is not FEATURE=PATH"),
        "empty path": (["ok_name", "--split", "train:x="], "is not FEATURE=PATH"),
        "traversal name": (["../x", "--split", f"train:x={xs}"], "not a valid dataset name"),
        "spaces in name": (["my data", "--split", f"train:x={xs}"], "not a valid dataset name"),
        "upper case name": (["MyData", "--split", f"train:x={xs}"], "For example 'mydata'"),
        "bad supervised": (
            ["ok_name", "--split", f"train:x={xs},y={ys}", "--supervised", "x"],
            "INPUT,TARGET",
        ),
        "unknown key": (
            ["ok_name", "--split", f"train:x={xs},y={ys}", "--supervised", "x,z"],
            "must name two features",
        ),
        "bad size": (
            ["ok_name", "--split", f"train:x={xs}", "--shard-size", "big"],
            "--shard-size='big' is not a size",
        ),
    }


# Two cases run as real subprocesses (exit status of the console script); the
# rest call the same `main()` in-process, which is much faster.
_SUBPROCESS_CASES = {"missing file", "traversal name"}


@pytest.mark.parametrize("case", list(_bad_inputs("D")))
def test_bad_input_is_refused_cleanly(small_arrays, tmp_path, case, capsys):
    d = small_arrays["dir"]
    if not (d / "objects.npy").exists():
        np.save(d / "objects.npy", np.array([{"a": 1}] * 3000, dtype=object), allow_pickle=True)
    args, message = _bad_inputs(d)[case]
    data_dir = tmp_path / "data"
    argv = ["build", *args, "--data-dir", str(data_dir)]
    if case in _SUBPROCESS_CASES:
        proc = run_cli(*argv)
        code, stderr = proc.returncode, proc.stderr
    else:
        code = main(argv)
        stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "error:" in stderr
    assert re.search(message, stderr), stderr
    assert not data_dir.exists() or not any(data_dir.iterdir()), list(data_dir.iterdir())


def test_parse_helpers():
    assert parse_size("256MiB", flag="--x") == 256 << 20
    assert parse_size("1G", flag="--x") == 1 << 30
    assert parse_size("4096", flag="--x") == 4096
    assert parse_split("train:x=a.npy,y=b.npz:y") == ("train", {"x": "a.npy", "y": "b.npz:y"})
    with pytest.raises(UsageError, match="twice"):
        parse_split("train:x=a.npy,x=b.npy")


def test_cli_build_keeps_tensorflow_off_the_gpus():
    code = """
import os, sys
from tfds_bigarrays._cli.build import _hide_gpus
_hide_gpus()
print("hidden", repr(os.environ["CUDA_VISIBLE_DEVICES"]), "tf loaded", "tensorflow" in sys.modules)
import tensorflow as tf
_hide_gpus()  # with TensorFlow loaded: through tf.config, without error
print("gpus", tf.config.get_visible_devices("GPU"))
"""
    result = run_python(code, env={"CUDA_VISIBLE_DEVICES": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hidden '' tf loaded False" in result.stdout
    assert "gpus []" in result.stdout

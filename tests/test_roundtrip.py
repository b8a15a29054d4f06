"""Every dtype x rank 0-4 survives build + load bit-exactly, with and without us."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import random_rows, run_python

import tfds_bigarrays as tb
from tfds_bigarrays._format.spec import SUPPORTED_DTYPES

SHAPES = {0: (), 1: (3,), 2: (2, 3), 3: (2, 1, 3), 4: (1, 2, 2, 2)}
N = 13


@pytest.fixture(scope="module")
def every_dtype(tmp_path_factory):
    rng = np.random.default_rng(1)
    arrays = {}
    for dtype in SUPPORTED_DTYPES:
        for rank, shape in SHAPES.items():
            arrays[f"{dtype.name}_r{rank}"] = random_rows(dtype, shape, N, rng)
    # Special values spelled out, not left to chance.
    arrays["float32_r1"][0] = [np.nan, np.inf, -np.inf]
    arrays["float64_r1"][1] = [np.nan, -0.0, np.finfo(np.float64).max]
    arrays["uint64_r0"][:2] = [0, np.iinfo(np.uint64).max]
    arrays["uint32_r0"][:2] = [0, np.iinfo(np.uint32).max]
    arrays["int64_r0"][:2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    data_dir = tmp_path_factory.mktemp("dtypes")
    tb.build("every_dtype", data_dir=data_dir, splits={"train": arrays}, shard_bytes=4096)
    npz = data_dir / "expected.npz"
    np.savez(npz, **arrays)
    return {"arrays": arrays, "data_dir": data_dir, "npz": npz}


def _check(got: dict, want: dict):
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        assert got[name].tobytes() == value.tobytes(), name


@pytest.mark.parametrize("batch_size", [None, 5])
def test_round_trip_through_tfds_load(every_dtype, batch_size):
    ds = tfds.load(
        "every_dtype",
        data_dir=every_dtype["data_dir"],
        split="train",
        shuffle_files=False,
        batch_size=batch_size,
    )
    rows = list(tfds.as_numpy(ds))
    if batch_size:
        got = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    else:
        got = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    _check(got, every_dtype["arrays"])


def test_stock_tfds_reads_it_without_tfds_bigarrays(every_dtype):
    code = f"""
import sys, numpy as np, tensorflow_datasets as tfds
builder = tfds.builder_from_directory({str(every_dtype["data_dir"] / "every_dtype" / "1.0.0")!r})
ds = builder.as_dataset(split="train", shuffle_files=False)
rows = list(tfds.as_numpy(ds))
want = np.load({str(every_dtype["npz"])!r}, allow_pickle=False)
for name in want.files:
    got = np.stack([r[name] for r in rows])
    assert got.dtype == want[name].dtype, (name, got.dtype)
    assert got.tobytes() == want[name].tobytes(), name
assert "tfds_bigarrays" not in sys.modules
print("stock ok", len(want.files))
"""
    # Where tfds_bigarrays is not installed; here, its start-up hook is off.
    result = run_python(code, env={"TFDS_BIGARRAYS_AUTOLOAD": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"stock ok {len(every_dtype['arrays'])}" in result.stdout

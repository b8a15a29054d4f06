"""The declarative builder, under TFDS's own test case and the stock `tfds build`."""

import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds
from conftest import ROOT, run_python, run_tfds_build

sys.path.insert(0, str(ROOT / "examples"))
from toy_arrays import toy_arrays_dataset_builder  # noqa: E402


class ToyArraysTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's standard builder test over the kilobyte arrays in dummy_data/."""

    DATASET_CLASS = toy_arrays_dataset_builder.Builder
    SPLITS = {"train": 24, "validation": 8}
    EXAMPLE_DIR = str(ROOT / "dummy_data" / "toy_arrays")
    # Sources are memory-mapped, which the forbidden-os mocks would block.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


def test_relative_paths_come_from_the_manual_dir():
    assert "x_train.npy" in toy_arrays_dataset_builder.Builder.MANUAL_DOWNLOAD_INSTRUCTIONS


def _tfds_build(tmp_path, data_dir, *extra):
    folder = tmp_path / "toy_arrays"
    if not folder.exists():
        shutil.copytree(ROOT / "examples" / "toy_arrays", folder)
    proc = run_tfds_build(
        folder, manual_dir=ROOT / "dummy_data" / "toy_arrays", data_dir=data_dir, extra=extra
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_tfds_build_with_beam_pipeline_options_matches_local(tmp_path):
    _tfds_build(tmp_path, tmp_path / "local")
    _tfds_build(
        tmp_path,
        tmp_path / "beam",
        "--beam_pipeline_options=runner=DirectRunner,direct_running_mode=multi_processing,"
        "direct_num_workers=2",
    )
    a = sorted((tmp_path / "local/toy_arrays/1.0.0").glob("*.tfrecord-*"))
    b = sorted((tmp_path / "beam/toy_arrays/1.0.0").glob("*.tfrecord-*"))
    assert len(a) == 2 and [p.name for p in a] == [p.name for p in b]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b, strict=True))


def test_stock_tfds_build_cli_builds_and_tfds_load_reads(tmp_path):
    _tfds_build(tmp_path, tmp_path / "data")
    built = tmp_path / "data" / "toy_arrays" / "1.0.0"
    assert (built / "tfds_bigarrays.json").exists()
    # Another process, which only imports tfds_bigarrays, loads it by name.
    code = f"""
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
ds = tfds.load("toy_arrays", data_dir={str(tmp_path / "data")!r}, split="train",
               as_supervised=True, shuffle_files=True, batch_size=5)
xs, ys = zip(*tfds.as_numpy(ds))
x = np.concatenate(xs)
want = np.load({str(ROOT / "dummy_data/toy_arrays/x_train.npy")!r})
assert sorted(map(bytes, x)) == sorted(map(bytes, want)), "examples differ"
print("ok", x.shape)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok (24, 4, 4)" in result.stdout


def test_failed_build_leaves_no_dataset_folder(tmp_path):
    class Broken(toy_arrays_dataset_builder.Builder, skip_registration=True):
        name = "broken_arrays"
        SPLITS = {"train": {"x": str(tmp_path / "missing.npy")}}

    builder = Broken(data_dir=str(tmp_path / "data"))
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - the message is what we check
        assert "missing.npy" in str(e) and "no such file" in str(e)
    else:
        raise AssertionError("build of a missing file succeeded")
    assert not (tmp_path / "data" / "broken_arrays").exists()
    assert np.load(ROOT / "dummy_data/toy_arrays/y_train.npy").shape == (24,)

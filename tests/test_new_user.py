"""What a new user trips over (#17): each test is named for its item and
failed before the fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT, run_cli, run_tfds_build

import tfds_bigarrays as tb


# -- 1. a file format we do not write is refused before anything is written
def test_item1_tfds_build_file_format_array_record_is_refused(tmp_path):
    folder = tmp_path / "toy_arrays"
    shutil.copytree(ROOT / "examples" / "toy_arrays", folder)
    data = tmp_path / "data"
    proc = run_tfds_build(
        folder,
        manual_dir=ROOT / "dummy_data" / "toy_arrays",
        data_dir=data,
        extra=("--file_format", "array_record"),
    )
    assert proc.returncode != 0
    assert "file_format='array_record' (--file_format) is not supported" in proc.stderr
    assert not list(data.rglob("*.array_record*")) and not list(data.rglob("dataset_info.json"))


def test_item1_python_file_formats_other_than_tfrecord_are_refused(tmp_path):
    with pytest.raises(
        tb.TfdsBigarraysError, match=r"file_format='array_record'.*Leave file_format out"
    ):
        tb.ArrayDatasetBuilder(data_dir=tmp_path, file_format="array_record")
    builder = tb.build("ok_format", data_dir=tmp_path, splits={"train": {"x": np.arange(4.0)}})
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(tb.TfdsBigarraysError, match=r"file_format='parquet'"):
        builder.download_and_prepare(file_format=tfds.core.FileFormat.PARQUET)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    # TFRecord, by name, is what we write: accepted.
    again = type(builder)(data_dir=tmp_path, file_format="tfrecord")
    assert again.info.splits["train"].num_examples == 4


# -- 3. Beam only when asked
def test_item3_beam_is_used_only_when_asked(tmp_path):
    cls = type(
        "Huge",
        (tb.ArrayDatasetBuilder,),
        {"SPLITS": {"train": {"x": np.arange(8.0)}}, "__module__": __name__},
    )
    b = cls(data_dir=tmp_path)
    config = tfds.download.DownloadConfig()
    assert b._beam_options(config, total_bytes=1 << 50) is None  # noqa: SLF001  (40 GB and more: local)
    cls.BEAM = True
    assert b._beam_options(config, total_bytes=1) == []  # noqa: SLF001
    assert "default: in this process, whatever the size" in " ".join(
        run_cli("build", "--help").stdout.split()
    )


# -- 2. `~` is expanded in every path argument
def test_item2_tilde_is_expanded_everywhere(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    np.save(home / "x.npy", np.arange(6.0))
    # The CLI, with the `--flag=~/...` spelling that shells leave alone.
    proc = run_cli("build", "t_cli", "--data-dir=~/tt", "--split", "train:x=~/x.npy", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (home / "tt/t_cli/1.0.0/dataset_info.json").exists()
    # The Python API, a builder's data_dir and SPLITS, and the registry.
    tb.build("t_py", data_dir="~/tt", splits={"train": {"x": "~/x.npy"}})
    cls = type(
        "TCls",
        (tb.ArrayDatasetBuilder,),
        {"SPLITS": {"train": {"x": "~/x.npy"}}, "__module__": __name__},
    )
    cls(data_dir="~/tt").download_and_prepare()
    assert (home / "tt/t_cls/1.0.0/dataset_info.json").exists()
    registry = home / "registry.toml"
    registry.write_text('[team]\npaths = ["~/tt"]\n')
    proc = run_cli("ls", "--registry", "~/registry.toml", cwd=cwd)
    assert proc.returncode == 0 and "3 dataset(s)" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert not list(cwd.iterdir()), list(cwd.iterdir())  # no literal ./~ anywhere

"""http(s) sources through TFDS's download manager, against a server on 127.0.0.1."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import run_cli

import tfds_bigarrays as tb


def test_urls_register_then_verify_then_catch_a_change(http_server, tmp_path):
    root, base = http_server
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(root / "x.npy", x)
    np.savez(root / "d.npz", y=np.arange(20))
    splits = {"train": {"x": f"{base}/x.npy", "y": f"{base}/d.npz:y"}}
    sums = tmp_path / "checksums"
    # Unregistered URLs are refused, and nothing is left behind.
    with pytest.raises(tb.SourceError, match="x.npy: download or checksum verification failed"):
        tb.build("web", data_dir=tmp_path / "a", splits=splits, checksums_dir=sums)
    assert not (tmp_path / "a").exists()
    tb.build(
        "web", data_dir=tmp_path / "a", splits=splits, checksums_dir=sums, register_checksums=True
    )
    tsv = (sums / "web.tsv").read_text()
    assert (
        f"{base}/x.npy" in tsv
        and f"{base}/d.npz" in tsv
        and str((root / "x.npy").stat().st_size) in tsv
    )
    # Verified on a later build.
    tb.build("web", data_dir=tmp_path / "b", splits=splits, checksums_dir=sums)
    ds = tfds.load("web", data_dir=tmp_path / "b", split="train", batch_size=20)
    assert np.array_equal(next(iter(tfds.as_numpy(ds)))["x"], x)
    # The file changes on the server: the build fails, naming the URL.
    np.save(root / "x.npy", x + 1)
    proc = run_cli(
        "build",
        "web",
        "--data-dir",
        str(tmp_path / "c"),
        "--checksums-dir",
        str(sums),
        "--split",
        f"train:x={base}/x.npy,y={base}/d.npz:y",
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{base}/x.npy: download or checksum verification failed" in proc.stderr
    assert not (tmp_path / "c").exists()

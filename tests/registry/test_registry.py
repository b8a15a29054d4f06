"""Team registry: publish, load by namespace in another process, verify, inspect, ls, new."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli, run_python, run_tfds_build

import tfds_bigarrays as tb
from tfds_bigarrays._registry.lookup import Registry, RegistryError
from tfds_bigarrays._registry.publish import publish


@pytest.fixture
def teams(tmp_path):
    """Two namespaces in temporary directories, and one built dataset."""
    toml = tmp_path / "registry.toml"
    toml.write_text(
        f'[vision]\npaths = ["{tmp_path}/vision_a", "{tmp_path}/vision_b"]\ninfo = "Vision team"\n\n'
        f'[speech]\npaths = ["{tmp_path}/speech"]\ninfo = "Speech team"\n'
    )
    x = np.arange(600, dtype=np.float32).reshape(300, 2)
    tb.build(
        "faces",
        data_dir=tmp_path / "build",
        splits={"train": {"x": x, "y": x[:, 0] > 100}},
        supervised_keys=("x", "y"),
        shard_bytes=2048,
    )
    return {"toml": toml, "tmp": tmp_path, "x": x, "built": tmp_path / "build" / "faces" / "1.0.0"}


def test_publish_then_another_team_loads_by_namespace(teams):
    registry = Registry.from_files([teams["toml"]])
    target = publish(teams["built"], registry=registry, namespace="vision")
    assert target == teams["tmp"] / "vision_a" / "faces" / "1.0.0"
    assert (target / "shards.json").exists()
    with pytest.raises(RegistryError, match="already published.*immutable"):
        publish(teams["built"], registry=registry, namespace="vision")
    code = """
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
for name in ("vision:faces", "vision:faces:1.0.0"):
    ds = tfds.load(name, split="train", as_supervised=True, shuffle_files=True, batch_size=50)
    x = np.concatenate([a for a, _ in tfds.as_numpy(ds)])
    print(name, x.shape, float(x.sum()))
"""
    result = run_python(code, env={"TFDS_BIGARRAYS_REGISTRY": str(teams["toml"])})
    assert result.returncode == 0, result.stderr[-3000:]
    total = float(teams["x"].sum())
    assert f"vision:faces (300, 2) {total}" in result.stdout
    assert f"vision:faces:1.0.0 (300, 2) {total}" in result.stdout


def test_unknown_names_suggest_close_matches(teams, monkeypatch):
    registry = Registry.from_files([teams["toml"]])
    publish(teams["built"], registry=registry, namespace="speech")
    with pytest.raises(RegistryError, match="Unknown namespace 'vison'.*Did you mean 'vision'"):
        registry.namespace("vison")
    with pytest.raises(RegistryError, match="no dataset 'face'.*Did you mean 'faces'"):
        registry.dataset_dir("speech", "face")
    with pytest.raises(RegistryError, match=r"no version '2.0.0'; it has \['1.0.0'\]"):
        registry.dataset_dir("speech", "faces", "2.0.0")
    for bad in ("../x", "a/b", "my data", "Faces"):
        with pytest.raises(RegistryError, match="is not valid"):
            registry.dataset_dir("speech", bad)


def test_malformed_toml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[vision]\npaths = ["/x"]\ninfo = "unterminated\n')
    with pytest.raises(RegistryError, match=r"bad.toml is not valid TOML: .*line 3"):
        Registry.from_files([bad])
    bad.write_text('[vision]\ninfo = "no paths"\n')
    with pytest.raises(RegistryError, match=r"\[vision\] needs paths"):
        Registry.from_files([bad])
    bad.write_text('["../up"]\npaths = ["/x"]\n')
    with pytest.raises(RegistryError, match="namespace in .* is not valid"):
        Registry.from_files([bad])


def test_cli_publish_verify_inspect_ls_and_a_changed_shard(teams):
    reg = ["--registry", str(teams["toml"])]
    data = ["--data-dir", str(teams["tmp"] / "build")]
    proc = run_cli("publish", "faces", *data, "--to", "speech", *reg)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("ls", *reg)
    assert "speech  1 dataset(s)  Speech team" in proc.stdout
    assert "speech:faces  1.0.0" in run_cli("ls", "speech", *reg).stdout
    proc = run_cli("inspect", "speech:faces", *reg)
    assert "| train | 300 |" in proc.stdout and "| x | float32 | [2] |" in proc.stdout
    assert "shard sha256 recorded: yes" in proc.stdout
    ok = run_cli("verify", "speech:faces", *reg)
    assert ok.returncode == 0 and "300 examples re-counted" in ok.stdout, ok.stdout + ok.stderr
    # Change one byte of a published shard: verify and reading both name it.
    shard = sorted((teams["tmp"] / "speech" / "faces" / "1.0.0").glob("*tfrecord-00001*"))[0]
    data_bytes = bytearray(shard.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0x10
    shard.write_bytes(bytes(data_bytes))
    bad = run_cli("verify", "speech:faces", *reg)
    assert bad.returncode == 1 and f"bad shard(s): {shard.name}" in bad.stdout
    assert "sha256" in bad.stdout
    code = """
import tensorflow_datasets as tfds, tfds_bigarrays
try:
    list(tfds.load("speech:faces", split="train", batch_size=50))
except Exception as e:
    print("read error:", e)
"""
    result = run_python(code, env={"TFDS_BIGARRAYS_REGISTRY": str(teams["toml"])})
    assert "read error:" in result.stdout and shard.name in result.stdout


def test_new_writes_a_folder_that_passes_its_test_and_builds(tmp_path):
    proc = run_cli("new", "my_arrays", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "my_arrays"
    for name in (
        "my_arrays_dataset_builder.py",
        "my_arrays_dataset_builder_test.py",
        "checksums.tsv",
        "README.md",
        "dummy_data/x_train.npy",
    ):
        assert (folder / name).exists(), name
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert test.returncode == 0 and "passed" in test.stdout, test.stdout[-3000:]
    build = run_tfds_build(folder, manual_dir=folder / "dummy_data", data_dir=tmp_path / "data")
    assert build.returncode == 0, build.stderr[-3000:]
    assert (tmp_path / "data" / "my_arrays" / "1.0.0" / "tfds_bigarrays.json").exists()
    again = run_cli("new", "my_arrays", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr

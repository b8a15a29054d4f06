"""tfds_bigarrays.gpu: real TensorFlow on the CPU, and a fake device API for GPU-only branches."""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
from conftest import run_cli, run_module, run_python

from tfds_bigarrays import gpu
from tfds_bigarrays.gpu import _config
from tfds_bigarrays.gpu._devices import Device, use_device_api


class FakeDevices:
    """The device API of a machine with GPUs, for branches that need one."""

    def __init__(self, gpus: int = 2, card_mb: int | None = 16384):
        self.gpus = [
            Device(name=f"/physical_device:GPU:{i}", kind="GPU", index=i) for i in range(gpus)
        ]
        self.cpus = [Device(name="/physical_device:CPU:0", kind="CPU", index=0)]
        self.card_mb = card_mb
        self.initialized = False
        self.limits: dict[str, list] = {}
        self.growth: dict[str, bool] = {}

    def physical_devices(self, kind):
        return self.gpus if kind == "GPU" else self.cpus

    def logical_limits(self, device):
        return self.limits.get(device.name)

    def set_logical_limits(self, device, limits):
        if self.initialized:
            raise RuntimeError("Virtual devices cannot be modified after being initialized")
        self.limits[device.name] = list(limits)

    def memory_growth(self, device):
        return self.growth.get(device.name, False)

    def set_memory_growth(self, device, enable):
        if self.initialized:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        self.growth[device.name] = enable

    def peak_memory_bytes(self, device):
        return 300 << 20

    def card_memory_mb(self, device):
        return self.card_mb


@pytest.fixture
def fake():
    with use_device_api(FakeDevices()) as api:
        yield api


def test_limit_memory_caps_all_or_chosen_gpus(fake):
    applied = gpu.limit_memory(1024)
    assert applied.applied and applied.setting == "memory_limit=1024MB"
    assert fake.limits == {"/physical_device:GPU:0": [1024], "/physical_device:GPU:1": [1024]}
    fake.limits.clear()
    assert gpu.limit_memory(512, devices=[1]).devices == ("/physical_device:GPU:1",)
    assert fake.limits == {"/physical_device:GPU:1": [512]}


def test_too_late_is_a_clear_error_and_repeats_are_no_ops(fake):
    gpu.limit_memory(1024)
    fake.initialized = True
    assert gpu.limit_memory(1024).applied  # the same call again: a no-op
    with pytest.raises(gpu.GpuConfigError, match="already initialized.*Move the call earlier"):
        gpu.limit_memory(2048)


def test_memory_growth_too_late(fake):
    fake.initialized = True
    with pytest.raises(gpu.GpuConfigError, match="memory growth can no longer be set"):
        gpu.memory_growth()


def test_growth_and_limits_do_not_mix(fake):
    gpu.memory_growth(devices=0)
    with pytest.raises(gpu.GpuConfigError, match="Memory growth is enabled on .*GPU:0"):
        gpu.limit_memory(1024, devices=0)
    gpu.limit_memory(1024, devices=1)
    with pytest.raises(gpu.GpuConfigError, match="cannot combine with memory growth"):
        gpu.memory_growth(devices=1)


def test_split_makes_logical_gpus(fake):
    applied = gpu.split(4, 2048, device=1)
    assert applied.setting == "4 logical GPUs of 2048MB"
    assert fake.limits == {"/physical_device:GPU:1": [2048] * 4}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gpu.limit_memory(0), "megabytes=0 must be a positive int"),
        (lambda: gpu.limit_memory(1.5), "megabytes=1.5"),
        (lambda: gpu.limit_memory(1024, devices=[5]), r"devices=\[5\]: TensorFlow sees 2 GPU"),
        (lambda: gpu.split(0, 100), "n=0 must be an int >= 1"),
        (lambda: gpu.split(2), "megabytes=None must be a positive int"),
        (lambda: gpu.split(2, 100, device_type="TPU"), "device_type='TPU'"),
        (lambda: gpu.split(2, 100, device_type="CPU"), "megabytes must be None"),
    ],
)
def test_bad_arguments_are_named(fake, call, match):
    with pytest.raises(gpu.GpuConfigError, match=match):
        call()


def test_limit_from_environment(fake, monkeypatch):
    monkeypatch.setenv(gpu.ENV_MEMORY_MB, "768")
    monkeypatch.setenv(gpu.ENV_DEVICE, "0")
    gpu.limit_memory()
    assert fake.limits == {"/physical_device:GPU:0": [768]}
    monkeypatch.setenv(gpu.ENV_MEMORY_MB, "lots")
    with pytest.raises(gpu.GpuConfigError, match="TFDS_BIGARRAYS_GPU_MEMORY_MB='lots'"):
        gpu.limit_memory()


def test_plan_fits_the_card(fake):
    p = gpu.plan(4, card_mb=24576, overhead_mb=1024)
    assert p.cap_mb == 5120 and p.total_mb <= 24576
    assert gpu.plan(2).card_mb == 16384  # read from the (fake) device
    with pytest.raises(ValueError, match=r"8 models do not fit a 8192 MB card: .*1024 MB"):
        gpu.plan(8, card_mb=8192)
    fake.card_mb = None
    with pytest.raises(ValueError, match="pass card_mb="):
        gpu.plan(2)


# ---------------------------------------------------------------- real TensorFlow


def test_no_gpu_warns_once_and_applies_nothing(caplog, monkeypatch):
    monkeypatch.setattr(_config, "_warned_no_gpu", False)
    with caplog.at_level(logging.WARNING, logger="tfds_bigarrays.gpu"):
        first = gpu.limit_memory(1024)
        second = gpu.memory_growth()
    assert not first.applied and first.reason == "no GPU visible to TensorFlow"
    assert not second.applied
    assert len([r for r in caplog.records if "no GPU" in r.getMessage()]) == 1
    with pytest.raises(ValueError, match="pass card_mb="):
        gpu.plan(2)


def test_split_cpu_for_real_and_too_late_for_real():
    code = textwrap.dedent("""
        import tensorflow as tf
        from tfds_bigarrays import gpu
        gpu.split(3, device_type="CPU")
        gpu.split(3, device_type="CPU")  # repeated: no-op
        print("logical", len(tf.config.list_logical_devices("CPU")))
        tf.constant(1.0)  # initializes the devices
        gpu.split(3, device_type="CPU")  # same again, after init: still a no-op
        try:
            gpu.split(2, device_type="CPU")
        except gpu.GpuConfigError as e:
            print("too late:", e)
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "logical 3" in result.stdout
    assert "too late: TensorFlow has already initialized its devices" in result.stdout
    assert "Move the call earlier" in result.stdout


def test_import_build_and_load_leave_devices_uninitialized(tmp_path):
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf, tensorflow_datasets as tfds
        import tfds_bigarrays
        from tfds_bigarrays import gpu
        tfds_bigarrays.build("lazy", data_dir={str(tmp_path)!r},
                             splits={{"train": {{"x": np.arange(20.0)}}}})
        ds = tfds.load("lazy", data_dir={str(tmp_path)!r}, split="train",
                       shuffle_files=True, batch_size=4)
        print("spec", ds.element_spec["x"].shape)
        gpu.split(2, device_type="CPU")  # raises if anything initialized the devices
        total = sum(float(b["x"].numpy().sum()) for b in ds)
        print("logical", len(tf.config.list_logical_devices("CPU")), "sum", total)
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "spec (None,)" in result.stdout
    assert "logical 2 sum 190.0" in result.stdout


def test_wrapper_runs_a_script_as_main(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        print("name", __name__, "argv", sys.argv[1:])
        sys.exit(3)
    """)
    )
    result = run_module("tfds_bigarrays.gpu", "--memory-limit", "512", str(script), "a", "--b")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "name __main__ argv ['a', '--b']" in result.stdout
    assert "no GPU visible to TensorFlow" in result.stderr


def test_wrapper_refuses_a_bad_limit(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    result = run_module("tfds_bigarrays.gpu", "--memory-limit", "-5", str(script))
    assert result.returncode == 2 and "megabytes=-5" in result.stderr
    assert "ran" not in result.stdout


def test_gpu_run_starts_planned_processes(tmp_path, monkeypatch):
    # The runner's report folder must not outlive the run.
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import os, sys
        print("cap", os.environ["TFDS_BIGARRAYS_GPU_MEMORY_MB"],
              "index", os.environ["TFDS_BIGARRAYS_MODEL_INDEX"])
        sys.exit(int(os.environ["TFDS_BIGARRAYS_MODEL_INDEX"]))
    """)
    )
    result = run_cli(
        "gpu",
        "run",
        "--models",
        "2",
        "--card-mb",
        "8192",
        "--overhead-mb",
        "1024",
        "--",
        sys.executable,
        str(script),
    )
    assert "cap 3072 MB each + 1024 MB overhead" in result.stdout, result.stdout + result.stderr
    assert "[0] cap 3072 index 0" in result.stdout
    assert "[1] cap 3072 index 1" in result.stdout
    assert "| 1 | 1 | n/a (no GPU) |" in result.stdout
    assert result.returncode == 1
    assert list(tmpdir.iterdir()) == []
    bad = run_cli("gpu", "run", "--models", "9", "--card-mb", "8192", "--", "true")
    assert bad.returncode == 2 and "9 models do not fit a 8192 MB card" in bad.stderr

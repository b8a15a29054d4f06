"""What a new user trips over (#17): each test is named for its item and
failed before the fix."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import ROOT, run_cli, run_python, run_tfds_build
from etils import epath

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
    assert "file_format='array_record' is not supported" in proc.stderr
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
    # Reading back with the same spelling: tfds.load, tfds.builder, tfds.data_source.
    ds = tfds.load("t_py", data_dir="~/tt", split="train", batch_size=-1, shuffle_files=False)
    assert ds["x"].numpy().tolist() == list(range(6))
    assert len(tfds.data_source("t_cli", data_dir="~/tt", split="train")) == 6
    assert not list(cwd.iterdir()), list(cwd.iterdir())  # no literal ./~ anywhere


# -- 4. the fast path is hard to lose
def test_item4_a_script_without_the_import_gets_the_fast_path(small_dataset):
    import site

    import tfds_bigarrays_autoload
    from tfds_bigarrays import _env

    assert tfds_bigarrays_autoload.VARIABLE == _env.AUTOLOAD.name
    pth = [
        p
        for d in site.getsitepackages()
        for p in pathlib.Path(d).glob("tfds_bigarrays-autoload.pth")
    ]
    assert pth and pth[0].read_text().strip() == "import tfds_bigarrays_autoload"
    data_dir, name = small_dataset["data_dir"], "small"
    code = f"""
import sys
import tensorflow_datasets as tfds
ds = tfds.load({name!r}, split="train", data_dir={str(data_dir)!r}, batch_size=8)
print("ours" if "tfds_bigarrays" in sys.modules and type(ds).__name__ == "LazyDataset" else "stock")
"""
    assert run_python(code).stdout.split()[-1] == "ours"
    off = run_python(code, env={"TFDS_BIGARRAYS_AUTOLOAD": "0"})
    assert off.stdout.split()[-1] == "stock", off.stderr[-2000:]
    # Start-up imports nothing but the finder.
    quiet = run_python(
        "import sys; print(sorted(m for m in sys.modules if 'tensorflow' in m or m.startswith('tfds_bigarrays.')))"
    )
    assert quiet.stdout.split()[-1] == "[]", quiet.stdout


def test_item4_a_fallback_to_tfds_reader_logs_why_and_the_cost(small_dataset, caplog):
    data_dir, name = small_dataset["data_dir"], "small"
    with caplog.at_level("WARNING", logger="tfds_bigarrays._read.pipeline"):
        tfds.load(
            name, split="train", data_dir=data_dir, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        tfds.load(
            name, split="train", data_dir=data_dir, decoders={"x": tfds.decode.SkipDecoding()}
        )
    messages = [r.getMessage() for r in caplog.records if r.name == "tfds_bigarrays._read.pipeline"]
    assert len(messages) == 2, messages
    assert (
        "add_tfds_id=True makes tfds.load read" in messages[0] and "15-100x slower" in messages[0]
    )
    assert messages[1].startswith("tfds_bigarrays: decoders= makes")


# -- 5. one-line errors, exit 2
def test_item5_an_unknown_beam_runner_is_one_line_and_writes_nothing(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(10.0))
    data = tmp_path / "data"
    proc = run_cli(
        "build", "runner_typo", "--data-dir", str(data), "--split", f"train:x={tmp_path / 'x.npy'}",
        "--beam-options", "runner=Nope",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "tfds-bigarrays build: error: --beam-options='runner=Nope': runner 'Nope'"
    )
    assert "Traceback" not in proc.stderr and not data.exists()
    with pytest.raises(
        tb.TfdsBigarraysError, match=r"^beam_options='runner=Nope': runner 'Nope' is not a runner"
    ):
        tb.build(
            "runner_typo",
            data_dir=data,
            splits={"train": {"x": np.arange(3.0)}},
            beam_options="runner=Nope",
        )
    assert not data.exists()


def test_item5_gpu_run_of_a_missing_command_is_one_line_and_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    proc = run_cli(
        "gpu", "run", "--card-mb", "8000", "--", "touch", str(marker), "---", "nosuchcmd"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "tfds-bigarrays gpu: error: command 'nosuchcmd' is not an executable program "
        "(not found on PATH); give one after --, e.g. -- python train.py."
    )
    assert not marker.exists()  # the first command was not started either


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_item5_an_interrupted_build_and_publish_are_one_line_and_leave_the_old_state(tmp_path, sig):
    data, shared = tmp_path / "data", tmp_path / "shared"
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[team]\npaths = ["{shared}"]\n')
    np.save(tmp_path / "x.npy", np.arange(4000.0))
    split = f"train:x={tmp_path / 'x.npy'}"
    assert run_cli("build", "intr", "--data-dir", str(data), "--split", split).returncode == 0
    assert (
        run_cli(
            "publish", "intr", "--data-dir", str(data), "--to", "team", "--registry", str(registry)
        ).returncode
        == 0
    )
    assert (
        run_cli(
            "build", "intr", "--data-dir", str(data), "--split", split, "--version", "2.0.0"
        ).returncode
        == 0
    )

    def state():  # lock files stay by design (flock): not state
        return {
            p: p.read_bytes()
            for p in tmp_path.rglob("*")
            if p.is_file() and not p.name.endswith((".npy", ".lock"))
        }

    before = state()
    runs = {
        "build": ("tfds_bigarrays._build.writer", "_read_block", ["build", "intr", "--data-dir", str(data),
                  "--split", split, "--shard-size", "4KiB", "--overwrite"]),
        "publish": ("tfds_bigarrays._registry.publish", "_copy_hashed", ["publish", "intr", "--data-dir", str(data),
                    "--to", "team", "--registry", str(registry), "--version", "2.0.0"]),
    }  # fmt: skip
    for what, (module, function, argv) in runs.items():
        code = f"""
import importlib, os, signal, sys
m = importlib.import_module({module!r})
def interrupted(*a, **k):
    os.kill(os.getpid(), signal.{sig})  # the user's Ctrl-C (or a scheduler's SIGTERM) half-way
    raise AssertionError("the signal did not interrupt")
setattr(m, {function!r}, interrupted)
from tfds_bigarrays._cli.main import main
sys.exit(main({argv!r}))
"""
        proc = run_python(code)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (what, proc.stderr[-3000:])
        assert (
            lines[-1]
            == f"tfds-bigarrays {what}: error: interrupted ({sig}); nothing was left half-written."
        ), (what, lines[-3:])
        assert "Traceback" not in proc.stderr
        after = state()
        assert after == before, (what, sorted(set(after) ^ set(before)))


# -- 6. CLI messages name flags, Python messages name arguments
def test_item6_messages_name_flags_on_the_cli_and_arguments_in_python(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(4000.0))
    split = f"train:x={tmp_path / 'x.npy'}"
    with pytest.raises(tb.TfdsBigarraysError) as python_error:
        tb.build(
            "flags",
            data_dir=tmp_path / "d",
            splits={"train": {"x": tmp_path / "x.npy"}},
            shard_bytes=8,
        )
    assert "shard_bytes=8" in str(python_error.value) and "--" not in str(python_error.value)
    proc = run_cli(
        "build", "flags", "--data-dir", str(tmp_path / "d"), "--split", split, "--shard-size", "8"
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--shard-size=8" in last and "shard_bytes" not in last, last
    tb.build("flags", data_dir=tmp_path / "d", splits={"train": {"x": tmp_path / "x.npy"}})
    with pytest.raises(tb.DatasetExistsError, match=r"overwrite=True.*\(version=\)"):
        tb.build("flags", data_dir=tmp_path / "d", splits={"train": {"x": tmp_path / "x.npy"}})
    proc = run_cli("build", "flags", "--data-dir", str(tmp_path / "d"), "--split", split)
    last = proc.stderr.strip().splitlines()[-1]
    assert "Pass --overwrite to rebuild it, or give a new version (--version=)." in last, last
    from tfds_bigarrays import gpu

    with pytest.raises(tb.TfdsBigarraysError, match=r"^card_mb=-1 must be"):
        gpu.plan(2, card_mb=-1)
    proc = run_cli("gpu", "run", "--card-mb", "-1", "--", "true")
    assert (
        proc.returncode == 2 and "--card-mb=-1 must be" in proc.stderr.strip().splitlines()[-1]
    ), proc.stderr[-500:]


# -- 7. the CLI itself
def _walk(parser, path=()):
    import argparse

    yield path, parser
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, child in action.choices.items():
                yield from _walk(child, (*path, name))


def test_item7_every_argument_has_help_and_every_command_examples():
    import argparse

    from tfds_bigarrays._cli.main import make_parser

    seen = 0
    for path, parser in _walk(make_parser()):
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):  # noqa: SLF001
                continue
            assert action.help and action.help != argparse.SUPPRESS, (path, action.dest)
            seen += 1
        if path:
            assert "examples:\n  tfds-bigarrays " in (parser.epilog or ""), path
    assert seen > 40
    build_help = run_cli("build", "--help").stdout
    for kind in ("x.npy", "shards/", "data.npz:x", "data.h5:/group/x", "https://"):
        assert kind in build_help, kind
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"tfds-bigarrays {tb.__version__}"


def test_item7_one_default_data_dir_and_tfds_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env_dir"))
    np.save(tmp_path / "x.npy", np.arange(6.0))
    proc = run_cli("build", "defaults", "--split", f"train:x={tmp_path / 'x.npy'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "env_dir/defaults/1.0.0/dataset_info.json").exists()
    assert f"tfds.load('defaults', split='train', data_dir='{tmp_path / 'env_dir'}'" in proc.stdout
    for command in ("inspect", "verify"):  # the same default
        proc = run_cli(command, "defaults")
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    proc = run_cli(
        "build",
        "spelled",
        "--data_dir",
        str(tmp_path / "tfds_way"),
        "--split",
        f"train:x={tmp_path / 'x.npy'}",
    )
    assert proc.returncode == 0 and (tmp_path / "tfds_way/spelled/1.0.0").is_dir(), proc.stderr[
        -2000:
    ]
    listed = run_cli("ls", "--data_dir", str(tmp_path / "env_dir"))
    assert listed.returncode == 0 and listed.stdout.split() == ["defaults", "1.0.0"], listed.stdout


def test_item7_ls_without_a_registry_and_registry_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_BIGARRAYS_REGISTRY", raising=False)
    proc = run_cli("ls")
    assert proc.returncode == 0 and "No registry file: name one with --registry FILE" in proc.stdout
    registry = tmp_path / "reg.toml"
    registry.write_text(f'[team]\npaths = ["{tmp_path}"]\n')
    proc = run_cli("ls", "teem", "--registry", str(registry))
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        proc.returncode == 2 and f"Unknown namespace 'teem' in registry file {registry}" in last
    ), last
    assert "did you mean 'team'" in last.lower() and "TFDS_BIGARRAYS_REGISTRY" not in last


# -- 8. quieter, clearer output
def test_item8_a_build_prints_no_tfds_download_lines_and_a_load_line_that_works(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(40.0).reshape(20, 2))
    np.save(tmp_path / "y.npy", np.arange(20))
    proc = run_cli(
        "build", "quiet", "--data-dir", "data", "--split", "train:x=x.npy,y=y.npy",
        "--supervised", "x,y", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for noise in ("Downloading and preparing", "downloaded and prepared", "Unknown size"):
        assert noise not in proc.stdout + proc.stderr
    line = proc.stdout.strip().splitlines()[-1].strip()
    assert line.startswith("tfds.load('quiet'") and str(tmp_path / "data") in line
    # Pasted as printed, from another directory, it loads the dataset.
    proc = run_python(
        f"import tensorflow_datasets as tfds\nds = {line}\n"
        "x, y = next(iter(ds))\nprint(sorted(y.numpy().tolist()) == list(range(20)), x.shape)"
    )
    assert proc.stdout.split() == ["True", "(20,", "2)"], proc.stderr[-2000:]


def test_item8_a_download_shows_tfds_download_bar_only(tmp_path, http_server):
    root, base = http_server
    np.save(root / "x.npy", np.arange(6.0))
    proc = run_cli(
        "build", "fetched", "--data-dir", str(tmp_path / "d"), "--split",
        f"train:x={base}/x.npy", "--register-checksums",
        "--checksums-dir", str(tmp_path / "ck"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Downloading and preparing" not in proc.stdout
    assert "Dl Completed" in proc.stderr  # TFDS's own download bar shows the download


def test_item8_tensorflow_start_up_chatter_is_kept_out_of_the_cli():
    from tfds_bigarrays._cli.quiet import filtered

    # Without the CLI's filter, TensorFlow does print it here (the test could fail).
    plain = run_python("import tensorflow as tf\ntf.config.list_physical_devices()")
    assert "absl::InitializeLog" in plain.stderr and "port.cc" in plain.stderr
    assert filtered(plain.stderr.encode()).strip() == b""
    kept = b"E0000 00:00:1.5 12 op.cc:7] a real error\nTraceback (most recent call last):\n"
    assert filtered(kept) == kept
    # A CLI command that imports TensorFlow: the data service's dispatcher.
    exe = pathlib.Path(sys.executable).parent / "tfds-bigarrays"
    with subprocess.Popen(
        [str(exe), "data-service", "dispatcher", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    ) as server:
        try:
            started = server.stdout.readline()
        finally:
            server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert "dispatcher at" in started, err
    for chatter in ("absl::InitializeLog", "port.cc", "cudart_stub", "cuInit", "cpu_feature_guard"):
        assert chatter not in err, err


def test_item8_beam_builds_and_publishes_show_progress_and_no_worker_logs(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((400, 8), np.float32))
    data = tmp_path / "data"
    proc = run_cli(
        "build", "beamed", "--data-dir", str(data), "--split", f"train:x={tmp_path / 'x.npy'}",
        "--shard-size", "4KiB", "--beam-options", "runner=DirectRunner,direct_num_workers=2,"
        "direct_running_mode=multi_processing",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The bar moves while the pipeline runs, and ends full.
    counts = re.findall(r"Writing (\d+) shards \(Beam\):\s+(\d+)%", proc.stderr)
    assert counts and counts[-1][1] == "100", proc.stderr
    for noise in ("INFO:", "WARNING:", "apitools", "sdk_worker"):
        assert noise not in proc.stderr + proc.stdout, noise
    log = proc.stdout.split("Beam's log: ", 1)[1].split()[0]
    assert "sdk_worker" in pathlib.Path(log).read_text()  # kept, not lost
    registry = tmp_path / "reg.toml"
    registry.write_text(f'[team]\npaths = ["{tmp_path / "shared"}"]\n')
    proc = run_cli(
        "publish", "beamed", "--data-dir", str(data), "--to", "team", "--registry", str(registry)
    )
    assert proc.returncode == 0, proc.stderr
    assert "Publishing team:beamed:1.0.0" in proc.stderr, proc.stderr


def test_item8_the_new_template_notes_are_not_the_description(tmp_path):
    assert run_cli("new", "noted_arrays", "--dir", str(tmp_path)).returncode == 0
    folder = tmp_path / "noted_arrays"
    proc = run_tfds_build(folder, manual_dir=folder / "dummy_data", data_dir=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = tfds.builder("noted_arrays", data_dir=tmp_path / "data").info
    assert info.description == (folder / "README.md").read_text().strip()
    for note in ("TODO", "pytest", "tfds build", "Edit", "manual_dir"):
        assert note not in info.description


# -- 9. a missing file in the manual directory names that directory
def test_item9_a_missing_manual_file_names_the_manual_directory(tmp_path):
    assert run_cli("new", "hinted_arrays", "--dir", str(tmp_path)).returncode == 0
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "x_train.npy", np.zeros(3))
    proc = run_tfds_build(tmp_path / "hinted_arrays", manual_dir=arrays, data_dir=tmp_path / "data")
    assert proc.returncode != 0
    assert (
        f"no such file in the manual directory '{arrays}' ({arrays}), which relative paths "
        "are taken from; it holds x_train.npy."
    ) in proc.stderr, proc.stderr[-2000:]
    assert str(tmp_path / "hinted_arrays") + "'" not in proc.stderr.splitlines()[-1]


# -- 13. a split name that looks like a typo is warned about, not refused
@pytest.mark.parametrize(
    ("name", "meant"), [("trian", "train"), ("validaton", "validation"), ("tset", "test")]
)
def test_item13_a_typo_of_a_usual_split_name_warns_and_builds(tmp_path, caplog, name, meant):
    with caplog.at_level("WARNING", logger="tfds_bigarrays"):
        b = tb.build("typo", data_dir=tmp_path, splits={name: {"x": np.arange(3.0)}})
    assert list(b.info.splits) == [name]
    warned = [r.getMessage() for r in caplog.records if "looks like a typo" in r.getMessage()]
    assert warned == [
        f"split name {name!r} looks like a typo of {meant!r}; it is built as {name!r}, and "
        f"tfds.load(split={meant!r}) will not find it. Rename it if {meant!r} was meant."
    ]


def test_item13_usual_and_deliberate_split_names_do_not_warn(tmp_path, caplog):
    names = (
        "train",
        "train_small",
        "test2",
        "eval",
        "val",
        "trainA",
        "testB",
        "training",
        "latest",
        "trn",
    )
    splits = {n: {"x": np.arange(2.0)} for n in names}
    with caplog.at_level("WARNING", logger="tfds_bigarrays"):
        tb.build("typo_free", data_dir=tmp_path, splits=splits)
    assert not [r for r in caplog.records if "looks like a typo" in r.getMessage()]
    np.save(tmp_path / "x.npy", np.arange(3.0))
    proc = run_cli(
        "build", "typo_cli", "--data-dir", str(tmp_path), "--split", "tarin:x=x.npy", cwd=tmp_path
    )
    assert proc.returncode == 0 and "'tarin' looks like a typo of 'train'" in proc.stderr


# -- 10. row ranges and percents: one array file, several splits
def test_item10_one_file_two_splits_on_the_cli_and_in_python(tmp_path):
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(1000))
    proc = run_cli(
        "build", "ranged", "--data-dir", "d", "--split", "train:x=x.npy[:90%],y=y.npy[:90%]",
        "--split", "validation:x=x.npy[90%:],y=y.npy[90%:]", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    builder = tfds.builder("ranged", data_dir=tmp_path / "d")
    got = {
        s: tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1, shuffle_files=False))
        for s in ("train", "validation")
    }
    np.testing.assert_array_equal(got["train"]["x"], x[:900])
    np.testing.assert_array_equal(got["validation"]["y"], np.arange(900, 1000))
    # Python build() and SPLITS take the same strings; row numbers and negative bounds too.
    b = tb.build(
        "ranged_py",
        data_dir=tmp_path / "d",
        splits={
            "train": {"x": f"{tmp_path / 'x.npy'}[:-100]", "y": f"{tmp_path / 'y.npy'}[:-100]"},
            "test": {"x": f"{tmp_path / 'x.npy'}[-100:]", "y": f"{tmp_path / 'y.npy'}[900:1000]"},
        },
    )
    test = tfds.as_numpy(b.as_dataset(split="test", batch_size=-1, shuffle_files=False))
    np.testing.assert_array_equal(test["x"], x[900:])
    assert b.info.splits["train"].num_examples == 900
    provenance = json.loads((b.data_path / "tfds_bigarrays.json").read_text())["provenance"]
    assert provenance["sources"]["test"]["x"] == f"{tmp_path / 'x.npy'}[-100:]"


@pytest.mark.parametrize("n", [7, 10, 33])
def test_item10_percents_round_as_tfds_split_slicing(tmp_path, n):
    np.save(tmp_path / "x.npy", np.arange(n))
    whole = tb.build("whole", data_dir=tmp_path, splits={"train": {"x": tmp_path / "x.npy"}})
    for pct in (10, 33, 50, 67, 90):
        b = tb.build(
            f"pct{pct}",
            data_dir=tmp_path,
            splits={"train": {"x": f"{tmp_path / 'x.npy'}[:{pct}%]"}},
        )
        tfds_count = whole.info.splits[f"train[:{pct}%]"].num_examples
        assert b.info.splits["train"].num_examples == tfds_count, (n, pct)


def test_item10_overlaps_and_bad_ranges_are_refused_before_writing(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(100.0))
    x = str(tmp_path / "x.npy")
    bad = {
        "overlap": (
            {"train": {"x": f"{x}[:95%]"}, "validation": {"x": f"{x}[90%:]"}},
            "splits 'train' and 'validation' overlap: train's x takes rows 0:95 and "
            f"validation's x rows 90:100 of {x}, so rows 90:95 would be in both.",
        ),
        "whole_and_part": (
            {"train": {"x": x}, "test": {"x": f"{x}[:10]"}},
            "rows 0:10 would be in both",
        ),
        "past_the_end": (
            {"train": {"x": f"{x}[:101]"}},
            "row 101 is out of range: the array has 100 rows",
        ),
        "reversed": ({"train": {"x": f"{x}[60:40]"}}, "starts at row 60 after it ends at row 40"),
        "percent": ({"train": {"x": f"{x}[:150%]"}}, "150% is outside -100%..100%"),
        "empty": ({"train": {"x": f"{x}[40:40]"}}, "split 'train' has no examples"),
    }
    for what, (splits, message) in bad.items():
        with pytest.raises(tb.TfdsBigarraysError, match=re.escape(message)):
            tb.build(f"bad_{what}", data_dir=tmp_path / "d", splits=splits)
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*.tfrecord*"))
    # The same array whole in two splits (no range) stays allowed, as before.
    tb.build("twice", data_dir=tmp_path / "d", splits={"train": {"x": x}, "all_rows": {"x": x}})


# -- 12. nested supervised keys, for multi-input Keras models
def test_item12_nested_supervised_keys_feed_a_two_input_keras_model(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    n = 64
    a, b = rng.normal(size=(n, 2)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
    y = (a[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "y.npy", y)
    proc = run_cli(
        "build", "two_inputs", "--data-dir", "d", "--split", "train:a=a.npy,b=b.npy,y=y.npy",
        "--supervised", "a+b,y", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    builder = tfds.builder("two_inputs", data_dir=tmp_path / "d")
    assert builder.info.supervised_keys == (("a", "b"), "y")
    ds = tfds.load(
        "two_inputs", split="train", data_dir=tmp_path / "d", as_supervised=True, batch_size=n,
        shuffle_files=False,
    )  # fmt: skip
    (got_a, got_b), got_y = next(iter(tfds.as_numpy(ds)))
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    np.testing.assert_array_equal(got_y, y)
    in_a, in_b = keras.Input((2,)), keras.Input((3,))
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([in_a, in_b]))
    model = keras.Model([in_a, in_b], out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    # A dict of inputs, in Python; and stock TFDS (no plugin) yields the same nest.
    tb.build(
        "dict_inputs",
        data_dir=tmp_path / "d",
        splits={"train": {"a": a, "b": b, "y": y}},
        supervised_keys=({"first": "a", "second": "b"}, "y"),
    )
    proc = run_python(
        "import tensorflow_datasets as tfds\n"
        f"ds = tfds.load('dict_inputs', split='train', data_dir={str(tmp_path / 'd')!r}, "
        "as_supervised=True, batch_size=64, shuffle_files=False)\n"
        "x, y = next(iter(tfds.as_numpy(ds)))\n"
        "print(sorted(x), x['second'].shape, int(y.sum()))",
        env={"TFDS_BIGARRAYS_AUTOLOAD": "0"},
    )
    assert proc.stdout.strip() == f"['first', 'second'] (64, 3) {int(y.sum())}", proc.stderr[-2000:]


def test_item12_bad_supervised_keys_are_named(tmp_path):
    splits = {"train": {"x": np.zeros(2), "y": np.zeros(2)}}
    for keys, why in [
        ((("x", "nope"), "y"), "'nope' is not one: it has ['x', 'y']"),
        (("x",), "must be (input, target) or (input, target, weights)"),
        ("xy", "is a string; give two feature names"),
        ((("x", 3), "y"), "must be (input, target)"),
    ]:
        with pytest.raises(tb.TfdsBigarraysError, match=re.escape(why)):
            tb.build("bad_keys", data_dir=tmp_path, splits=splits, supervised_keys=keys)
    np.save(tmp_path / "x.npy", np.zeros(2))
    proc = run_cli(
        "build", "bad_keys", "--data-dir", str(tmp_path), "--split", "train:x=x.npy",
        "--supervised", "x+,x", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "join several inputs with +" in proc.stderr


# -- 11. label metadata: ClassLabel features
def test_item11_class_names_make_a_class_label_that_stock_tfds_reads(tmp_path):
    y = np.array([0, 1, 2, 1, 0, 2, 2, 1] * 4, dtype=np.int32)
    x = np.arange(len(y) * 2, dtype=np.float32).reshape(-1, 2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = run_cli(
        "build", "pets", "--data-dir", "d", "--split", "train:image=x.npy,label=y.npy",
        "--supervised", "image,label", "--class-names", "cat,dog,bird", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    builder = tfds.builder("pets", data_dir=tmp_path / "d")
    label = builder.info.features["label"]
    assert isinstance(label, tfds.features.ClassLabel)
    assert (label.num_classes, label.names) == (3, ["cat", "dog", "bird"])
    ours = builder.as_dataset(split="train", batch_size=-1, shuffle_files=False)
    assert ours["label"].dtype == np.int64  # as TFDS gives a ClassLabel
    np.testing.assert_array_equal(ours["label"], y)
    assert builder.as_data_source("train")[3]["label"] == np.int64(1)
    proc = run_cli("inspect", "pets", "--data-dir", str(tmp_path / "d"))
    assert "| label | ClassLabel(3), int64 | [] |" in proc.stdout, proc.stdout
    frame = tfds.as_dataframe(builder.as_dataset(split="train").take(3), builder.info)
    assert list(frame["label"]) == [0, 1, 2]
    # Stock TFDS, without the plugin, reads the same labels and names.
    proc = run_python(
        "import sys\nimport tensorflow_datasets as tfds\n"
        f"b = tfds.builder('pets', data_dir={str(tmp_path / 'd')!r})\n"
        "ds = b.as_dataset(split='train', batch_size=-1, shuffle_files=False)\n"
        "f = b.info.features['label']\n"
        "print('tfds_bigarrays' in sys.modules, ds['label'].dtype.name, "
        "ds['label'].numpy().tolist(), f.int2str(2))",
        env={"TFDS_BIGARRAYS_AUTOLOAD": "0"},
    )
    assert proc.stdout.split(" ", 2)[:2] == ["False", "int64"], proc.stderr[-2000:]
    assert proc.stdout.strip().endswith(f"{y.tolist()} bird")


def test_item11_num_classes_in_python_and_class_labels_in_a_builder(tmp_path):
    y = np.array([3, 0, 9], dtype=np.uint8)
    b = tb.build(
        "digits", data_dir=tmp_path, splits={"train": {"x": np.zeros((3, 2)), "y": y}},
        class_labels={"y": 10},
    )  # fmt: skip
    assert b.info.features["y"].num_classes == 10 and b.info.features["y"].names[9] == "9"
    cls = type(
        "Flags",
        (tb.ArrayDatasetBuilder,),
        {
            "SPLITS": {"train": {"x": np.zeros((2, 1)), "flag": np.array([True, False])}},
            "CLASS_LABELS": {"flag": ["no", "yes"]},
            "__module__": __name__,
        },
    )
    builder = cls(data_dir=tmp_path)
    builder.download_and_prepare()
    got = builder.as_dataset(split="train", batch_size=-1, shuffle_files=False)
    assert got["flag"].numpy().tolist() == [1, 0]
    assert builder.info.features["flag"].names == ["no", "yes"]


def test_item11_bad_class_labels_are_refused_and_leave_nothing(tmp_path):
    splits = {"train": {"x": np.zeros((3, 2), np.float32), "y": np.array([0, 1, 5])}}
    for labels, why in [
        ({"y": ["a", "b"]}, "row 2 holds label 5, outside 0..1 (2 classes were given)"),
        ({"x": 3}, "feature 'x', which is float32[2]"),
        ({"z": 3}, "feature 'z', which split 'train' does not have"),
        ({"y": ["a", "a"]}, "'a' is given twice"),
        ({"y": 0}, "a number of classes is 1..2**32"),
        ({"y": "abc"}, "must be a list of class names or a number of classes"),
    ]:
        with pytest.raises(tb.TfdsBigarraysError, match=re.escape(why)):
            tb.build("bad_labels", data_dir=tmp_path / "d", splits=splits, class_labels=labels)
        assert not (tmp_path / "d" / "bad_labels").exists()
    np.save(tmp_path / "x.npy", np.zeros(2))
    np.save(tmp_path / "y.npy", np.zeros(2, np.int64))
    for flags, why in [
        (["--class-names", "a,b"], "--class-names 'a,b': which feature?"),
        (["--num-classes", "y=ten"], "--num-classes 'y=ten': N must be an integer in 1..2**32"),
        (["--num-classes", "y=0"], "--num-classes 'y=0': N must be an integer in 1..2**32"),
        (["--class-names", "y=a,,b"], "--class-names 'y=a,,b': give each class one non-empty"),
        (["--class-names", "z=a,b"], "--class-names 'z=a,b': no feature 'z' in --split"),
    ]:
        proc = run_cli(
            "build", "bad_cli_labels", "--data-dir", str(tmp_path / "d"),
            "--split", "train:x=x.npy,y=y.npy", *flags, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr


# -- review mends
def test_review_ranged_labels_cannot_overlap_and_name_the_file_row(tmp_path):
    np.save(tmp_path / "y.npy", np.r_[np.zeros(95, np.int64), 7, np.zeros(4, np.int64)])
    y = str(tmp_path / "y.npy")
    with pytest.raises(tb.TfdsBigarraysError, match=re.escape("rows 50:90 would be in both")):
        tb.build(
            "ranged_labels", data_dir=tmp_path / "d", class_labels={"y": 5},
            splits={
                "train": {"x": np.arange(90), "y": f"{y}[:90%]"},
                "validation": {"x": np.arange(50), "y": f"{y}[50%:]"},
            },
        )  # fmt: skip
    with pytest.raises(tb.TfdsBigarraysError, match=re.escape(f"{y}[90%:]: row 95 holds label 7")):
        tb.build(
            "ranged_labels", data_dir=tmp_path / "d", class_labels={"y": 5},
            splits={"train": {"x": np.arange(10), "y": f"{y}[90%:]"}},
        )  # fmt: skip


def test_review_beam_tasks_carry_no_in_memory_labels(tmp_path):
    import pickle

    from tfds_bigarrays._build import builder as builder_module
    from tfds_bigarrays._build.plan import RowRange
    from tfds_bigarrays._build.sources import ClassLabelSource, InMemorySource
    from tfds_bigarrays._build.writer import ShardTask

    labels = np.arange(200_000) % 3
    source = ClassLabelSource(InMemorySource(labels, name="y"), 3, feature="y")
    tasks = [
        ShardTask(
            sources={"y": source},
            specs={"y": source.spec},
            rows=RowRange(index=i, start=0, stop=10),
            path="p",
        )
        for i in range(3)
    ]
    spooled = builder_module._Spooler(epath.Path(tmp_path))(
        tasks, when=builder_module._carries_data
    )  # noqa: SLF001
    assert all(len(pickle.dumps(t)) < 8_000 for t in spooled)
    again = pickle.loads(pickle.dumps(spooled[0].sources["y"]))
    np.testing.assert_array_equal(again.read(0, 200_000), labels.astype(np.uint32))


def test_review_cli_messages_never_rewrite_paths_or_feature_names(tmp_path):
    (tmp_path / "version=2").mkdir()
    proc = run_cli(
        "build", "paths", "--data-dir", str(tmp_path), "--split", "train:device=nope.npy"
    )
    assert "device='nope.npy': no such file" in proc.stderr and "--device" not in proc.stderr
    missing = tmp_path / "version=2" / "x.npy"
    proc = run_cli("build", "paths", "--data-dir", str(tmp_path), "--split", f"train:x={missing}")
    assert f"x='{missing}': no such file" in proc.stderr, proc.stderr


def test_review_the_quiet_import_keeps_tensorflow_a_normal_package():
    proc = run_python(
        "import importlib.resources\n"
        "from tfds_bigarrays._cli.quiet import quiet_tensorflow\n"
        "quiet_tensorflow()\n"
        "import tensorflow as tf\n"
        "print(len(list(importlib.resources.files('tensorflow').iterdir())) > 5, "
        "tf.__spec__.loader.is_package('tensorflow'))"
    )
    assert proc.stdout.split() == ["True", "True"], proc.stderr[-2000:]


def test_review_a_fatal_start_up_line_is_not_swallowed(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'F0000 00:00:1.0 1 check.cc:1] Check failed: boom\\n')\nos.abort()\n"
    )
    proc = run_python(
        "from tfds_bigarrays._cli.quiet import quiet_tensorflow\n"
        "quiet_tensorflow()\nimport tensorflow\n",
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode != 0 and "Check failed: boom" in proc.stderr, proc.stderr


def test_review_gpu_run_refuses_a_directory_as_the_program(tmp_path):
    proc = run_cli("gpu", "run", "--models", "1", "--card-mb", "8000", "--", str(tmp_path))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and f"command {str(tmp_path)!r} is not an executable" in last, last
    proc = run_cli("gpu", "run", "--card-mb", "8000", "--", str(tmp_path / "missing.py"))
    assert proc.returncode == 2 and "missing.py' does not exist" in proc.stderr, proc.stderr


def test_review_dask_option_errors_name_the_option(tmp_path):
    splits = {"train": {"x": np.zeros(3)}}
    with pytest.raises(tb.TfdsBigarraysError, match=r"dask='HEAD:8786' is not a scheduler address"):
        tb.build("d1", data_dir=tmp_path, splits=splits, dask="HEAD:8786")
    with pytest.raises(tb.TfdsBigarraysError, match=r"dask='tcp://h:1' and beam_options="):
        tb.build("d1", data_dir=tmp_path, splits=splits, dask="tcp://h:1", beam_options="runner=X")
    proc = run_cli(
        "build", "d1", "--data-dir", str(tmp_path), "--split", "train:x=x.npy", "--dask", "h:1",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "--dask='h:1' is not a scheduler address" in proc.stderr
    assert not list(tmp_path.iterdir())

"""Bad input at every entry point: a clear error and nothing left behind.

One table per entry point: the Python API (`tfds_bigarrays.build`), the
declarative builder's class attributes, the `tfds-bigarrays` command line, the
registry TOML, and the GPU module. A refused case must raise a user-facing
error (ValueError, TypeError, FileNotFoundError or one of the library's own)
whose message names the argument, shows the bad value and says how to fix it,
and must leave the data directory (and the temporary directory) empty.

Valid but unusual arrays (Fortran order, strided views, big-endian, rows of
zero width) must build and read back bit-exactly. Big-endian input comes back
in the machine's byte order with equal values: a TFDS user gets a `tf.float32`
tensor, and TensorFlow tensors have no byte order; what must not change is
any value. That is the contract these tests pin.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfds_bigarrays as tb
from tfds_bigarrays import gpu
from tfds_bigarrays._cli.main import main
from tfds_bigarrays._registry.lookup import Registry, RegistryError

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, gpu.GpuConfigError)


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: how to make it, what must be raised, what the message says."""

    id: str
    make: Callable[[Any], Any]  # files -> kwargs / argv / attributes / TOML text
    error: type[BaseException]
    words: tuple[str, ...]  # regexes the message must contain (argument, value, fix)


def _params(cases: list[Case]):
    return [pytest.param(c, id=c.id) for c in cases]


def _check_message(e: BaseException, case: Case) -> None:
    assert isinstance(e, case.error), f"{type(e).__name__}: {e}"
    assert isinstance(e, USER_ERRORS), f"not a user-facing error: {type(e).__name__}"
    _check_words(str(e), case.words)


def _check_words(message: str, words: tuple[str, ...]) -> None:
    for word in words:
        assert re.search(word, message), f"{word!r} not in: {message}"


def _assert_empty(directory) -> None:
    left = [os.path.join(r, n) for r, ds, fs in os.walk(directory) for n in ds + fs]
    assert not left, f"left behind: {left}"


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Input files of every kind, and a private temp dir that must stay empty."""
    src = tmp_path / "src"
    src.mkdir()
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.save(src / "x.npy", x)
    np.save(src / "y5.npy", np.arange(5))
    np.save(src / "empty.npy", np.zeros((0, 4), np.float32))
    np.save(src / "objects.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    np.save(src / "x_be.npy", x.astype(">f4"))
    np.save(src / "x_fortran.npy", np.asfortranarray(np.arange(24, dtype=np.int64).reshape(6, 4)))
    np.savez(src / "arrays.npz", x=x)
    (src / "dir.npy").mkdir()  # a directory where a file is expected
    (src / "junk.npy").write_bytes(b"this is not a numpy file")
    (src / "junk.npz").write_bytes(b"PK not really a zip")
    (src / "x.csv").write_text("1,2,3\n")
    whole = (src / "x.npy").read_bytes()
    (src / "truncated.npy").write_bytes(whole[: len(whole) - 10])
    with open(src / "huge.npy", "wb") as f:
        # Its element count overflows int64: the size check must not wrap around.
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (2**32, 2**32, 2**32)}
        )
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return types.SimpleNamespace(
        src=src, x=x, data=tmp_path / "data", tmp=tmp, registry=tmp_path / "registry.toml"
    )


# --- Python API: tfds_bigarrays.build ------------------------------------------------


def _x(f):
    return {"train": {"x": f.x}}


API_CASES = [
    Case("name-int", lambda f: dict(name=5, splits=_x(f)), tb.PlanError, ("name=5", "lower-case")),
    Case(
        "name-traversal",
        lambda f: dict(name="../x", splits=_x(f)),
        tb.PlanError,
        (r"name='\.\./x'", r"no '/', '\.\.'", "For example 'x'"),
    ),
    Case("name-slash", lambda f: dict(name="a/b", splits=_x(f)), tb.PlanError, ("'a/b'", "'a_b'")),
    Case(
        "name-absolute",
        lambda f: dict(name="/tmp/x", splits=_x(f)),
        tb.PlanError,
        ("'/tmp/x'", "'tmp_x'"),
    ),
    Case(
        "name-unicode",
        lambda f: dict(name="données", splits=_x(f)),
        tb.PlanError,
        ("'données'", "lower-case letters"),
    ),
    Case("name-nul", lambda f: dict(name="a\0b", splits=_x(f)), tb.PlanError, (r"a\\x00b",)),
    Case(
        "name-trailing-newline",
        lambda f: dict(name="abc\n", splits=_x(f)),
        tb.PlanError,
        (r"'abc\\n'", "For example 'abc'"),
    ),
    Case(
        "splits-list",
        lambda f: dict(splits=[("train", {"x": f.x})]),
        tb.PlanError,
        ("splits=", "non-empty mapping", r"\{'train'"),
    ),
    Case("splits-empty", lambda f: dict(splits={}), tb.PlanError, (r"splits=\{\}", "non-empty")),
    Case(
        "split-without-features",
        lambda f: dict(splits={"train": {}}),
        tb.PlanError,
        ("split 'train'", "non-empty mapping of feature name"),
    ),
    Case(
        "split-zero-rows-array",
        lambda f: dict(splits={"train": {"x": np.zeros((0, 4), np.float32)}}),
        tb.PlanError,
        ("split 'train' has no examples", "at least one row"),
    ),
    Case(
        "split-zero-rows-file",
        lambda f: dict(splits={"train": {"x": f.src / "empty.npy"}}),
        tb.PlanError,
        ("has no examples", "empty.npy", "at least one row"),
    ),
    Case(
        "split-name-traversal",
        lambda f: dict(splits={"../train": {"x": f.x}}),
        tb.PlanError,
        (r"split name '\.\./train'", "letters, digits and '_'"),
    ),
    Case(
        "split-name-all",
        lambda f: dict(splits={"all": {"x": f.x}}),
        tb.PlanError,
        ("split name 'all'", "reserved"),
    ),
    Case(
        "split-name-newline",
        lambda f: dict(splits={"train\n": {"x": f.x}}),
        tb.PlanError,
        (r"'train\\n'", "letters, digits"),
    ),
    Case(
        "feature-name-traversal",
        lambda f: dict(splits={"train": {"../x": f.x}}),
        tb.SpecError,
        (r"feature name='\.\./x'", "for example 'x'"),
    ),
    Case(
        "feature-name-unicode",
        lambda f: dict(splits={"train": {"é": f.x}}),
        tb.SpecError,
        ("'é'", "letters, digits and '_'"),
    ),
    Case(
        "value-list",
        lambda f: dict(splits={"train": {"x": [1, 2, 3]}}),
        tb.SourceError,
        (r"x=\[1, 2, 3\]", "type list", "Pass a numpy array"),
    ),
    Case(
        "value-none",
        lambda f: dict(splits={"train": {"x": None}}),
        tb.SourceError,
        ("x=None", "Pass a numpy array"),
    ),
    Case(
        "value-0d",
        lambda f: dict(splits={"train": {"x": np.array(3.0)}}),
        tb.SourceError,
        ("'x'", "0-d", r"Reshape it to \(num_examples"),
    ),
    Case(
        "rows-mismatch",
        lambda f: dict(splits={"train": {"x": f.x, "y": np.arange(5)}}),
        tb.PlanError,
        ("different numbers of examples", "x=6", "y=5", "one row per example"),
    ),
    Case(
        "rows-mismatch-files",
        lambda f: dict(splits={"train": {"x": f.src / "x.npy", "y": f.src / "y5.npy"}}),
        tb.PlanError,
        ("x=6", "y=5", "y5.npy"),
    ),
    Case(
        "splits-disagree",
        lambda f: dict(splits={"train": {"x": f.x}, "test": {"x": f.x.astype(np.int64)}}),
        tb.PlanError,
        ("split 'test'", "int64", "float32", "same feature names, dtypes"),
    ),
    Case(
        "dtype-object",
        lambda f: dict(splits={"train": {"x": np.array([{}, {}], dtype=object)}}),
        tb.SourceError,
        ("x.dtype=object", "Python objects", "Convert the array"),
    ),
    Case(
        "dtype-unicode-str",
        lambda f: dict(splits={"train": {"x": np.array(["é", "b"])}}),
        tb.SourceError,
        ("x.dtype=<U1", "unicode strings", "fixed-width numeric"),
    ),
    Case(
        "dtype-bytes",
        lambda f: dict(splits={"train": {"x": np.array([b"a", b"b"])}}),
        tb.SourceError,
        ("x.dtype=|S1", "byte strings", "Convert"),
    ),
    Case(
        "dtype-datetime",
        lambda f: dict(splits={"train": {"x": np.array(["2020-01-01"] * 2, "M8[D]")}}),
        tb.SourceError,
        ("datetime64", "datetimes", "Convert"),
    ),
    Case(
        "dtype-structured",
        lambda f: dict(splits={"train": {"x": np.zeros(2, [("a", "<i4"), ("b", "<f4")])}}),
        tb.SourceError,
        ("structured or void", "supported: bool"),
    ),
    Case(
        "dtype-longdouble",
        lambda f: dict(splits={"train": {"x": np.zeros(2, np.longdouble)}}),
        tb.SourceError,
        ("float128", "not supported by TensorFlow", "Supported: bool"),
    ),
    Case(
        "huge-row-in-memory",
        # 3 GiB per row without allocating it: a record above protobuf's 2 GiB limit.
        lambda f: dict(splits={"train": {"x": np.broadcast_to(np.uint8(0), (2, 3 << 30))}}),
        tb.PlanError,
        ("3221225472 bytes", "2147483647-byte limit", "several examples"),
    ),
    Case(
        "huge-shape-npy-header",
        lambda f: dict(splits={"train": {"x": f.src / "huge.npy"}}),
        tb.SourceError,
        ("huge.npy", "truncated", r"promises shape \(4294967296,", "Re-create"),
    ),
    Case(
        "file-missing",
        lambda f: dict(splits={"train": {"x": f.src / "nope.npy"}}),
        tb.SourceError,
        ("nope.npy", "no such file", "Check the path"),
    ),
    Case(
        "directory-not-file",
        lambda f: dict(splits={"train": {"x": f.src / "dir.npy"}}),
        tb.SourceError,
        ("dir.npy", "holds no .npy files"),
    ),
    Case(
        "file-not-npy",
        lambda f: dict(splits={"train": {"x": f.src / "junk.npy"}}),
        tb.SourceError,
        ("junk.npy", "not a .npy file", "magic"),
    ),
    Case(
        "file-truncated",
        lambda f: dict(splits={"train": {"x": f.src / "truncated.npy"}}),
        tb.SourceError,
        ("truncated.npy", "truncated", "96 bytes of data", "Re-create or re-copy"),
    ),
    Case(
        "file-not-npz",
        lambda f: dict(splits={"train": {"x": f"{f.src}/junk.npz:x"}}),
        tb.SourceError,
        ("junk.npz", r"not a valid .npz \(zip\) file"),
    ),
    Case(
        "npz-member-missing",
        lambda f: dict(splits={"train": {"x": f"{f.src}/arrays.npz:y"}}),
        tb.SourceError,
        ("no member 'y'", r"it has \['x'\]", "PATH.npz:MEMBER"),
    ),
    Case(
        "file-unknown-kind",
        lambda f: dict(splits={"train": {"x": f.src / "x.csv"}}),
        tb.SourceError,
        ("x.csv", "unknown source kind", "Use a .npy file"),
    ),
    Case(
        "file-object-dtype",
        lambda f: dict(splits={"train": {"x": f.src / "objects.npy"}}),
        tb.SourceError,
        ("objects.npy", "Python objects", "never does", "Save a numeric array"),
    ),
    Case(
        "supervised-keys-string",
        lambda f: dict(splits={"train": {"x": f.x, "y": f.x}}, supervised_keys="xy"),
        tb.PlanError,
        ("supervised_keys='xy'", "string", r"\('x', 'y'\)"),
    ),
    Case(
        "supervised-keys-unknown",
        lambda f: dict(splits=_x(f), supervised_keys=("x", "label")),
        tb.PlanError,
        (r"supervised_keys=\('x', 'label'\)", r"it has \['x'\]"),
    ),
    Case(
        "version-short",
        lambda f: dict(splits=_x(f), version="1.0"),
        tb.PlanError,
        ("version='1.0'", "major.minor.patch"),
    ),
    Case(
        "version-traversal",
        lambda f: dict(splits=_x(f), version="../1.0.0"),
        tb.PlanError,
        (r"version='\.\./1\.0\.0'", "'1.0.0'"),
    ),
    Case(
        "shard-bytes-small",
        lambda f: dict(splits=_x(f), shard_bytes=10),
        tb.PlanError,
        ("shard_bytes=10", "int >= 1024"),
    ),
    Case(
        "shard-bytes-str",
        lambda f: dict(splits=_x(f), shard_bytes="1MB"),
        tb.PlanError,
        ("shard_bytes='1MB'", "int >= 1024"),
    ),
    Case(
        "shard-bytes-float",
        lambda f: dict(splits=_x(f), shard_bytes=1e6),
        tb.PlanError,
        ("shard_bytes=1000000.0", "an int"),
    ),
    Case(
        "memory-budget-bool",
        lambda f: dict(splits=_x(f), memory_budget=True),
        tb.PlanError,
        ("memory_budget=True", "an int >= 4194304"),
    ),
    Case(
        "permute-seed-negative",
        lambda f: dict(splits=_x(f), permute_seed=-1),
        tb.PlanError,
        ("permute_seed=-1", r"\[0, 2\*\*63\)"),
    ),
    Case(
        "permute-seed-str",
        lambda f: dict(splits=_x(f), permute_seed="7"),
        tb.PlanError,
        ("permute_seed='7'", "None or an int"),
    ),
    Case(
        "beam-str",
        lambda f: dict(splits=_x(f), beam="yes"),
        tb.PlanError,
        ("beam='yes'", "must be True or False"),
    ),
    Case(
        "overwrite-str",
        lambda f: dict(splits=_x(f), overwrite="no"),
        tb.PlanError,
        ("overwrite='no'", "True or False"),
    ),
    Case(
        "data-dir-int",
        lambda f: dict(splits=_x(f), data_dir=5),
        tb.PlanError,
        ("data_dir=5", "type int", r"str or os\.PathLike"),
    ),
    Case(
        "data-dir-nul",
        lambda f: dict(splits=_x(f), data_dir="a\0b"),
        tb.PlanError,
        (r"data_dir='a\\x00b'", "not a usable directory path"),
    ),
    Case(
        "data-dir-is-a-file",
        lambda f: dict(splits=_x(f), data_dir=f.src / "x.csv"),
        tb.PlanError,
        ("x.csv", "is a file, not a directory", "Give the TFDS data directory"),
    ),
    Case(
        "description-int",
        lambda f: dict(splits=_x(f), description=5),
        tb.PlanError,
        ("description=5", "string or None"),
    ),
]


@pytest.mark.parametrize("case", _params(API_CASES))
def test_build_refuses_bad_input(files, case):
    kwargs = {"name": "bad_input", "data_dir": files.data, **case.make(files)}
    with pytest.raises(USER_ERRORS) as info:
        tb.build(kwargs.pop("name"), **kwargs)
    _check_message(info.value, case)
    _assert_empty(files.data)
    _assert_empty(files.tmp)


def _read_all(builder) -> dict[str, np.ndarray]:
    return tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, shuffle_files=False))


VALID_ARRAYS = {
    "fortran-order": lambda f: np.asfortranarray(np.arange(24, dtype=np.int64).reshape(6, 4)),
    "non-contiguous-columns": lambda f: np.arange(48, dtype=np.float32).reshape(6, 8)[:, ::2],
    "reversed-rows": lambda f: np.arange(24, dtype=np.int16).reshape(6, 4)[::-1],
    "big-endian-float": lambda f: np.linspace(-1, 1, 24).reshape(6, 4).astype(">f4"),
    "big-endian-int": lambda f: (np.arange(6, dtype=">i8") - 3) * (1 << 40),
    "big-endian-complex": lambda f: (np.arange(6) + 1j).astype(">c16"),
    "zero-width-rows": lambda f: np.zeros((6, 0), np.float32),
    "memmap": lambda f: np.load(f.src / "x.npy", mmap_mode="r", allow_pickle=False),
    "big-endian-npy-file": lambda f: f.src / "x_be.npy",
    "fortran-npy-file": lambda f: f.src / "x_fortran.npy",
}


@pytest.mark.parametrize("kind", list(VALID_ARRAYS))
def test_unusual_but_valid_arrays_round_trip_bit_exactly(files, kind):
    value = VALID_ARRAYS[kind](files)
    want = np.load(value, allow_pickle=False) if isinstance(value, os.PathLike) else value
    builder = tb.build(
        "unusual",
        data_dir=files.data,
        splits={"train": {"x": value, "i": np.arange(6)}},
        description="Ünïcödé description ✓",
    )
    got = _read_all(builder)
    native = want.dtype.newbyteorder("=") if want.dtype.byteorder == ">" else want.dtype
    assert got["x"].dtype == native and got["x"].shape == want.shape
    assert got["x"].tobytes() == np.ascontiguousarray(want, dtype=native).tobytes()
    np.testing.assert_array_equal(got["x"], want)
    np.testing.assert_array_equal(got["i"], np.arange(6))  # row order kept
    assert builder.info.description == "Ünïcödé description ✓"
    # TensorFlow caches the functions autograph converts there; nothing else may stay.
    left = [p.name for p in files.tmp.iterdir() if not p.name.startswith("__autograph_generated")]
    assert not left, left


# --- Declarative builder: ArrayDatasetBuilder class attributes -------------------------


class _Base(tb.ArrayDatasetBuilder, skip_registration=True):
    """Base of the builders below: one valid split."""

    SPLITS = {"train": {"x": np.arange(12, dtype=np.float32).reshape(6, 2)}}


def _builder_class(attrs: dict[str, Any]) -> type[tb.ArrayDatasetBuilder]:
    ns = {"name": "bad_builder", "__module__": __name__, **attrs}
    return types.new_class(
        "BadBuilder", (_Base,), {"skip_registration": True}, lambda d: d.update(ns)
    )


BUILDER_CASES = [
    Case(
        "name-traversal",
        lambda f: {"name": "../escaped"},
        tb.PlanError,
        (r"name='\.\./escaped'", r"no '/', '\.\.'", "For example 'escaped'"),
    ),
    Case("name-slash", lambda f: {"name": "a/b"}, tb.PlanError, ("name='a/b'", "'a_b'")),
    Case("name-spaces", lambda f: {"name": "Bad Name"}, tb.PlanError, ("'Bad Name'", "'bad_name'")),
    Case(
        "no-splits",
        lambda f: {"SPLITS": None},
        tb.PlanError,
        ("BadBuilder declares no SPLITS", "Set SPLITS ="),
    ),
    Case(
        "splits-list",
        lambda f: {"SPLITS": [("train", {"x": f.x})]},
        tb.PlanError,
        (r"splits=\[\('train'", "non-empty mapping"),
    ),
    Case(
        "splits-zero-rows",
        lambda f: {"SPLITS": {"train": {"x": np.zeros((0, 2))}}},
        tb.PlanError,
        ("split 'train' has no examples", "at least one row"),
    ),
    Case(
        "splits-object-dtype-file",
        lambda f: {"SPLITS": {"train": {"x": str(f.src / "objects.npy")}}},
        tb.SourceError,
        ("objects.npy", "Python objects", "never does"),
    ),
    Case(
        "splits-missing-file",
        lambda f: {"SPLITS": {"train": {"x": str(f.src / "nope.npy")}}},
        tb.SourceError,
        ("nope.npy", "no such file"),
    ),
    Case(
        "splits-rows-mismatch",
        lambda f: {"SPLITS": {"train": {"x": f.x, "y": np.arange(5)}}},
        tb.PlanError,
        ("x=6", "y=5", "one row per example"),
    ),
    Case(
        "splits-unicode-feature",
        lambda f: {"SPLITS": {"train": {"ñ": f.x}}},
        tb.SpecError,
        ("'ñ'", "letters, digits"),
    ),
    Case(
        "splits-huge-row",
        lambda f: {"SPLITS": {"train": {"x": np.broadcast_to(np.uint8(0), (2, 3 << 30))}}},
        tb.PlanError,
        ("2147483647-byte limit", "several examples"),
    ),
    Case(
        "supervised-keys-string",
        lambda f: {"SUPERVISED_KEYS": "xy", "SPLITS": {"train": {"x": f.x, "y": f.x}}},
        tb.PlanError,
        ("supervised_keys='xy'", "two feature"),
    ),
    Case(
        "supervised-keys-unknown",
        lambda f: {"SUPERVISED_KEYS": ("x", "z")},
        tb.PlanError,
        (r"supervised_keys=\('x', 'z'\)", "must name two features"),
    ),
    Case(
        "shard-bytes-small",
        lambda f: {"SHARD_BYTES": 10},
        tb.PlanError,
        ("SHARD_BYTES=10", ">= 1024"),
    ),
    Case(
        "read-memory-budget-str",
        lambda f: {"READ_MEMORY_BUDGET": "big"},
        tb.PlanError,
        ("READ_MEMORY_BUDGET='big'", "an int >= 4194304"),
    ),
    Case(
        "permute-seed-str",
        lambda f: {"PERMUTE_SEED": "abc"},
        tb.PlanError,
        ("PERMUTE_SEED='abc'", "None or an int"),
    ),
    Case(
        "permute-seed-negative",
        lambda f: {"PERMUTE_SEED": -1},
        tb.PlanError,
        ("PERMUTE_SEED=-1", r"\[0, 2\*\*63\)"),
    ),
]


@pytest.mark.parametrize("case", _params(BUILDER_CASES))
def test_builder_attributes_refuse_bad_input(files, case):
    with pytest.raises(USER_ERRORS) as info:
        cls = _builder_class(case.make(files))  # a bad `name` fails here already
        cls(data_dir=str(files.data)).download_and_prepare()
    _check_message(info.value, case)
    _assert_empty(files.data)
    assert sorted(p.name for p in files.data.parent.iterdir()) == ["src", "tmp"]
    _assert_empty(files.tmp)


def test_builder_attributes_accept_unusual_arrays(files):
    x = np.linspace(0, 1, 24).reshape(6, 4).astype(">f8")[:, ::-2]
    cls = _builder_class({"SPLITS": {"train": {"x": np.asfortranarray(x)}}})
    builder = cls(data_dir=str(files.data))
    builder.download_and_prepare()
    got = _read_all(builder)["x"]
    assert got.dtype == np.float64 and got.tobytes() == x.astype("<f8").tobytes()


# --- Command line: tfds-bigarrays build / ls / inspect / gpu run -----------------------
# tests/test_cli.py covers missing files, length mismatch, bad --split syntax,
# traversal and upper-case names, --supervised and --shard-size; these are the rest.

CLI_CASES = [
    Case(
        "name-absolute",
        lambda f: ["build", "/tmp/x", "--split", f"train:x={f.src}/x.npy"],
        tb.PlanError,
        ("name='/tmp/x'", "no '/'"),
    ),
    Case(
        "name-unicode",
        lambda f: ["build", "données", "--split", f"train:x={f.src}/x.npy"],
        tb.PlanError,
        ("'données'", "lower-case"),
    ),
    Case(
        "name-nul",
        lambda f: ["build", "a\0b", "--split", f"train:x={f.src}/x.npy"],
        tb.PlanError,
        (r"'a\\x00b'",),
    ),
    Case(
        "split-name-traversal",
        lambda f: ["build", "ok_name", "--split", f"../t:x={f.src}/x.npy"],
        tb.PlanError,
        (r"split name '\.\./t'", "for example 'train'"),
    ),
    Case(
        "split-twice",
        lambda f: (
            ["build", "ok_name", "--split", f"train:x={f.src}/x.npy"] * 1
            + ["--split", f"train:x={f.src}/x.npy"]
        ),
        ValueError,
        ("--split 'train' is given twice", "give each split once"),
    ),
    Case(
        "feature-traversal",
        lambda f: ["build", "ok_name", "--split", f"train:../x={f.src}/x.npy"],
        tb.SpecError,
        (r"'\.\./x'", "letters, digits"),
    ),
    Case(
        "zero-rows",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/empty.npy"],
        tb.PlanError,
        ("has no examples", "empty.npy"),
    ),
    Case(
        "directory-not-file",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/dir.npy"],
        tb.SourceError,
        ("dir.npy", "holds no .npy files"),
    ),
    Case(
        "file-not-npy",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/junk.npy"],
        tb.SourceError,
        ("junk.npy", "not a .npy file"),
    ),
    Case(
        "huge-shape-header",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/huge.npy"],
        tb.SourceError,
        ("huge.npy", "truncated", "Re-create"),
    ),
    Case(
        "npz-member-missing",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/arrays.npz:nope"],
        tb.SourceError,
        ("no member 'nope'", r"\['x'\]"),
    ),
    Case(
        "version",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/x.npy", "--version", "1.0"],
        tb.PlanError,
        ("version='1.0'", "major.minor.patch"),
    ),
    Case(
        "shard-size-zero",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/x.npy", "--shard-size", "0"],
        tb.PlanError,
        ("--shard-size=0", ">= 1024"),
    ),
    Case(
        "shard-size-negative",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/x.npy", "--shard-size=-1K"],
        ValueError,
        ("--shard-size='-1K' is not a size", "256MiB"),
    ),
    Case(
        "memory-budget-words",
        lambda f: [
            "build",
            "ok_name",
            "--split",
            f"train:x={f.src}/x.npy",
            "--memory-budget",
            "lots",
        ],
        ValueError,
        ("--memory-budget='lots' is not a size", "e.g. 256MiB"),
    ),
    Case(
        "permute-negative",
        lambda f: ["build", "ok_name", "--split", f"train:x={f.src}/x.npy", "--permute", "-1"],
        tb.PlanError,
        ("--permute=-1", r"2\*\*63"),
    ),
    Case(
        "data-dir-is-a-file",
        lambda f: [
            "build",
            "ok_name",
            "--split",
            f"train:x={f.src}/x.npy",
            "--data-dir",
            f"{f.src}/x.csv",
        ],
        tb.PlanError,
        ("x.csv", "is a file, not a directory"),
    ),
    Case(
        "inspect-traversal",
        lambda f: ["inspect", "../etc", "--data-dir", str(f.data)],
        RegistryError,
        (r"dataset name='\.\./etc'", "no '/', '\\.\\.'"),
    ),
    Case(
        "inspect-registry-traversal",
        lambda f: ["inspect", "team:../etc", "--registry", str(f.registry)],
        RegistryError,
        (r"dataset name='\.\./etc'",),
    ),
    Case(
        "inspect-version-traversal",
        lambda f: ["inspect", "faces", "--data-dir", str(f.data), "--version", "../../x"],
        ValueError,
        (r"--version '\.\./\.\./x'", "major.minor.patch"),
    ),
    Case(
        "ls-registry-missing",
        lambda f: ["ls", "--registry", f"{f.src}/missing.toml"],
        RegistryError,
        ("missing.toml cannot be read",),
    ),
    Case(
        "gpu-memory-limit-negative",
        lambda f: ["gpu", "run", "--memory-limit", "-5", "--", "python", "-c", "pass"],
        ValueError,
        ("--memory-limit -5", "positive number of MB", "e.g. 2048"),
    ),
    Case(
        "gpu-models-zero",
        lambda f: [
            "gpu",
            "run",
            "--models",
            "0",
            "--card-mb",
            "8000",
            "--",
            "python",
            "-c",
            "pass",
        ],
        ValueError,
        ("--models 0 must be >= 1",),
    ),
    Case(
        "gpu-no-command",
        lambda f: ["gpu", "run", "--card-mb", "8000", "--"],
        ValueError,
        ("give a command after --", "e.g. gpu run"),
    ),
    Case(
        "gpu-card-too-small",
        lambda f: [
            "gpu",
            "run",
            "--models",
            "4",
            "--card-mb",
            "2048",
            "--",
            "python",
            "-c",
            "pass",
        ],
        ValueError,
        ("4 models do not fit a 2048 MB card", "Use fewer models"),
    ),
]


@pytest.mark.parametrize("case", _params(CLI_CASES))
def test_cli_refuses_bad_input(files, case, capsys):
    files.registry.write_text(f'[team]\npaths = ["{files.data}"]\n')
    argv = case.make(files)
    if argv[0] == "build" and "--data-dir" not in argv:
        argv = [*argv, "--data-dir", str(files.data)]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.out == ""  # nothing ran: no "Built ...", no gpu run table
    first = captured.err.splitlines()[0]
    assert re.match(rf"tfds-bigarrays {argv[0]}: error: ", first), captured.err
    # The CLI prints the library's message (the error type is for the reader of the table).
    _check_words(first.split("error: ", 1)[1], case.words)
    _assert_empty(files.data)
    _assert_empty(files.tmp)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["build", "ok_name"], "the following arguments are required: --split"),
        (
            ["build", "ok_name", "--split", "train:x=x.npy", "--permute", "abc"],
            "invalid int value: 'abc'",
        ),
        (["gpu", "run", "--memory-limit", "lots", "--", "true"], "invalid int value: 'lots'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
    ids=["missing-split", "permute-not-int", "gpu-limit-not-int", "unknown-command"],
)
def test_cli_argument_syntax_errors_exit_2(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--data-dir", str(tmp_path / "data")] if argv[0] == "build" else argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_cli_builds_fortran_and_big_endian_files_bit_exactly(files, capsys):
    argv = ["build", "cli_unusual", "--data-dir", str(files.data)]
    argv += ["--split", f"train:x={files.src}/x_be.npy,f={files.src}/x_fortran.npy"]
    assert main(argv) == 0, capsys.readouterr().err
    got = tfds.as_numpy(tfds.load("cli_unusual", data_dir=files.data, split="train", batch_size=-1))
    assert got["x"].dtype == np.float32 and got["x"].tobytes() == files.x.tobytes()
    want_f = np.arange(24, dtype=np.int64).reshape(6, 4)
    assert got["f"].tobytes() == want_f.tobytes()


# --- Registry TOML (TFDS_BIGARRAYS_REGISTRY) -------------------------------------------

REGISTRY_CASES = [
    Case("not-toml", lambda f: "[team\npaths = 1", RegistryError, ("not valid TOML", "line 1")),
    Case(
        "namespace-traversal",
        lambda f: '["../x"]\npaths = ["/data"]\n',
        RegistryError,
        (r"namespace in .*registry.toml='\.\./x'", "no '/', '\\.\\.'"),
    ),
    Case(
        "namespace-unicode",
        lambda f: '["équipe"]\npaths = ["/data"]\n',
        RegistryError,
        ("'équipe'", "lower-case letters"),
    ),
    Case(
        "namespace-newline",
        lambda f: '["team\\n"]\npaths = ["/data"]\n',
        RegistryError,
        (r"'team\\n'",),
    ),
    Case(
        "no-paths",
        lambda f: '[team]\ninfo = "x"\n',
        RegistryError,
        (r"\[team\] needs paths = \[", "info ="),
    ),
    Case(
        "top-level-key",
        lambda f: 'paths = ["/data"]\n',
        RegistryError,
        (r"\[paths\] needs paths =",),
    ),
    Case(
        "paths-string",
        lambda f: '[team]\npaths = "/data"\n',
        RegistryError,
        (r"\[team\] needs paths = \[",),
    ),
    Case(
        "paths-empty",
        lambda f: "[team]\npaths = []\n",
        RegistryError,
        (r"paths=\[\]", "non-empty list"),
    ),
    Case(
        "paths-int",
        lambda f: "[team]\npaths = [1]\n",
        RegistryError,
        (r"paths=\[1\]", "strings"),
    ),
    Case(
        "paths-nul",
        lambda f: '[team]\npaths = ["/data\\u0000/x"]\n',
        RegistryError,
        (r"paths=\['/data\\x00/x'\]", "without NUL"),
    ),
    Case(
        "paths-empty-string",
        lambda f: '[team]\npaths = [""]\n',
        RegistryError,
        (r"paths=\[''\]", "non-empty directory paths"),
    ),
    Case(
        "namespace-twice",
        lambda f: '[team]\npaths = ["/a"]\n',  # the same file is given twice below
        RegistryError,
        ("Namespace 'team' is defined twice",),
    ),
]


@pytest.mark.parametrize("case", _params(REGISTRY_CASES))
def test_registry_toml_refuses_bad_input(files, case, monkeypatch, capsys):
    files.registry.write_text(case.make(files), encoding="utf-8")
    listed = [files.registry, files.registry] if case.id == "namespace-twice" else [files.registry]
    with pytest.raises(RegistryError) as info:
        Registry.from_files(listed)
    _check_message(info.value, case)
    # Through the environment variable, as `tfds.load("team:name")` and the CLI read it.
    monkeypatch.setenv("TFDS_BIGARRAYS_REGISTRY", ",".join(map(str, listed)))
    assert main(["ls"]) == 2
    assert re.search(case.words[0], capsys.readouterr().err)


def test_registry_file_that_is_a_directory_or_missing(files):
    for path, words in ((files.src, "Is a directory"), (files.src / "no.toml", "No such file")):
        with pytest.raises(
            RegistryError, match=f"Registry file {re.escape(str(path))} cannot be read.*{words}"
        ):
            Registry.from_files([path])


def test_registry_lookups_refuse_traversal(files):
    files.registry.write_text(f'[team]\npaths = ["{files.data}"]\n')
    registry = Registry.from_files([files.registry])
    for name in ("../x", "a/b", "/etc", "a\0b", "x\n"):
        with pytest.raises(RegistryError, match=re.escape(f"dataset name={name!r}")):
            registry.dataset_dir("team", name)
        with pytest.raises(RegistryError, match=re.escape(f"namespace={name!r}")):
            registry.namespace(name)
    with pytest.raises(RegistryError, match="Unknown namespace 'teem'.*Did you mean 'team'"):
        registry.datasets("teem")


# --- GPU module: limit_memory / split / plan and their environment variables ------------
# No GPU is visible to TensorFlow here: every check below must fire before any device is
# needed, so a typo fails on a laptop and not on the training machine.

GPU_CASES = [
    Case(
        "limit-str",
        lambda f: lambda: gpu.limit_memory("1024"),
        gpu.GpuConfigError,
        ("megabytes='1024'", "positive int", "e.g. 2048"),
    ),
    Case("limit-zero", lambda f: lambda: gpu.limit_memory(0), gpu.GpuConfigError, ("megabytes=0",)),
    Case(
        "limit-bool",
        lambda f: lambda: gpu.limit_memory(True),
        gpu.GpuConfigError,
        ("megabytes=True",),
    ),
    Case(
        "limit-float",
        lambda f: lambda: gpu.limit_memory(1.5),
        gpu.GpuConfigError,
        ("megabytes=1.5",),
    ),
    Case(
        "limit-no-value",
        lambda f: lambda: gpu.limit_memory(),
        gpu.GpuConfigError,
        ("needs megabytes", "TFDS_BIGARRAYS_GPU_MEMORY_MB"),
    ),
    Case(
        "env-mb-words",
        lambda f: lambda: gpu.limit_memory(),
        gpu.GpuConfigError,
        ("TFDS_BIGARRAYS_GPU_MEMORY_MB='lots'", "positive int", "e.g. 2048"),
    ),
    Case(
        "env-mb-negative",
        lambda f: lambda: gpu.limit_memory(),
        gpu.GpuConfigError,
        ("TFDS_BIGARRAYS_GPU_MEMORY_MB='-5'", "positive int"),
    ),
    Case(
        "env-device-words",
        lambda f: lambda: gpu.limit_memory(512),
        gpu.GpuConfigError,
        ("TFDS_BIGARRAYS_GPU_DEVICE='a'", "separated by commas", "e.g. 0 or 0,1"),
    ),
    Case(
        "env-device-empty-item",
        lambda f: lambda: gpu.limit_memory(512),
        gpu.GpuConfigError,
        ("TFDS_BIGARRAYS_GPU_DEVICE='0,,1'",),
    ),
    Case(
        "devices-str",
        lambda f: lambda: gpu.limit_memory(512, devices="0"),
        gpu.GpuConfigError,
        ("devices='0'", r"int >= 0", r"\[0, 1\]"),
    ),
    Case(
        "devices-negative",
        lambda f: lambda: gpu.limit_memory(512, devices=-1),
        gpu.GpuConfigError,
        ("devices=-1",),
    ),
    Case(
        "devices-bool",
        lambda f: lambda: gpu.memory_growth(devices=[True]),
        gpu.GpuConfigError,
        (r"devices=\[True\]",),
    ),
    Case(
        "split-zero", lambda f: lambda: gpu.split(0, 512), gpu.GpuConfigError, ("n=0", "int >= 1")
    ),
    Case("split-str", lambda f: lambda: gpu.split("2", 512), gpu.GpuConfigError, ("n='2'",)),
    Case(
        "split-gpu-no-mb", lambda f: lambda: gpu.split(2), gpu.GpuConfigError, ("megabytes=None",)
    ),
    Case(
        "split-cpu-mb",
        lambda f: lambda: gpu.split(2, 512, device_type="CPU"),
        gpu.GpuConfigError,
        ("megabytes must be None", "CPUs take no limit"),
    ),
    Case(
        "split-tpu",
        lambda f: lambda: gpu.split(2, 512, device_type="TPU"),
        gpu.GpuConfigError,
        ("device_type='TPU'", "'GPU' or 'CPU'"),
    ),
    Case(
        "split-device-str",
        lambda f: lambda: gpu.split(2, 512, device="0"),
        gpu.GpuConfigError,
        ("devices='0'",),
    ),
    Case(
        "plan-zero",
        lambda f: lambda: gpu.plan(0, card_mb=8192),
        ValueError,
        ("models=0", "int >= 1"),
    ),
    Case("plan-str", lambda f: lambda: gpu.plan("2", card_mb=8192), ValueError, ("models='2'",)),
    Case(
        "plan-card-zero",
        lambda f: lambda: gpu.plan(2, card_mb=0),
        ValueError,
        ("card_mb=0", "positive"),
    ),
    Case(
        "plan-overhead-negative",
        lambda f: lambda: gpu.plan(2, card_mb=8192, overhead_mb=-1),
        ValueError,
        ("overhead_mb=-1", "int >= 0"),
    ),
    Case(
        "plan-does-not-fit",
        lambda f: lambda: gpu.plan(8, card_mb=4096),
        ValueError,
        ("8 models do not fit a 4096 MB card", "Use fewer models"),
    ),
    Case(
        "plan-no-card",
        lambda f: lambda: gpu.plan(2),
        ValueError,
        ("Cannot read the card's memory", "pass card_mb="),
    ),
]
_GPU_ENV = {
    "env-mb-words": {"TFDS_BIGARRAYS_GPU_MEMORY_MB": "lots"},
    "env-mb-negative": {"TFDS_BIGARRAYS_GPU_MEMORY_MB": "-5"},
    "env-device-words": {"TFDS_BIGARRAYS_GPU_DEVICE": "a"},
    "env-device-empty-item": {"TFDS_BIGARRAYS_GPU_DEVICE": "0,,1"},
}


@pytest.mark.parametrize("case", _params(GPU_CASES))
def test_gpu_module_refuses_bad_input(case, monkeypatch):
    for var in ("TFDS_BIGARRAYS_GPU_MEMORY_MB", "TFDS_BIGARRAYS_GPU_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in _GPU_ENV.get(case.id, {}).items():
        monkeypatch.setenv(var, value)
    with pytest.raises(USER_ERRORS) as info:
        case.make(None)()
    _check_message(info.value, case)


def test_gpu_valid_settings_without_a_gpu_apply_nothing(monkeypatch):
    monkeypatch.setenv("TFDS_BIGARRAYS_GPU_MEMORY_MB", "1024")
    monkeypatch.setenv("TFDS_BIGARRAYS_GPU_DEVICE", "0,1")
    applied = gpu.limit_memory()
    assert not applied.applied and applied.setting == "memory_limit=1024MB"
    assert gpu.plan(2, card_mb=8192).cap_mb == (8192 - 2 * 1024) // 2

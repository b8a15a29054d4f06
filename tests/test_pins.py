"""Pins what a redesign must not change: the public API, the bytes a build
writes, and the first batches each read engine gives for a seed.

Regenerate deliberately (and say why in the commit) with
`.venv/bin/python tests/test_pins.py --write`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden" / "pins.json"
# Fields of the JSON files that differ from build to build by nature.
_VOLATILE = {"created", "host", "sources", "shards"}


def public_api() -> dict[str, str]:
    import tfds_bigarrays as tb
    import tfds_bigarrays.gpu as gpu

    out = {}
    for module, prefix in ((tb, ""), (gpu, "gpu.")):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                builtin = [b.__name__ for b in obj.__mro__ if b.__module__ == "builtins"]
                out[prefix + name] = "exception(" + ",".join(builtin) + ")"
            elif callable(obj):
                try:
                    sig = inspect.signature(obj)
                except (TypeError, ValueError):
                    out[prefix + name] = "callable"
                    continue
                params = [
                    f"{p.kind.name}:{p.name}" + ("" if p.default is p.empty else f"={p.default!r}")
                    for p in sig.parameters.values()
                ]
                out[prefix + name] = "(" + ", ".join(params) + ")"
            else:
                out[prefix + name] = repr(obj) if name != "__version__" else "str"
    return out


def _arrays(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "img": rng.normal(size=(n, 5, 3)).astype(np.float32),
        "label": np.arange(n, dtype=np.int64),
        "half": rng.normal(size=n).astype(np.float16),
        "flag": rng.integers(0, 2, n).astype(bool),
        "count": rng.integers(0, 2**32, (n, 2), dtype=np.uint64).astype(np.uint32),
    }


def build_fixtures(data_dir: pathlib.Path) -> None:
    import tfds_bigarrays as tb

    rng = np.random.default_rng(20261201)
    mixed = _arrays(611, rng)
    tb.build(
        "pin_mixed",
        data_dir=data_dir,
        splits={"train": mixed, "test": _arrays(50, rng)},
        supervised_keys=("img", "label"),
        shard_bytes=9000,
    )
    raw = {k: mixed[k] for k in ("img", "label", "half")}
    tb.build("pin_raw", data_dir=data_dir, splits={"train": raw}, shard_bytes=9000)
    big = {
        "x": rng.normal(size=(1200, 300)).astype(np.float32),
        "y": np.arange(1200, dtype=np.int32),
    }
    tb.build("pin_big", data_dir=data_dir, splits={"train": big}, shard_bytes=200_000)
    tb.build(
        "pin_permuted", data_dir=data_dir, splits={"train": raw}, shard_bytes=9000, permute_seed=11
    )


def _canonical(path: pathlib.Path) -> str:
    data = json.loads(path.read_text())

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(strip(data), sort_keys=True).encode()).hexdigest()


def file_hashes(data_dir: pathlib.Path) -> dict[str, str]:
    out = {}
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(data_dir))
        if path.suffix == ".json":
            out[rel] = _canonical(path)
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# (dataset, split, access, shuffle, batch_size)
CASES = [
    (name, split, access, shuffle, batch)
    for name, split, batch in (
        ("pin_mixed", "train", 7),
        ("pin_mixed", "train[13:500]", 16),
        ("pin_raw", "train", 7),
        ("pin_big", "train", 256),
        ("pin_permuted", "train", 32),
    )
    for access in ("random", "mapped", "sequential")
    for shuffle in (True, False)
]


def first_batches(data_dir: pathlib.Path, case, *, batches: int = 3) -> dict[str, str]:
    import tensorflow_datasets as tfds

    import tfds_bigarrays as tb

    name, split, access, shuffle, batch = case
    with tb.read_options(access=access):
        ds = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            shuffle_files=shuffle,
            batch_size=batch,
            read_config=tfds.ReadConfig(shuffle_seed=5),
        )
    out: dict[str, str] = {}
    digests: dict[str, hashlib._Hash] = {}
    for i, element in enumerate(tfds.as_numpy(ds.take(batches))):
        for key in sorted(element):
            digests.setdefault(key, hashlib.sha256()).update(element[key].tobytes())
        if i == 0:
            key = "label" if "label" in element else sorted(element)[-1]
            out["first"] = ",".join(map(str, element[key].ravel()[:8].tolist()))
    out.update({k: d.hexdigest()[:24] for k, d in digests.items()})
    return out


def case_id(case) -> str:
    return "/".join(str(c) for c in case)


def measure(data_dir: pathlib.Path) -> dict:
    build_fixtures(data_dir)
    return {
        "api": public_api(),
        "files": file_hashes(data_dir),
        "batches": {case_id(c): first_batches(data_dir, c) for c in CASES},
    }


@pytest.fixture(scope="module")
def pinned():
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("pins")
    build_fixtures(data_dir)
    return data_dir


def test_public_api_is_unchanged(pinned):
    assert public_api() == pinned["api"]


def test_builds_write_the_pinned_bytes(pinned, fixtures):
    assert file_hashes(fixtures) == pinned["files"]


@pytest.fixture(scope="module")
def batches(fixtures):
    # In a fresh process: a global seed that another test set (tf.random.set_seed)
    # would change every shuffled order.
    proc = subprocess.run(
        [sys.executable, __file__, "--batches", str(fixtures)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_first_batches_are_pinned(pinned, batches, case):
    assert batches[case_id(case)] == pinned["batches"][case_id(case)]


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:2] == ["--batches"]:
        data_dir = pathlib.Path(sys.argv[2])
        print(json.dumps({case_id(c): first_batches(data_dir, c) for c in CASES}))
    elif sys.argv[1:] == ["--write"]:
        with tempfile.TemporaryDirectory() as tmp:
            text = json.dumps(measure(pathlib.Path(tmp)), indent=1, sort_keys=True)
            GOLDEN.write_text(text + "\n")
        print(f"wrote {GOLDEN}")
    else:
        sys.exit("usage: tests/test_pins.py --write")

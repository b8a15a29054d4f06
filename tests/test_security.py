"""Security: no unpickling, no escaping a root, nothing executed from a dataset folder.

1. Static: every `np.load` in the package passes `allow_pickle=False`; the
   package imports no pickle-like module and calls no eval/exec/compile/
   __import__/importlib/runpy (an ast scan over its source).
2. Behavioural: object arrays whose pickle payload would create a marker file
   are refused by `build()` and the CLI, and the marker never appears.
3. Names with '..', '/', absolute paths or NUL are refused by `build()`, the
   CLI, `publish` (including a tampered dataset_info.json) and registry TOML.
4. Loading a dataset whose folder holds planted `.py` files and tampered
   metadata executes none of them.
"""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
import types

import numpy as np
import pytest
from conftest import ROOT, run_cli, run_python

import tfds_bigarrays as tb
from tfds_bigarrays._cli.main import main
from tfds_bigarrays._registry.lookup import Registry, RegistryError
from tfds_bigarrays._registry.publish import publish

PACKAGE = ROOT / "tfds_bigarrays"
_FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
_FORBIDDEN_MODULES |= {"importlib", "runpy", "imp"}
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
# Loaders that unpickle object arrays unless told not to.
_NUMPY_LOADERS = {"load", "read_array"}


def _problems(source: str, filename: str) -> list[str]:
    """What the ast scan objects to in one module's source."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _FORBIDDEN_MODULES:
                    out.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
                out.append(f"{filename}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _FORBIDDEN_CALLS:
                out.append(f"{filename}:{node.lineno}: {func.id}()")
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _NUMPY_LOADERS and _is_numpy(func):
                safe = any(
                    k.arg == "allow_pickle"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is False
                    for k in node.keywords
                )
                if not safe:
                    out.append(f"{filename}:{node.lineno}: {name}() without allow_pickle=False")
    return out


def _is_numpy(func: ast.expr) -> bool:
    """np.load / numpy.load / np.lib.format.read_array / a bare `load` (from numpy import)."""
    if isinstance(func, ast.Name):
        return True  # a bare load(...) or read_array(...): treat as numpy's to be safe
    root = func
    while isinstance(root, ast.Attribute):
        root = root.value
    return isinstance(root, ast.Name) and root.id in {"np", "numpy"}


def test_scanner_catches_what_it_should():
    bad = """
import pickle
from dill import loads
import numpy as np
np.load("x.npy")
np.load("x.npy", allow_pickle=True)
np.lib.format.read_array(f)
eval("1")
exec("x = 1")
__import__("os")
import importlib
"""
    found = _problems(bad, "bad.py")
    assert len(found) == 9, found
    good = 'import ast, numpy as np\nnp.load("x.npy", allow_pickle=False)\nast.literal_eval("1")\n'
    assert _problems(good, "good.py") == []


# Each exception, with why it is safe. Kept exact: an entry that no longer
# matches fails the test, so the list cannot rot into a blanket pass.
_ALLOWED = {
    # `python -m tfds_bigarrays.gpu [--memory-limit MB] script.py` runs the script or
    # module the user names on the command line, as `python script.py` would; no
    # path from a dataset folder or the registry ever reaches it.
    "tfds_bigarrays/gpu/_run.py: import runpy",
    # The CLI wraps the loader of one fixed module, `tensorflow`, to filter its
    # start-up lines; it never imports a name that came from input.
    # Beam pickles every task; the builder pickles a source once (dumps, never
    # loads: checked below) to see whether a task would carry its rows.
    "tfds_bigarrays/_build/builder.py: import pickle",
    "tfds_bigarrays/_cli/quiet.py: import importlib.abc",
    "tfds_bigarrays/_cli/quiet.py: import importlib.util",
}


def test_package_never_unpickles_evaluates_or_imports_dynamically():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the whole package, not an empty glob
    problems = [p for f in files for p in _problems(f.read_text(), str(f.relative_to(ROOT)))]
    found = {f"{p.split(':')[0]}: {p.split(': ', 1)[1]}" for p in problems}
    assert found - _ALLOWED == set(), problems
    assert _ALLOWED - found == set(), "stale allow-list entry"
    # Where pickle is imported, it only dumps.
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads", "Unpickler"):
                assert not (isinstance(node.value, ast.Name) and node.value.id == "pickle"), f


# --- Pickle payloads are never run ----------------------------------------------------


class _Payload:
    """Unpickling it creates `marker`: proof that a loader ran the pickle."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def payloads(tmp_path):
    marker = tmp_path / "UNPICKLED"
    evil = np.empty(4, dtype=object)
    evil[:] = [_Payload(marker) for _ in range(4)]
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=evil, allow_pickle=True)
    # The payload is live: numpy, told to unpickle, does create the marker.
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    return {"dir": tmp_path, "marker": marker}


@pytest.mark.parametrize("source", ["evil.npy", "evil.npz:x"])
def test_build_refuses_pickled_objects_without_unpickling(payloads, source):
    d = payloads["dir"]
    with pytest.raises(tb.SourceError, match="holds Python objects.*never does"):
        tb.build("evil", data_dir=d / "data", splits={"train": {"x": f"{d}/{source}"}})
    assert not payloads["marker"].exists()
    assert not (d / "data").exists()


def test_cli_refuses_pickled_objects_without_unpickling(payloads):
    d = payloads["dir"]
    for source in ("evil.npy", "evil.npz:x"):
        proc = run_cli(
            "build", "evil", "--data-dir", str(d / "data"), "--split", f"train:x={d}/{source}"
        )
        assert proc.returncode == 2, proc.stderr
        assert "holds Python objects" in proc.stderr and "never does" in proc.stderr
    assert not payloads["marker"].exists()
    assert not (d / "data").exists()


# --- Names cannot escape their root ---------------------------------------------------

ESCAPES = ["../escaped", "..", "a/b", "/tmp/escaped", "a\0b", "escaped\n"]


def _tree(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("name", ESCAPES, ids=repr)
def test_build_and_cli_refuse_escaping_names(tmp_path, name, capsys):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    before = _tree(tmp_path)
    x = np.arange(6.0)
    with pytest.raises(tb.PlanError, match=r"not a valid dataset name.*no '/', '\.\.'"):
        tb.build(name, data_dir=root / "data", splits={"train": {"x": x}})
    np.save(tmp_path / "x.npy", x)
    before.add("x.npy")
    argv = ["build", name, "--data-dir", str(root / "data"), "--split", f"train:x={tmp_path}/x.npy"]
    assert main(argv) == 2
    assert "not a valid dataset name" in capsys.readouterr().err
    # A declarative builder whose `name` says so (it once wrote beside data_dir).
    body = {"name": name, "SPLITS": {"train": {"x": x}}, "__module__": __name__}
    with pytest.raises(tb.PlanError, match="not a valid dataset name"):
        types.new_class(
            "Escaping",
            (tb.ArrayDatasetBuilder,),
            {"skip_registration": True},
            lambda ns: ns.update(body),
        )
    assert _tree(tmp_path) == before
    assert not pathlib.Path("/tmp/escaped").exists()


@pytest.fixture
def team(tmp_path):
    registry_file = tmp_path / "registry.toml"
    registry_file.write_text(f'[team]\npaths = ["{tmp_path}/root/team"]\n')
    built = tb.build(
        "faces", data_dir=tmp_path / "build", splits={"train": {"x": np.arange(8.0)}}
    ).data_path
    return {"tmp": tmp_path, "registry": Registry.from_files([registry_file]), "built": built}


@pytest.mark.parametrize("field", ["name", "version"])
@pytest.mark.parametrize("value", ["../../../escaped", "/tmp/escaped", "a\0b", ".."], ids=repr)
def test_publish_refuses_tampered_dataset_info(team, field, value):
    info_path = team["built"] / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info[field] = value
    info_path.write_text(json.dumps(info))
    before = _tree(team["tmp"])
    with pytest.raises(RegistryError, match=f"{field} in .*dataset_info.json=.* is not valid"):
        publish(team["built"], registry=team["registry"], namespace="team")
    assert _tree(team["tmp"]) == before
    assert not pathlib.Path("/tmp/escaped").exists()


@pytest.mark.parametrize("namespace", ["../team", "team/../x", "/tmp", "te\0am"], ids=repr)
def test_publish_and_lookup_refuse_escaping_namespaces(team, namespace):
    with pytest.raises(RegistryError, match=r"namespace=.* is not valid"):
        publish(team["built"], registry=team["registry"], namespace=namespace)
    with pytest.raises(RegistryError, match=r"namespace=.* is not valid"):
        team["registry"].dataset_dir(namespace, "faces")
    assert not (team["tmp"] / "root").exists()


@pytest.mark.parametrize(
    "toml",
    [
        '["../up"]\npaths = ["/data"]\n',
        '["a/b"]\npaths = ["/data"]\n',
        '["/abs"]\npaths = ["/data"]\n',
        '["nul\\u0000"]\npaths = ["/data"]\n',
        '[ok]\npaths = ["/data\\u0000/../etc"]\n',
    ],
    ids=["dotdot", "slash", "absolute", "nul-namespace", "nul-path"],
)
def test_registry_toml_refuses_escaping_entries(tmp_path, toml):
    path = tmp_path / "registry.toml"
    path.write_text(toml)
    with pytest.raises(RegistryError, match="is not valid|without NUL"):
        Registry.from_files([path])


def test_registry_lists_only_well_named_folders(team, tmp_path):
    """A folder planted in a namespace root under a bad name is never offered."""
    publish(team["built"], registry=team["registry"], namespace="team")
    root = tmp_path / "root" / "team"
    shutil.copytree(root / "faces", root / "Faces..evil")
    shutil.copytree(root / "faces" / "1.0.0", root / "faces" / "1.0.0.evil")
    assert team["registry"].datasets("team") == {"faces": ["1.0.0"]}


# --- Nothing from a dataset folder is executed ----------------------------------------

_PLANT = "import pathlib; pathlib.Path({marker!r}).touch()\n"


def test_loading_never_executes_planted_files(team, tmp_path):
    marker = tmp_path / "EXECUTED"
    data_dir = team["built"].parent.parent
    version_dir = team["built"]
    for folder in (data_dir, version_dir.parent, version_dir):
        for name in ("__init__.py", "faces.py", "faces_dataset_builder.py", "planted.py"):
            (folder / name).write_text(_PLANT.format(marker=str(marker)))
    layout_path = version_dir / "tfds_bigarrays.json"
    layout = json.loads(layout_path.read_text())
    layout.update(
        python=_PLANT.format(marker=str(marker)), builder="planted.Builder", module="planted"
    )
    layout_path.write_text(json.dumps(layout))
    info_path = version_dir / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["moduleName"] = "planted"
    info_path.write_text(json.dumps(info))
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    code = f"""
import numpy as np, tensorflow_datasets as tfds, tfds_bigarrays
ds = tfds.load("faces", data_dir={str(data_dir)!r}, split="train", batch_size=-1)
print("values", tfds.as_numpy(ds)["x"].tolist())
"""
    result = run_python(code, cwd=neutral)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "values [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]" in result.stdout
    assert not marker.exists()
    # The command-line tools read the same folder without executing it either.
    for command in ("inspect", "verify"):
        proc = run_cli(command, "faces", "--data-dir", str(data_dir), cwd=neutral)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()


def test_altered_features_json_cannot_make_tfds_import_a_planted_module(team, tmp_path):
    """TFDS imports the module features.json names for an unknown feature class.

    Run from the dataset folder (`python -c`, a notebook), that folder is on
    sys.path, so stock TFDS would execute a module planted there; with
    tfds_bigarrays imported, loading one of our datasets refuses instead.
    """
    marker = tmp_path / "EXECUTED"
    version_dir = team["built"]
    (version_dir / "planted_feature.py").write_text(_PLANT.format(marker=str(marker)))
    features = version_dir / "features.json"
    features.write_text(
        features.read_text().replace(
            "tensorflow_datasets.core.features.tensor_feature.Tensor", "planted_feature.Tensor"
        )
    )
    load = f"""
import tensorflow_datasets as tfds
try:
    tfds.load("faces", data_dir={str(version_dir.parent.parent)!r}, split="train")
except ValueError as e:
    print("refused:", e)
"""
    # Stock TFDS alone: the start-up hook would import tfds_bigarrays.
    stock = run_python(load, cwd=version_dir, env={"TFDS_BIGARRAYS_AUTOLOAD": "0"})
    assert stock.returncode == 0, stock.stderr[-2000:]
    assert marker.exists(), "the planted module is not live; the test proves nothing"
    marker.unlink()
    ours = run_python("import tfds_bigarrays\n" + load, cwd=version_dir)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert "refused: features.json names the feature class 'planted_feature.Tensor'" in ours.stdout
    assert "Rebuild the dataset or restore features.json" in ours.stdout
    assert not marker.exists()

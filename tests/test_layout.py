"""The package's shape: no import circles, a pure format core, one error base,
every environment variable declared once."""

from __future__ import annotations

import ast
import pathlib
import re

from conftest import ROOT, run_python

import tfds_bigarrays as tb
from tfds_bigarrays import _env

PACKAGE = ROOT / "tfds_bigarrays"


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """tfds_bigarrays modules imported anywhere in the file (lazy ones too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("tfds_bigarrays")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = {m for m in _imports(path) if m in modules and m != name}
        # A package's __init__ is not a dependency of its own submodules' importers.
        graph[name] = {d for d in deps if d != "tfds_bigarrays" or name.count(".") == 0}
    return graph


def test_no_module_imports_another_in_a_circle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_format_core_imports_neither_tensorflow_nor_a_c_extension():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in (PACKAGE / "_format").rglob("*.py"):
        deps = _imports(path) & modules
        assert all(
            m.startswith("tfds_bigarrays._format") or m == "tfds_bigarrays._errors" for m in deps
        ), path
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) (tensorflow|ctypes)", text, re.M), path
    # Nor at run time: not even the package's own hooks pull TensorFlow or the core in.
    proc = run_python(
        "import sys\nimport tfds_bigarrays._format.records, tfds_bigarrays._format.layout\n"
        "print(sorted(m for m in sys.modules if m == 'tensorflow' or m.startswith"
        "(('tensorflow.', 'tfds_bigarrays._read.core', 'tfds_bigarrays._read.op.'))"
        " or m == 'tfds_bigarrays._read.op'))"
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_every_error_class_derives_from_the_one_base():
    classes = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                classes.append((path, node))
    assert len(classes) > 10
    for path, node in classes:
        bases = {ast.unparse(b) for b in node.bases}
        assert node.name == "TfdsBigarraysError" or bases - {
            "ValueError",
            "RuntimeError",
            "FileExistsError",
            "ImportError",
        }, f"{path}: {node.name} does not derive from an error of ours"
    assert issubclass(tb.PlanError, tb.TfdsBigarraysError)
    assert issubclass(tb.DatasetExistsError, tb.TfdsBigarraysError)
    from tfds_bigarrays import gpu

    assert issubclass(gpu.GpuConfigError, tb.TfdsBigarraysError)


def test_every_environment_variable_is_declared_once_in_env():
    declared = {v.name for v in _env.ALL}
    assert all(v.doc and v.name.startswith("TFDS_BIGARRAYS_") for v in _env.ALL)
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.cc"), *PACKAGE.rglob("*.h")]:
        if path.name == "_env.py":
            continue
        text = path.read_text()
        used = set(re.findall(r"TFDS_BIGARRAYS_[A-Z_]+", text))
        assert used <= declared, (path, used - declared)
        # Read only through _env.get: no direct lookups of our variables.
        assert not re.search(r"environ(\.get)?\(\s*[\"']TFDS_BIGARRAYS_", text), path


def test_every_test_module_is_collected_by_a_plain_pytest_run():
    """`make test` runs plain `pytest`: a folder its rules skip (it skipped
    any folder named "build") would silently drop tests from CI."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    assert modules - collected == set()
    assert "tests/build/test_builder.py" in collected

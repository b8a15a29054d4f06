"""The README's Python snippets run as written (paths moved into a temporary folder)."""

from __future__ import annotations

import re

from conftest import ROOT, run_python


def test_the_readme_python_quickstart_and_keras_snippet_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 2, "the README's Python snippets changed: update this test"
    code = "\n".join(blocks).replace("/tmp/", f"{tmp_path}/").replace("epochs=10", "epochs=2")
    proc = run_python(code, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "tfds" / "my_arrays" / "1.0.0" / "dataset_info.json").exists()

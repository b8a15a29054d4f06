"""`tfds-bigarrays new NAME`: a dataset folder in TFDS's template layout."""

from __future__ import annotations

import os

import numpy as np

from tfds_bigarrays._build.plan import check_dataset_name
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import user_path


class FolderExistsError(TfdsBigarraysError, FileExistsError):
    """The template's folder exists already; nothing is overwritten."""


_BUILDER = '''"""{name}: arrays as a TFDS dataset (tfds_bigarrays.ArrayDatasetBuilder)."""

import tensorflow_datasets as tfds

import tfds_bigarrays


class Builder(tfds_bigarrays.ArrayDatasetBuilder):
    """TODO: one line saying what the examples are."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {{"1.0.0": "Initial release."}}
    # Relative paths are taken from the manual directory: tfds build --manual_dir DIR
    SPLITS = {{
        "train": {{"x": "x_train.npy", "y": "y_train.npy"}},
        "test": {{"x": "x_test.npy", "y": "y_test.npy"}},
    }}
    SUPERVISED_KEYS = ("x", "y")
'''

_TEST = '''"""{name} builder test over the kilobyte arrays in dummy_data/."""

import tensorflow_datasets as tfds

from . import {name}_dataset_builder


class {cls}Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = {name}_dataset_builder.Builder
    SPLITS = {{"train": 8, "test": 4}}
    # Sources are memory-mapped, which TFDS's forbidden-os mocks would block.
    MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False


if __name__ == "__main__":
    tfds.testing.test_main()
'''

_README = """# {name}

Arrays converted to a TFDS dataset by tfds_bigarrays.

- Edit `SPLITS` in `{name}_dataset_builder.py` (file names in the manual directory).
- Test: `python -m pytest {name}` (uses `dummy_data/`).
- Build: `tfds build {name} --manual_dir /path/to/arrays`.
- Load: `import tfds_bigarrays; tfds.load("{name}", split="train", shuffle_files=True)`.
"""


def write_template(name: str, *, parent: str | os.PathLike = ".") -> str:
    """Writes NAME/ with builder, test, dummy_data/, checksums.tsv and README."""
    check_dataset_name(name)
    folder = os.path.join(user_path(parent), name)
    if os.path.exists(folder):
        raise FolderExistsError(f"{folder} already exists; choose another name or --dir.")
    os.makedirs(os.path.join(folder, "dummy_data"))
    cls = "".join(p.capitalize() for p in name.split("_"))
    files = {
        "__init__.py": "",
        f"{name}_dataset_builder.py": _BUILDER.format(name=name),
        f"{name}_dataset_builder_test.py": _TEST.format(name=name, cls=cls),
        "checksums.tsv": "# URL\tsize\tsha256\tfilename (tfds build --register_checksums)\n",
        "README.md": _README.format(name=name),
    }
    for filename, text in files.items():
        with open(os.path.join(folder, filename), "w") as f:
            f.write(text)
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        np.save(
            os.path.join(folder, "dummy_data", f"x_{split}.npy"),
            rng.normal(size=(n, 4)).astype(np.float32),
        )
        np.save(
            os.path.join(folder, "dummy_data", f"y_{split}.npy"),
            rng.integers(0, 2, n).astype(np.int64),
        )
    return folder

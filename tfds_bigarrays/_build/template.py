"""`tfds-bigarrays new NAME`: a dataset folder in TFDS's template layout."""

from __future__ import annotations

import os

import numpy as np

from tfds_bigarrays._build.plan import check_dataset_name
from tfds_bigarrays._errors import TfdsBigarraysError
from tfds_bigarrays._files import user_path


class FolderExistsError(TfdsBigarraysError, FileExistsError):
    """The template's folder exists already; nothing is overwritten."""


_BUILDER = '''"""{name}: NumPy arrays as a TFDS dataset (tfds_bigarrays.ArrayDatasetBuilder).

Notes for whoever maintains this folder (the dataset's description, shown by
`tfds.builder("{name}").info`, is README.md, as in every TFDS dataset folder):
- SPLITS names the array files, taken from the manual directory.
- Test: python -m pytest {name}   (the kilobyte arrays in dummy_data/)
- Build: tfds build {name} --manual_dir /path/to/arrays
- Load: tfds.load("{name}", split="train", shuffle_files=True, batch_size=256)
"""

import tensorflow_datasets as tfds

import tfds_bigarrays


class Builder(tfds_bigarrays.ArrayDatasetBuilder):
    """{name}: rows of NumPy arrays, x with label y."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {{"1.0.0": "Initial release."}}
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

# TFDS takes a dataset folder's README.md as the dataset's description
# (DatasetInfo.description, the catalog page): it holds the description only,
# and the notes for developers are the builder module's docstring.
_README = """{name}: rows of NumPy arrays, x with label y, converted into a TFDS dataset
by tfds_bigarrays.
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

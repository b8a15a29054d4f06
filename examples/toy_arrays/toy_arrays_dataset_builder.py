"""toy_arrays: a declarative ArrayDatasetBuilder, as a user would write one.

Build it with the stock TFDS CLI, arrays taken from the manual directory:

    tfds build examples/toy_arrays --manual_dir dummy_data/toy_arrays --data_dir /tmp/tfds
"""

import tensorflow_datasets as tfds

import tfds_bigarrays


class Builder(tfds_bigarrays.ArrayDatasetBuilder):
    """Small images with integer labels, from .npy files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    SPLITS = {
        "train": {"image": "x_train.npy", "label": "y_train.npy"},
        "validation": {"image": "x_validation.npy", "label": "y_validation.npy"},
    }
    SUPERVISED_KEYS = ("image", "label")

"""Routes `tfds.load` of our datasets to our read path.

A dataset built by tfds_bigarrays is loaded in another process through TFDS's
`ReadOnlyBuilder` (the builder class is not registered there). Importing
tfds_bigarrays wraps that class's `_build_single_dataset` once: datasets with
our layout file get our pipeline; every other dataset is untouched.
"""

from __future__ import annotations

import functools

from tensorflow_datasets.core import read_only_builder

from tfds_bigarrays import _reader

_MARK = "__tfds_bigarrays_wrapped__"


def install() -> None:
    cls = read_only_builder.ReadOnlyBuilder
    original = cls._build_single_dataset
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _build_single_dataset(
        self, split, batch_size, shuffle_files, decoders, read_config, as_supervised
    ):
        return _reader.build_single_dataset(
            self,
            functools.partial(original, self),
            split=split,
            batch_size=batch_size,
            shuffle_files=shuffle_files,
            decoders=decoders,
            read_config=read_config,
            as_supervised=as_supervised,
        )

    setattr(_build_single_dataset, _MARK, True)
    cls._build_single_dataset = _build_single_dataset

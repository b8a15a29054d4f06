"""Routes `tfds.load` of our datasets to our read path (`pipeline`), and
`tfds.data_source` to our data source (`source`).

A dataset built by tfds_bigarrays is loaded in another process through TFDS's
`ReadOnlyBuilder` (the builder class is not registered there). Importing
tfds_bigarrays wraps that class's `_build_single_dataset` and `as_data_source`
once: datasets with our layout file get our pipeline and our data source;
every other dataset is untouched.
"""

from __future__ import annotations

import contextvars
import functools
import os
from typing import Any

from tensorflow_datasets.core import read_only_builder
from tensorflow_datasets.core.features import feature as feature_lib

from tfds_bigarrays._read import source
from tfds_bigarrays._read.plan import ReadError

_MARK = "__tfds_bigarrays_wrapped__"
# True while TFDS reads the metadata of a dataset folder of ours.
_OPENING_OURS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tfds_bigarrays_opening_ours", default=False
)


def install() -> None:
    cls = read_only_builder.ReadOnlyBuilder
    original = cls._build_single_dataset
    if getattr(original, _MARK, False):
        return
    _install_feature_guard()

    @functools.wraps(original)
    def _build_single_dataset(
        self, split, batch_size, shuffle_files, decoders, read_config, as_supervised
    ):
        from tfds_bigarrays._read import pipeline as _reader  # TensorFlow: imported on first read

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
    cls.as_data_source = data_source_hook(cls.as_data_source)  # type: ignore[method-assign]


def data_source_hook(original: Any) -> Any:
    """`as_data_source` that returns our source for our datasets (TFDS's otherwise)."""

    @functools.wraps(original)
    def as_data_source(self, split=None, **kwargs):
        ours = source.as_data_source(self, split, **kwargs)
        return ours if ours is not None else original(self, split, **kwargs)

    return as_data_source


def _install_feature_guard() -> None:
    """Nothing named in a dataset folder of ours is imported.

    TFDS imports whatever module features.json names for a feature class it
    does not know, and `python -c` or a notebook started in the dataset folder
    has that folder on sys.path: an altered features.json would run a file
    planted beside it. Our datasets hold only TFDS's own Tensor features, so
    while TFDS opens one of our folders, an unknown class is an error instead.
    """
    from tfds_bigarrays._format.layout import LAYOUT_FILENAME

    builder_cls = read_only_builder.ReadOnlyBuilder
    original_init = builder_cls.__init__
    original_cls_from_name = feature_lib.FeatureConnector.cls_from_name.__func__  # type: ignore[attr-defined]

    @functools.wraps(original_init)
    def __init__(self, builder_dir, *args, **kwargs):
        ours = os.path.exists(os.path.join(os.path.expanduser(builder_dir), LAYOUT_FILENAME))
        token = _OPENING_OURS.set(ours)
        try:
            original_init(self, builder_dir, *args, **kwargs)
        except ReadError:
            raise
        except Exception as e:  # JSON, protobuf and key errors, from TFDS's parsers
            if not ours:
                raise
            # TFDS's own message names neither file (a JSON decode error, a key).
            raise ReadError(
                f"{os.path.join(builder_dir, 'dataset_info.json')} or features.json cannot be "
                f"read ({type(e).__name__}: {e}): the dataset's metadata is damaged. Rebuild "
                "the dataset, or restore the files."
            ) from None
        finally:
            _OPENING_OURS.reset(token)

    def cls_from_name(cls, python_class_name: str):
        if _OPENING_OURS.get() and python_class_name not in cls._registered_features:
            raise ReadError(
                f"features.json names the feature class {python_class_name!r}, which is "
                "not one of TFDS's. tfds_bigarrays datasets hold only Tensor features, so "
                "the file was altered; its module is not imported. Rebuild the dataset "
                "or restore features.json."
            )
        return original_cls_from_name(cls, python_class_name)

    builder_cls.__init__ = __init__  # type: ignore[method-assign]
    feature_lib.FeatureConnector.cls_from_name = classmethod(cls_from_name)  # type: ignore[method-assign, assignment]

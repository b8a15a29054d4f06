"""Specs to and from TFDS feature connectors (the thin TFDS layer)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from tfds_bigarrays._format.layout import Layout, check_against_info
from tfds_bigarrays._format.records import BYTES, feature_encoding
from tfds_bigarrays._format.spec import FeatureSpec


def to_tfds_features(
    specs: Mapping[str, FeatureSpec],
    class_labels: Mapping[str, tuple[str, ...] | int] | None = None,
) -> tfds.features.FeaturesDict:
    """The FeaturesDict that stock TFDS uses to decode our records.

    A feature in `class_labels` (names, or a number of classes) becomes a
    `ClassLabel`: its uint32 values are stored as the `int64_list` that
    ClassLabel parses.
    """
    labels = class_labels or {}
    features: dict[str, tfds.features.FeatureConnector] = {}
    for name, spec in sorted(specs.items()):
        classes = labels.get(name)
        if classes is not None:
            features[name] = (
                tfds.features.ClassLabel(num_classes=classes)
                if isinstance(classes, int)
                else tfds.features.ClassLabel(names=list(classes))
            )
        else:
            features[name] = tfds.features.Tensor(
                shape=spec.shape,
                dtype=spec.dtype,
                encoding="bytes" if feature_encoding(spec) == BYTES else "none",
            )
    return tfds.features.FeaturesDict(features)


def from_tfds_features(features: tfds.features.FeaturesDict) -> dict[str, FeatureSpec]:
    """Specs of a FeaturesDict written by `to_tfds_features` (stored dtypes)."""
    specs = {}
    for name, feature in features.items():
        if isinstance(feature, tfds.features.ClassLabel):
            specs[name] = FeatureSpec(dtype=np.dtype(np.uint32), shape=())
            continue
        info = feature.get_tensor_info()
        specs[name] = FeatureSpec(dtype=np.dtype(info.np_dtype), shape=info.shape)
    return specs


def class_label_features(features: tfds.features.FeaturesDict | None) -> frozenset[str]:
    """The features read back as int64 class ids (stored as uint32), as TFDS gives them."""
    if features is None:
        return frozenset()
    return frozenset(
        name for name, f in features.items() if isinstance(f, tfds.features.ClassLabel)
    )


def check_layout_with_builder(layout: Layout, builder: tfds.core.DatasetBuilder) -> None:
    """`check_against_info` of a layout and the TFDS metadata of its folder."""
    check_against_info(
        layout,
        directory=builder.data_path,
        features=from_tfds_features(builder.info.features),
        splits={
            name: (list(s.shard_lengths), int(s.num_bytes))
            for name, s in builder.info.splits.items()
        },
    )

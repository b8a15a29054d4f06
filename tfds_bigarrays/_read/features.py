"""Specs to and from TFDS feature connectors (the thin TFDS layer)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from tfds_bigarrays._format.layout import Layout, check_against_info
from tfds_bigarrays._format.records import BYTES, feature_encoding
from tfds_bigarrays._format.spec import FeatureSpec


def to_tfds_features(specs: Mapping[str, FeatureSpec]) -> tfds.features.FeaturesDict:
    """The FeaturesDict that stock TFDS uses to decode our records."""
    return tfds.features.FeaturesDict(
        {
            name: tfds.features.Tensor(
                shape=spec.shape,
                dtype=spec.dtype,
                encoding="bytes" if feature_encoding(spec) == BYTES else "none",
            )
            for name, spec in sorted(specs.items())
        }
    )


def from_tfds_features(features: tfds.features.FeaturesDict) -> dict[str, FeatureSpec]:
    """Specs of a FeaturesDict written by `to_tfds_features`."""
    specs = {}
    for name, feature in features.items():
        info = feature.get_tensor_info()
        specs[name] = FeatureSpec(dtype=np.dtype(info.np_dtype), shape=info.shape)
    return specs


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

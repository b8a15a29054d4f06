"""Specs to and from TFDS feature connectors (the thin TFDS layer)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

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

"""Array specs: the dtype and per-example shape of each feature.

Pure numpy. A spec is what the writer checks every block against and what the
reader needs to decode a record without guessing.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from tfds_bigarrays._errors import TfdsBigarraysError

# TensorFlow has no dtype for these kinds; they are refused with a hint.
_KIND_NAMES = {
    "O": "Python objects",
    "S": "byte strings",
    "U": "unicode strings",
    "V": "structured or void records",
    "T": "variable-width strings",  # numpy's StringDType (Zarr 3 string arrays)
    "M": "datetimes",
    "m": "timedeltas",
}

SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(name)
    for name in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    )
)
_SUPPORTED_BY_NAME = {d.name: d for d in SUPPORTED_DTYPES}

_FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(TfdsBigarraysError, ValueError):
    """An array cannot be stored: its dtype, shape or name is not supported."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """Dtype and per-example shape of one feature.

    Attributes:
      dtype: A native little-endian numpy dtype from `SUPPORTED_DTYPES`.
      shape: The shape of one example (the array's shape without its first
        axis). Every dimension is known: arrays have fixed-width rows.
    """

    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 0 for d in self.shape):
            raise SpecError(f"Dimensions must be >= 0 (got shape={self.shape}).")

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow on absurd shapes

    @property
    def row_bytes(self) -> int:
        """Bytes of one example's values (not counting record framing)."""
        return self.num_elements * self.dtype.itemsize

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FeatureSpec:
        return cls(dtype=np.dtype(value["dtype"]), shape=tuple(value["shape"]))

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


def normalize_dtype(dtype: Any, *, what: str = "dtype") -> np.dtype:
    """Returns the native little-endian twin of `dtype`, or raises SpecError.

    Big-endian arrays are accepted and stored little-endian, since TensorFlow
    decodes raw bytes in the machine's (little-endian) order.
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError as e:
        raise SpecError(f"{what}={dtype!r} is not a numpy dtype.") from e
    if dtype.hasobject or dtype.kind in _KIND_NAMES:
        kind = _KIND_NAMES.get(dtype.kind, "Python objects")
        raise SpecError(
            f"{what}={dtype} holds {kind}, which cannot be stored as a tensor. "
            "Convert the array to a fixed-width numeric or bool dtype first "
            f"(supported: {', '.join(_SUPPORTED_BY_NAME)})."
        )
    native = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    native = np.dtype(native.name) if native.name in _SUPPORTED_BY_NAME else native
    if native.name not in _SUPPORTED_BY_NAME or native.byteorder == ">":
        raise SpecError(
            f"{what}={dtype} is not supported by TensorFlow. Supported: "
            f"{', '.join(_SUPPORTED_BY_NAME)}."
        )
    return native


def check_feature_name(name: Any, *, what: str = "feature name") -> str:
    """Returns `name` if it can key a feature, else raises SpecError."""
    if not isinstance(name, str) or not _FEATURE_NAME.fullmatch(name):
        raise SpecError(
            f"{what}={name!r} is not valid: use letters, digits and '_', not "
            "starting with a digit (for example 'x' or 'image_2d')."
        )
    return name


def spec_of(array_like: Any, *, name: str) -> FeatureSpec:
    """The spec of an array whose first axis indexes examples."""
    shape = tuple(array_like.shape)
    if not shape:
        raise SpecError(
            f"Feature {name!r} is a 0-d array (shape=()): the first axis must "
            "index examples. Reshape it to (num_examples, ...)."
        )
    return FeatureSpec(
        dtype=normalize_dtype(array_like.dtype, what=f"{name}.dtype"), shape=shape[1:]
    )

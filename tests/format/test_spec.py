import numpy as np
import pytest

from tfds_bigarrays._format.spec import (
    SUPPORTED_DTYPES,
    FeatureSpec,
    SpecError,
    check_feature_name,
    normalize_dtype,
    spec_of,
)


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
def test_supported_dtypes_are_native_little_endian(dtype):
    assert normalize_dtype(dtype) == dtype
    assert normalize_dtype(dtype.newbyteorder(">")) == dtype


@pytest.mark.parametrize(
    "dtype, match",
    [
        (object, "Python objects"),
        ("U3", "unicode strings"),
        ("S3", "byte strings"),
        ([("a", "i4"), ("b", "f4")], "structured"),
        ("M8[s]", "datetimes"),
        (np.longdouble, "not supported by TensorFlow"),
    ],
)
def test_unsupported_dtypes_are_refused_with_the_fix(dtype, match):
    if np.dtype(dtype) == np.float64:  # platforms where longdouble is double
        pytest.skip("longdouble is float64 here")
    with pytest.raises(SpecError, match=match):
        normalize_dtype(dtype, what="x.dtype")


def test_spec_of_uses_rows_and_names_the_feature():
    spec = spec_of(np.zeros((5, 2, 3), ">f4"), name="x")
    assert spec == FeatureSpec(dtype=np.dtype("float32"), shape=(2, 3))
    assert spec.row_bytes == 24
    with pytest.raises(SpecError, match="'x' is a 0-d array"):
        spec_of(np.float32(1.0), name="x")


def test_spec_json_round_trip():
    spec = FeatureSpec(dtype=np.dtype("uint16"), shape=(0, 4))
    assert FeatureSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("name", ["1x", "a b", "../x", "", "x/y", 3])
def test_bad_feature_names(name):
    with pytest.raises(SpecError, match="is not valid"):
        check_feature_name(name)

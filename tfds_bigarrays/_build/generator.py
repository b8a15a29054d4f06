"""Generator sources: rows from Python code, with declared specs.

A generator can only be read once, forward, and its length is unknown until
it ends, while a build needs row ranges (and Beam workers need to read them
independently). So its rows are checked one by one against the declared
specs and spooled, in blocks, to headerless files; the build then reads those
like any other file source, and the spool is deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from tfds_bigarrays._build.sources import RawFileSource, SourceError
from tfds_bigarrays._format.spec import FeatureSpec, check_feature_name

_SPOOL_BLOCK_BYTES = 4 << 20


@dataclasses.dataclass(frozen=True)
class GeneratorSplit:
    """A split whose rows come from a generator; see `from_generator`."""

    rows: Callable[[], Iterable[Any]] | Iterable[Any]
    specs: Mapping[str, FeatureSpec]


def from_generator(
    rows: Callable[[], Iterable[Any]] | Iterable[Any],
    *,
    specs: Mapping[str, FeatureSpec | tuple[Any, tuple[int, ...]]],
) -> GeneratorSplit:
    """Declares a split whose rows a generator yields.

    Args:
      rows: a function returning an iterable, or an iterable, of rows; a row
        is a dict feature -> value, or a tuple in the order of `specs`.
      specs: feature -> `FeatureSpec` or `(dtype, row_shape)`.

    Returns:
      A value to put in `splits=`: `{"train": from_generator(...)}`.
    """
    if not callable(rows) and not isinstance(rows, Iterable):
        raise SourceError(f"rows={rows!r} must be a generator function or an iterable.")
    if not isinstance(specs, Mapping) or not specs:
        raise SourceError(f"specs={specs!r} must map feature names to (dtype, shape).")
    normalized = {}
    for name, spec in specs.items():
        check_feature_name(name, what="specs feature name")
        if not isinstance(spec, FeatureSpec):
            try:
                dtype, shape = spec
            except (TypeError, ValueError) as e:
                raise SourceError(
                    f"specs[{name!r}]={spec!r} must be a FeatureSpec or (dtype, shape)."
                ) from e
            spec = FeatureSpec(dtype=dtype, shape=tuple(shape))
        normalized[name] = spec
    return GeneratorSplit(rows=rows, specs=normalized)


def _check_row(index: int, name: str, value: Any, spec: FeatureSpec, split: str) -> np.ndarray:
    where = f"split {split!r}, row {index}, feature {name!r}"
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
            raise SourceError(
                f"{where}: dtype {arr.dtype} but the declared spec is {spec}. Yield "
                f"{spec.dtype} values (e.g. .astype({spec.dtype.name!r})) or fix the spec."
            )
    else:
        try:
            arr = np.asarray(value, dtype=spec.dtype)
        except (TypeError, ValueError) as e:
            raise SourceError(f"{where}: {value!r} is not a {spec}: {e}") from e
    if arr.shape != spec.shape:
        raise SourceError(
            f"{where}: shape {arr.shape} but the declared spec is {spec}. Every row of a "
            "feature needs the same shape."
        )
    return arr


def spool(
    split: str, generated: GeneratorSplit, directory: str | os.PathLike
) -> dict[str, RawFileSource]:
    """Checks and writes every row; returns file sources over the spooled rows."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    names = list(generated.specs)
    paths = {n: os.path.join(directory, f"{split}-{n}.rows") for n in names}
    files = {n: open(paths[n], "wb") for n in names}  # noqa: SIM115 - closed below
    row_bytes = max(1, sum(s.row_bytes for s in generated.specs.values()))
    flush_every = max(1, _SPOOL_BLOCK_BYTES // row_bytes)
    buffers: dict[str, list[np.ndarray]] = {n: [] for n in names}
    count = 0
    try:
        rows = generated.rows() if callable(generated.rows) else generated.rows
        for index, row in enumerate(rows):
            if isinstance(row, Mapping):
                if set(row) != set(names):
                    raise SourceError(
                        f"split {split!r}, row {index}: features {sorted(row)} but the "
                        f"declared specs have {sorted(names)}."
                    )
                values = row
            else:
                row = tuple(row) if isinstance(row, (tuple, list)) else (row,)
                if len(row) != len(names):
                    raise SourceError(
                        f"split {split!r}, row {index}: {len(row)} values but the declared "
                        f"specs have {len(names)} features {names}."
                    )
                values = dict(zip(names, row, strict=True))
            for name in names:
                buffers[name].append(
                    _check_row(index, name, values[name], generated.specs[name], split)
                )
            count += 1
            if count % flush_every == 0:
                _flush(buffers, files, generated.specs)
        _flush(buffers, files, generated.specs)
    finally:
        for f in files.values():
            f.close()
    return {
        n: RawFileSource(
            paths[n],
            dtype=generated.specs[n].dtype,
            shape=(count, *generated.specs[n].shape),
            description=f"generator of split {split!r} ({n})",
        )
        for n in names
    }


def _flush(buffers, files, specs) -> None:
    for name, rows in buffers.items():
        if rows:
            block = np.stack(rows).astype(specs[name].dtype, copy=False)
            files[name].write(np.ascontiguousarray(block).tobytes())
            rows.clear()

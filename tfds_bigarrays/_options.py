"""Read options that `tfds.ReadConfig` has no field for (no TensorFlow here)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """Read settings that `tfds.ReadConfig` has no field for.

    Attributes:
      memory_budget: bytes that the pipeline's buffers may hold together
        (shuffle buffer, interleave, groups, prefetch, tf.data autotuning).
        None: the value recorded at build time (`--memory-budget`), else the
        environment variable TFDS_BIGARRAYS_MEMORY_BUDGET, else 128 MiB.
      verify_checksums: check every record's CRC32C while reading (as
        `TFRecordDataset` does). Costs CPU on small rows. None: on unless the
        environment variable TFDS_BIGARRAYS_VERIFY_CHECKSUMS is "0".
    """

    memory_budget: int | None = None
    verify_checksums: bool | None = None


_OPTIONS: contextvars.ContextVar[ReadOptions | None] = contextvars.ContextVar(
    "tfds_bigarrays_read_options", default=None
)


@contextlib.contextmanager
def read_options(**kwargs: Any) -> Iterator[ReadOptions]:
    """Applies `ReadOptions(**kwargs)` to `tfds.load` calls in this block.

    Example::

        with tfds_bigarrays.read_options(memory_budget=512 * 2**20):
            ds = tfds.load("my_arrays", split="train", shuffle_files=True)
    """
    options = ReadOptions(**kwargs)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)

"""An array source that stalls the first worker to read it, for kill tests.

Imported by name on Dask workers (the test puts `tests/build/` on their
PYTHONPATH), so it is a module of its own rather than a class in a test.
"""

from __future__ import annotations

import os
import pathlib
import time

import numpy as np

from tfds_bigarrays._format.spec import FeatureSpec


class GatedSource:
    """Rows of `array`; the first process to read them waits at the gate.

    The first reader (whoever creates `gate/claimed` first) writes its pid to
    `gate/claimed` and blocks until `gate/open` exists, so a test can kill
    exactly that worker mid-shard. Every other read goes straight through.
    """

    def __init__(self, array: np.ndarray, gate: str | os.PathLike):
        self._array = array
        self._gate = os.fspath(gate)

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(dtype=self._array.dtype, shape=self._array.shape[1:])

    @property
    def description(self) -> str:
        return "gated array"

    def __len__(self) -> int:
        return len(self._array)

    def read(self, start: int, stop: int) -> np.ndarray:
        gate = pathlib.Path(self._gate)
        try:
            fd = os.open(gate / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            deadline = time.monotonic() + 120
            while not (gate / "open").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return self._array[start:stop]

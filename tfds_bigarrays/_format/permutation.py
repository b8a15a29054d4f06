"""A keyed pseudo-random permutation of [0, n), computed row by row.

Used to write a dataset in a shuffled stored order without holding a
permutation table (8 bytes a row would be gigabytes for big arrays): a
four-round Feistel network on the smallest even number of bits covering n,
with cycle-walking back into [0, n). Pure numpy, vectorized.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_ROUNDS = 4
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a strong 64-bit integer hash."""
    x = x * _M1
    x ^= x >> np.uint64(30)
    x *= _M2
    x ^= x >> np.uint64(27)
    x *= _M3
    x ^= x >> np.uint64(31)
    return x


@dataclasses.dataclass(frozen=True, kw_only=True)
class Permutation:
    """Bijection of [0, n) keyed by `seed`; `perm(indices)` maps stored -> source row."""

    n: int
    seed: int
    _round_keys: tuple[int, ...] = dataclasses.field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be a non-negative int.")
        if self.n < 1:
            raise ValueError(f"n={self.n!r} must be >= 1.")
        base = np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)
        with np.errstate(over="ignore"):
            keys = _mix(base + np.arange(1, _ROUNDS + 1, dtype=np.uint64))
        object.__setattr__(self, "_round_keys", tuple(keys.tolist()))

    @property
    def _half_bits(self) -> int:
        return max(1, (int(self.n - 1).bit_length() + 1) // 2)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        half = np.uint64(self._half_bits)
        mask = np.uint64((1 << self._half_bits) - 1)
        left, right = x >> half, x & mask
        with np.errstate(over="ignore"):
            for key in self._round_keys:
                left, right = right, left ^ (_mix(right ^ np.uint64(key)) & mask)
        return (left << half) | right

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """Source rows of stored rows `indices` (the read core's twin: tests compare them)."""
        x = np.asarray(indices, np.uint64)
        if x.size and (int(x.max()) >= self.n):
            raise ValueError(f"indices must be < n={self.n}.")
        out = self._encrypt(x)
        # Cycle-walk: the domain is at most 4n, so few rounds are ever needed.
        outside = out >= np.uint64(self.n)
        while outside.any():
            out[outside] = self._encrypt(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)

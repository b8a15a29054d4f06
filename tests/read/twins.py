"""Numpy twins of the read core's epoch orders (core.cc), for the tests.

Pure Python and numpy: test_core checks the core against them, and the plan
tests measure the orders a plan gives without reading anything.
"""

from __future__ import annotations

import numpy as np

from tfds_bigarrays._format.permutation import Permutation

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x = (x * 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def row_order_twin(seed: int, group: int, n: int) -> list[int]:
    """Fisher-Yates on a splitmix64 stream keyed by (seed, group), in Python."""
    state = _mix(_mix(seed) ^ group)
    out = list(range(n))
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        j = (_mix(state) * (i + 1)) >> 64
        out[i], out[j] = out[j], out[i]
    return out


def epoch_twin(num_rows, block_rows, group_blocks, seed, window_groups=1) -> list[np.ndarray]:
    """Split rows of each group of a shuffled epoch, in output order."""
    num_blocks = -(-num_rows // block_rows)
    full = num_rows // block_rows
    if window_groups > 1:
        return dealt_twin(num_rows, block_rows, group_blocks, seed, window_groups)
    groups = []
    for g in range(-(-num_blocks // group_blocks)):
        positions = np.arange(g * group_blocks, min((g + 1) * group_blocks, num_blocks))
        blocks = positions.copy()
        if full >= 2:
            inside = positions < full
            blocks[inside] = Permutation(n=full, seed=seed)(positions[inside])
        rows = np.concatenate(
            [np.arange(b * block_rows, min((b + 1) * block_rows, num_rows)) for b in blocks]
        )
        dest = row_order_twin(seed, g, len(rows))
        out = np.empty_like(rows)
        out[dest] = rows
        groups.append(out)
    return groups


def dealt_twin(num_rows, block_rows, group_blocks, seed, window_groups) -> list[np.ndarray]:
    """Groups when windows of `window_groups` groups deal their rows (core.cc's Dealt)."""
    full = num_rows // block_rows
    # Epoch position e holds row e % block_rows of the block at position e // block_rows.
    e = np.arange(num_rows)
    p = e // block_rows
    block = p.copy()
    if full >= 2:
        inside = p < full
        block[inside] = Permutation(n=full, seed=seed)(p[inside])
    row_at = block * block_rows + e % block_rows
    rows = block_rows * group_blocks
    window_rows = window_groups * rows
    groups = []
    for first in range(0, num_rows, window_rows):
        size = min(num_rows, first + window_rows) - first
        key = _mix(_mix(seed) ^ (first // window_rows + 1))
        slots = first + Permutation(n=size, seed=key)(np.arange(size))
        groups += [row_at[slots[s : s + rows]] for s in range(0, size, rows)]
    return groups

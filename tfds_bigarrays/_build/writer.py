"""Shard writer: row ranges of sources to TFRecord files, block by block.

The one writer used by every build path: the local build calls
`write_shard` in a loop, the Beam build calls it once per element.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Mapping

import numpy as np
from etils import epath

from tfds_bigarrays._build.plan import DEFAULT_BLOCK_BYTES, RowRange, block_ranges
from tfds_bigarrays._build.sources import ArraySource, SourceError
from tfds_bigarrays._format.permutation import Permutation
from tfds_bigarrays._format.records import RecordCodec


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardResult:
    index: int
    path: str
    num_examples: int
    num_bytes: int


def _read_block(
    source: ArraySource, start: int, stop: int, permutation: Permutation | None
) -> np.ndarray:
    if permutation is None:
        return source.read(start, stop)
    wanted = permutation(np.arange(start, stop))
    order = np.argsort(wanted)
    rows = source.take(wanted[order])  # type: ignore[attr-defined]  # sorted: fewer seeks
    out = np.empty_like(rows)
    out[order] = rows
    return out


def write_shard(
    *,
    sources: Mapping[str, ArraySource],
    rows: RowRange,
    path: epath.PathLike,
    codec: RecordCodec,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    permutation: Permutation | None = None,
    on_block: Callable[[int, int], None] | None = None,
) -> ShardResult:
    """Encodes rows `rows` of `sources` into one TFRecord file at `path`.

    The file appears under its final name only once complete (written to a
    unique temporary name, then renamed), so a retried or killed writer never
    leaves a partial shard under a shard's name.

    Args:
      sources: feature name -> source, all of the same length.
      rows: the rows to write.
      path: the shard's final path.
      codec: the record codec of the dataset's specs.
      block_bytes: bound on the bytes encoded at once.
      permutation: if given, stored row i holds source row `permutation(i)`.
      on_block: called with (examples, bytes) after each block, for progress.

    Returns:
      A `ShardResult`.
    """
    path = epath.Path(path)
    tmp = path.parent / f"{path.name}.incomplete-{uuid.uuid4().hex}"
    written = 0
    try:
        with tmp.open("wb") as f:
            for start, stop in block_ranges(
                rows.start, rows.stop, frame_bytes=codec.frame_bytes, block_bytes=block_bytes
            ):
                columns = {}
                for name, source in sources.items():
                    block = _read_block(source, start, stop, permutation)
                    if len(block) != stop - start:
                        raise SourceError(
                            f"{name}={source.description}: asked for rows "
                            f"[{start}, {stop}) and got {len(block)}; the source "
                            "changed or is shorter than it said."
                        )
                    columns[name] = block
                data = codec.frame(codec.encode(columns))
                f.write(data)
                written += len(data)
                if on_block is not None:
                    on_block(stop - start, len(data))
        tmp.rename(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return ShardResult(
        index=rows.index, path=os.fspath(path), num_examples=len(rows), num_bytes=written
    )

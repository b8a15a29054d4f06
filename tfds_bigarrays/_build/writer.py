"""Shard writer: row ranges of sources to TFRecord files, block by block.

The one writer of every build path: a build is a list of `ShardTask`s, and
`run_task` writes one; the local build runs them in a loop, the Beam build
one per element (`beam.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping

import google_crc32c
import numpy as np
from etils import epath

from tfds_bigarrays._build.plan import DEFAULT_BLOCK_BYTES, RowRange, block_ranges
from tfds_bigarrays._build.sources import ArraySource, SourceError
from tfds_bigarrays._format.permutation import Permutation
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._format.spec import FeatureSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardResult:
    """What was written: the shard's rows, bytes, and the CRC32C of its file."""

    index: int
    path: str
    num_examples: int
    num_bytes: int
    crc32c: int


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
    written, crc = 0, 0
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
                crc = google_crc32c.extend(crc, data)
                if on_block is not None:
                    on_block(stop - start, len(data))
        tmp.rename(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return ShardResult(
        index=rows.index,
        path=os.fspath(path),
        num_examples=len(rows),
        num_bytes=written,
        crc32c=crc,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardTask:
    """Everything a worker needs to write one shard (small and picklable)."""

    sources: Mapping[str, ArraySource]
    specs: Mapping[str, FeatureSpec]
    rows: RowRange
    path: str
    permutation: Permutation | None = None
    block_bytes: int = DEFAULT_BLOCK_BYTES


RECEIPT_SUFFIX = ".written.json"


def receipt_path(shard_path: str) -> epath.Path:
    """Where the worker that wrote `shard_path` leaves its receipt."""
    return epath.Path(shard_path + RECEIPT_SUFFIX)


def run_task(task: ShardTask, *, on_block: Callable[[int, int], None] | None = None) -> ShardResult:
    """Writes one shard and its receipt; what both build paths call per shard.

    The receipt (which worker wrote the shard, how many bytes, how long it
    took) travels back to the driver through the file system, because Beam
    runners have no common way to return results; the driver checks every
    shard against it and folds the receipts into the layout's provenance.
    """
    start = time.perf_counter()
    result = write_shard(
        sources=task.sources,
        rows=task.rows,
        path=task.path,
        codec=RecordCodec(task.specs),
        permutation=task.permutation,
        block_bytes=task.block_bytes,
        on_block=on_block,
    )
    receipt = {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "num_examples": result.num_examples,
        "num_bytes": result.num_bytes,
        "crc32c": result.crc32c,
        "seconds": round(time.perf_counter() - start, 3),
    }
    final = receipt_path(task.path)
    tmp = final.parent / f"{final.name}.incomplete-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(receipt))
    tmp.rename(final)
    return result

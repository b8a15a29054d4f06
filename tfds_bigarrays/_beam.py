"""Beam build: each element is one shard's row range, written in the worker.

TFDS's own Beam writer sends every serialized example through a GroupByKey
to assign shards, and Beam's DirectRunner holds such data in memory. Here the
only thing that travels through the pipeline is a small `ShardTask` (which
rows, from which sources, to which file); the worker reads its rows from the
source, encodes them with the same `write_shard` as the local build and writes
the file. So the output is byte-identical to a local build, memory stays
bounded, and the runner only schedules tasks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tfds_bigarrays._encoding import RecordCodec
from tfds_bigarrays._permutation import Permutation
from tfds_bigarrays._plan import DEFAULT_BLOCK_BYTES, RowRange
from tfds_bigarrays._sources import ArraySource
from tfds_bigarrays._spec import FeatureSpec
from tfds_bigarrays._writer import ShardResult, write_shard

INSTALL_HINT = "Apache Beam is not installed: pip install 'tfds-bigarrays[beam]'."


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardTask:
    """Everything a worker needs to write one shard (small and picklable)."""

    sources: Mapping[str, ArraySource]
    specs: Mapping[str, FeatureSpec]
    rows: RowRange
    path: str
    permutation: Permutation | None = None
    block_bytes: int = DEFAULT_BLOCK_BYTES


def run_task(task: ShardTask, *, on_block: Callable[[int, int], None] | None = None) -> ShardResult:
    """Writes one shard; the function both build paths call per shard."""
    return write_shard(
        sources=task.sources,
        rows=task.rows,
        path=task.path,
        codec=RecordCodec(task.specs),
        permutation=task.permutation,
        block_bytes=task.block_bytes,
        on_block=on_block,
    )


def pipeline_options(flags: Sequence[str] | str | Any | None) -> Any:
    """PipelineOptions from 'k=v,k=v', a flag list, or options (passed through).

    With no runner given: Beam's DirectRunner in multi-processing mode, one
    worker per core.
    """
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    if flags is not None and not isinstance(flags, (str, list, tuple)):
        return flags  # already PipelineOptions (e.g. from `tfds build`)
    if isinstance(flags, str):
        flags = [f"--{item.strip()}" for item in flags.split(",") if item.strip()]
    flags = list(flags or [])
    if not any(f.startswith("--runner") for f in flags):
        flags += [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={os.cpu_count() or 1}",
        ]
    return PipelineOptions(flags)


def write_with_beam(tasks: Sequence[ShardTask], *, options: Any) -> None:
    """Runs one Beam pipeline that writes every task's shard."""
    try:
        import apache_beam as beam
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    with beam.Pipeline(options=pipeline_options(options)) as pipeline:
        _ = (
            pipeline
            | "Tasks" >> beam.Create(list(tasks))
            # Spread the (tiny) tasks over the workers; no row data moves here.
            | "Spread" >> beam.Reshuffle()
            | "WriteShards" >> beam.Map(run_task)
        )

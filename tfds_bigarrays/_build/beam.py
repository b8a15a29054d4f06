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
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etils import epath

from tfds_bigarrays._build.plan import DEFAULT_BLOCK_BYTES, RowRange
from tfds_bigarrays._build.sources import ArraySource
from tfds_bigarrays._build.writer import ShardResult, write_shard
from tfds_bigarrays._errors import MissingDependencyError
from tfds_bigarrays._format.permutation import Permutation
from tfds_bigarrays._format.records import RecordCodec
from tfds_bigarrays._format.spec import FeatureSpec

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
        "seconds": round(time.perf_counter() - start, 3),
    }
    final = receipt_path(task.path)
    tmp = final.parent / f"{final.name}.incomplete-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(receipt))
    tmp.rename(final)
    return result


def pipeline_options(flags: Sequence[str] | str | Any | None) -> Any:
    """PipelineOptions from 'k=v,k=v', a flag list, or options (passed through).

    With no runner given: Beam's DirectRunner in multi-processing mode, one
    worker per core.
    """
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as e:
        raise MissingDependencyError(INSTALL_HINT) from e
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


def _spread_over_dask(options: Any) -> None:
    """One task per Dask partition unless the user chose a partitioning.

    Beam's Dask runner puts 128 elements into each bag partition by default,
    so a build of fewer than 128 shards would run on one worker only.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    if "Dask" not in str(options.view_as(StandardOptions).runner or ""):
        return
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    if not dask.npartitions and not dask.partition_size:
        dask.partition_size = 1


def write_with_beam(tasks: Sequence[ShardTask], *, options: Any) -> None:
    """Runs one Beam pipeline that writes every task's shard."""
    try:
        import apache_beam as beam
    except ImportError as e:
        raise MissingDependencyError(INSTALL_HINT) from e
    options = pipeline_options(options)
    _spread_over_dask(options)
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Tasks" >> beam.Create(list(tasks))
        # Spread the (tiny) tasks over the workers; no row data moves here.
        | "Spread" >> beam.Reshuffle()
        | "WriteShards" >> beam.Map(run_task)
    )
    result = pipeline.run()
    client = getattr(result, "client", None)  # Beam's Dask runner only
    try:
        result.wait_until_finish()
    except BaseException:
        if client is not None:
            # Tasks still running would go on writing into a folder that
            # TFDS is about to delete.
            client.cancel(result.futures)  # type: ignore[attr-defined]
        raise
    finally:
        # The Dask runner leaves its distributed.Client open, which keeps
        # reconnecting (and logging) after the cluster goes away.
        if client is not None:
            client.close()

"""Beam build: each element is one shard's `ShardTask`, run in the worker.

TFDS's own Beam writer sends every serialized example through a GroupByKey
to assign shards, and Beam's DirectRunner holds such data in memory. Here the
only thing that travels through the pipeline is a small `ShardTask` (which
rows, from which sources, to which file); the worker reads its rows from the
source, encodes them with the same `run_task` as the local build and writes
the file. So the output is byte-identical to a local build, memory stays
bounded, and the runner only schedules tasks.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import tqdm

from tfds_bigarrays._build.writer import ShardTask, run_task
from tfds_bigarrays._errors import MissingDependencyError, TfdsBigarraysError

INSTALL_HINT = "Apache Beam is not installed: pip install 'tfds-bigarrays[beam]'."


class BeamOptionsError(TfdsBigarraysError, ValueError):
    """Beam pipeline options that name no runner Beam can make."""


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
    options = PipelineOptions(flags)
    _check_runner(options, given=",".join(f.removeprefix("--") for f in flags))
    return options


def _check_runner(options: Any, *, given: str) -> None:
    """Refuses an unknown runner when the options are read, not mid-build."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import create_runner

    runner = options.view_as(StandardOptions).runner
    if not isinstance(runner, str):
        return  # a runner object, or Beam's default
    try:
        create_runner(runner)
    except (ValueError, ImportError, AttributeError) as e:
        raise BeamOptionsError(
            f"beam_options={given!r}: runner {runner!r} is not a runner Beam can "
            "make here; use DirectRunner, PrismRunner, "
            "apache_beam.runners.dask.dask_runner.DaskRunner, FlinkRunner, SparkRunner or "
            f"DataflowRunner (docs/scaling.md). Beam said: {' '.join(str(e).split())[:200]}"
        ) from None


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


@contextlib.contextmanager
def _progress(tasks: Sequence[ShardTask], *, every: float = 0.5) -> Iterator[None]:
    """A progress bar over the shards written, while the pipeline runs.

    Beam reports no progress to the process that launched it; a finished
    task is a shard file in place (written beside, then renamed), so the bar
    counts those. Files on remote file systems (gs://...) are not polled.
    """
    local = [t for t in tasks if "://" not in t.path]
    if not local:
        yield
        return
    done = threading.Event()
    examples = {id(t): len(t.rows) for t in local}

    def poll() -> None:
        waiting = list(local)
        with tqdm.tqdm(
            total=sum(examples.values()),
            desc=f"Writing {len(local)} shards (Beam)",
            unit=" examples",
            unit_scale=True,
            mininterval=0,
        ) as bar:
            while waiting:
                stop = done.wait(every)
                finished = {id(t) for t in waiting if os.path.exists(t.path)}
                bar.update(sum(examples[i] for i in finished))
                waiting = [t for t in waiting if id(t) not in finished]
                if stop:
                    break

    thread = threading.Thread(target=poll, name="beam-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


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
    # Around run() too: the DirectRunner's run() returns only when done.
    with _progress(tasks):
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

"""Read options that `tfds.ReadConfig` has no field for, resolved in one place.

No TensorFlow here. `resolve` is the only place an option's value is decided,
in this order: an explicit `ReadOptions` argument, else the innermost
`read_options(...)` block; then, for each field left None, the environment
variable (see `_env`); then what the dataset recorded at build time; then
the default.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

from tfds_bigarrays import _env
from tfds_bigarrays._read.plan import ReadError, check_budget


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """Read settings that `tfds.ReadConfig` has no field for.

    Attributes:
      memory_budget: bytes that the pipeline's buffers may hold together
        (groups being read, prefetched batches; with sequential access also
        the shuffle buffer, interleave and tf.data autotuning).
        None: the value recorded at build time (`--memory-budget`), else the
        environment variable TFDS_BIGARRAYS_MEMORY_BUDGET, else 128 MiB.
      verify_checksums: check every record's CRC32C while reading (as
        `TFRecordDataset` does). Costs CPU on small rows. None: on unless the
        environment variable TFDS_BIGARRAYS_VERIFY_CHECKSUMS is "0". Not
        available with `data_service` (the check runs NumPy, which a tf.data
        service worker cannot run); there every record's frame header and
        layout are still checked, and `tfds-bigarrays verify` checks CRCs.
      data_service: address of a tf.data service dispatcher, e.g.
        "grpc://host:5050": reading and decoding run on its workers, which
        must see the dataset's files at the same paths; the trainer only
        rebatches and prefetches. None: the environment variable
        TFDS_BIGARRAYS_DATA_SERVICE, else read in this process; "": read in
        this process whatever the environment says (e.g. for evaluation).
        Through the service, shuffled orders are never reproducible (a shard
        goes to whichever worker asks first): `shuffle_seed` and the global
        seed do not apply, and every epoch is shuffled afresh.
      data_service_mode: "distributed_epoch" (each shard goes to one worker:
        every example exactly once per epoch while no worker fails) or
        "parallel_epochs" (each worker reads the whole split, in its own
        order: each example once per worker).
      data_service_job: a job name to share: trainers that use the same name
        share one stream of data (in distributed_epoch mode, split one epoch
        between them). None: a job of this dataset's own.
      access: how shards are read. "random": blocks of rows at computed
        offsets, in a permuted order when shuffling (a full per-epoch
        permutation of blocks, no shuffle buffer); needs shards on a local
        or mounted file system. "sequential": tf.data's file readers stream
        whole shards, interleaved and shuffled in a byte-bounded buffer;
        works on any file system TensorFlow reads (gs://, s3://...) and
        through the tf.data service. "mapped": "random", but the shards
        are memory-mapped and kept mapped across epochs, so rows are copied
        out of the page cache without a read call (in the last benchmark run:
        14% less CPU per example on 16 KiB rows, 16% on 128-byte rows; see
        README, "Measured"). The price: the pages read stay
        in the process's resident memory (shared, clean, reclaimable), so
        its RSS grows to the size of the split. For splits that fit in RAM
        comfortably; a shard truncated while mapped kills the process
        (SIGBUS). "auto" (default): "random" where it can, else "sequential".
      mixing: how random access mixes rows stored side by side when
        shuffling. "rows": where blocks hold several rows and a batch is one
        group, the rows of a window of batches' blocks are dealt among those
        batches (1-3.3% of stored neighbours share a batch of 256, as
        against 4-5.4% for tf.data's shuffle(3000)); the window's blocks wait in
        the page cache, so it costs speed when the page cache cannot hold
        them. "blocks": a batch takes whole blocks (up to 128 KiB of
        consecutive rows: for rows of 1 to 32 KiB, 50-98% of neighbours share
        a batch), the fastest read from disk. "auto" (default): "rows",
        unless the split is bigger than half the memory of this machine (or
        of its memory cgroup), where its reads come from disk: "blocks". So
        with "auto" the shuffled order depends on the memory too: set it for
        the same order on every machine (workers sharding by data). The
        measurements are in docs/shuffle_quality.md and docs/bigger_than_ram.md.
    """

    memory_budget: int | None = None
    verify_checksums: bool | None = None
    data_service: str | None = None
    data_service_mode: str = "distributed_epoch"
    data_service_job: str | None = None
    access: str = "auto"
    mixing: str = "auto"

    def __post_init__(self) -> None:
        if self.memory_budget is not None:
            check_budget(self.memory_budget)
        if self.verify_checksums is not None and not isinstance(self.verify_checksums, bool):
            raise ReadError(
                f"verify_checksums={self.verify_checksums!r} must be True, False or None."
            )
        if self.access not in _ACCESS:
            raise ReadError(
                f"access={self.access!r} is not a way of reading shards; use one of "
                f"{', '.join(map(repr, _ACCESS))}."
            )
        if self.mixing not in _MIXING:
            raise ReadError(
                f"mixing={self.mixing!r} is not a way of mixing rows; use one of "
                f"{', '.join(map(repr, _MIXING))}."
            )
        if self.data_service_mode not in _SERVICE_MODES:
            raise ReadError(
                f"data_service_mode={self.data_service_mode!r} is not a mode of the "
                f"tf.data service; use one of {', '.join(map(repr, _SERVICE_MODES))}."
            )
        if self.data_service and "://" not in self.data_service:
            raise ReadError(
                f"data_service={self.data_service!r} is not a dispatcher address; "
                "write it with its protocol, e.g. 'grpc://localhost:5050'."
            )


_SERVICE_MODES = ("distributed_epoch", "parallel_epochs")
_ACCESS = ("auto", "random", "mapped", "sequential")
_MIXING = ("auto", "rows", "blocks")


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


def given(options: ReadOptions | None = None) -> ReadOptions:
    """The options the caller gave: the argument, else the innermost block."""
    return options or _OPTIONS.get() or ReadOptions()


def resolve(options: ReadOptions | None = None, *, recorded_budget: int) -> ReadOptions:
    """The options in effect, every field decided (see the module docstring).

    Args:
      options: an explicit argument; None takes the innermost `read_options`.
      recorded_budget: the memory budget the dataset was built with.

    Returns:
      `ReadOptions` with `memory_budget`, `verify_checksums` set, and
      `data_service` None unless a dispatcher is in effect.
    """
    options = given(options)
    budget = options.memory_budget
    if budget is None:
        budget = _env.get(_env.MEMORY_BUDGET)
    if budget is None:
        budget = recorded_budget
    service = options.data_service
    if service is None:
        service = _env.get(_env.DATA_SERVICE)
    verify = options.verify_checksums
    if verify is None:
        verify = _env.get(_env.VERIFY_CHECKSUMS)
    if verify is None:
        verify = True
    return dataclasses.replace(
        options, memory_budget=budget, verify_checksums=verify, data_service=service or None
    )

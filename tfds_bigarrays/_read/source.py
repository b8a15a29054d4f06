"""Random access to a split without TensorFlow: Grain, PyTorch, JAX, Keras 3.

`ArraysDataSource` is what `tfds.data_source` returns for a dataset of ours
(and `tfds.builder(...).as_data_source(...)`, and `tfds_bigarrays.data_source`):
a sequence of examples, each a dict of numpy arrays, read by the read core
(`core.Reader.read_rows`): any rows in one call, adjacent ones read together,
every record's frame, layout and CRC32C checked. It follows Grain's
`RandomAccessDataSource` protocol and is a PyTorch map-style dataset
(`__getitems__` is what a `DataLoader` with a batch size calls).

It pickles to its configuration: each worker process opens the shards again
(and checks that they are the ones the source was made from); no rows travel
through the pickle. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfds_bigarrays._format.layout import Layout, read_layout
from tfds_bigarrays._read import core
from tfds_bigarrays._read.features import check_layout_with_builder
from tfds_bigarrays._read.options import ReadOptions, resolve
from tfds_bigarrays._read.plan import ReadError, shard_reads

Example = dict[str, np.ndarray]


class ArraysDataSource(Sequence):
    """The examples of one split of a tfds_bigarrays dataset, by index.

    Attributes:
      name: the dataset's name and split, for messages (`"my_arrays/train[:10%]"`).
    """

    def __init__(self, reader: core.Reader, *, name: str) -> None:
        self._reader = reader
        self.name = name

    def __len__(self) -> int:
        return self._reader.num_rows

    def __getitem__(self, index: Any) -> Any:
        """One example (a dict of numpy arrays) for an int.

        A slice gives a list of examples, as TFDS's data sources do. A
        sequence or array of ints gives the batch, one stacked array per
        feature, as numpy's indexing does (`read_batch`): so a PyTorch
        `DataLoader(source, sampler=BatchSampler(...), batch_size=None)` reads
        each batch in one call and skips per-example collation.
        """
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        if isinstance(index, (list, tuple, np.ndarray)):
            return self.read_batch(index)
        i = self._index(index)
        # `[0, ...]`: an array of the row's shape, 0-d included (not a numpy scalar).
        return {k: v[0, ...] for k, v in self._reader.read_rows([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        """The examples at `indices`, read in one call (Grain, PyTorch's DataLoader)."""
        batch = self.read_batch(indices)
        return [{k: v[j, ...] for k, v in batch.items()} for j in range(len(indices))]

    # Grain's batched-read protocol (`SupportsBatchedReadRandomAccessDataSource`).
    _getitems = __getitems__

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Example:
        """The examples at `indices` as one array per feature (no per-example objects)."""
        rows = np.asarray(indices)
        if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
            raise ReadError(
                f"indices={indices!r} must be a sequence of ints (example numbers of {self.name})."
            )
        n = len(self)
        rows = np.where(rows < 0, rows + n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = indices[int(np.argmax((rows < 0) | (rows >= n)))]
            raise IndexError(f"index {bad} is out of range for {self.name} ({n} examples).")
        return self._reader.read_rows(rows)

    def _index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"index={index!r} must be an int (an example number of {self.name}), a slice, "
                "or a list or array of ints."
            )
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for {self.name} ({n} examples).")
        return i

    def __repr__(self) -> str:
        specs = ", ".join(
            f"{k}: {s}" for k, s in zip(self._reader.names, self._reader.layout.specs, strict=True)
        )
        return f"ArraysDataSource({self.name}, {len(self)} examples, {{{specs}}})"


def source_of(
    builder: Any, layout: Layout, split: Any, *, options: ReadOptions | None = None
) -> ArraysDataSource:
    """The data source of `split` of a built dataset of ours (TFDS builder)."""
    info = builder.info.splits[split]
    reads = shard_reads(info.file_instructions)
    if not reads:  # as stock TFDS says it, for an empty selection such as train[10:10]
        raise ValueError(f"Instruction {info.file_instructions} corresponds to no data!")
    resolved = resolve(options, recorded_budget=layout.memory_budget)
    if resolved.access == "sequential" or resolved.data_service:
        raise ReadError(
            f"access={resolved.access!r} and data_service={resolved.data_service!r} do not "
            "apply to a data source, which reads rows by index in this process."
        )
    reader = core.Reader(
        reads,
        layout.codec(),
        verify=bool(resolved.verify_checksums),
        mapped=resolved.access == "mapped",
    )
    return ArraysDataSource(reader, name=f"{builder.name}/{split}")


def as_data_source(
    builder: Any, split: Any = None, *, options: ReadOptions | None = None, **tfds_kwargs: Any
) -> Any:
    """`DatasetBuilder.as_data_source` for a dataset of ours (None if not ours).

    `split` as TFDS takes it: one split (with slicing), a list or dict of
    them, or None for every split. TFDS's `decoders` and other
    `deserialize_method`s belong to its tf.train.Example machinery, which
    these records do not need; they are refused.
    """
    layout = read_layout(builder.data_path)
    if layout is None:
        return None
    method = tfds_kwargs.pop("deserialize_method", None)
    given = {k: v for k, v in tfds_kwargs.items() if v is not None}
    if given or (method is not None and "DESERIALIZE_AND_DECODE" not in str(method)):
        raise ReadError(
            f"as_data_source({', '.join(f'{k}={v!r}' for k, v in given.items()) or method}) "
            "is not supported for tfds_bigarrays datasets: their examples are read already "
            "decoded. Leave these arguments out."
        )
    check_layout_with_builder(layout, builder)

    def one(s: Any) -> ArraysDataSource:
        return source_of(builder, layout, s, options=options)

    if split is None:
        return {name: one(name) for name in builder.info.splits}
    if isinstance(split, Mapping):
        return {k: one(s) for k, s in split.items()}
    if isinstance(split, (list, tuple)):
        return [one(s) for s in split]
    return one(split)


def data_source(
    name: str, *, split: Any = None, data_dir: Any = None, options: ReadOptions | None = None
) -> Any:
    """A random-access source of a split of one of our datasets, without TensorFlow.

    The same as `tfds.data_source(name, split=..., data_dir=...)` after
    `import tfds_bigarrays`, and also for `namespace:name` registry names.

    Args:
      name: the dataset (`"my_arrays"`, `"my_arrays:1.0.0"`, `"team:my_arrays"`).
      split: a split, with TFDS's slicing (`"train[:10%]"`), a list or dict of
        them, or None for every split.
      data_dir: the TFDS data directory (default: TFDS's).
      options: `ReadOptions` (`verify_checksums`, `access="mapped"`); None:
        the innermost `read_options` block, the environment, the dataset's.

    Returns:
      An `ArraysDataSource` (or a list or dict of them).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    sources = as_data_source(builder, split, options=options)
    if sources is None:
        raise ReadError(
            f"{name} at {builder.data_path} is not a tfds_bigarrays dataset; use "
            "tfds.data_source for other datasets."
        )
    return sources

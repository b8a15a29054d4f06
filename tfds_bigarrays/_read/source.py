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

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfds_bigarrays._format.layout import Layout, read_layout
from tfds_bigarrays._read.features import check_layout_with_builder, class_label_features
from tfds_bigarrays._read.options import ReadOptions, given, resolve
from tfds_bigarrays._read.plan import ReadError, shard_reads

if TYPE_CHECKING:
    from tfds_bigarrays._read import core

Example = dict[str, np.ndarray]


class ArraysDataSource(Sequence):
    """The examples of one split of a tfds_bigarrays dataset, by index.

    Made by `tfds.data_source`, `DatasetBuilder.as_data_source` or
    `tfds_bigarrays.data_source`, not directly.

    Attributes:
      name: the dataset's name and split, for messages (`"my_arrays/train[:10%]"`).
    """

    def __init__(
        self, reader: core.Reader, *, name: str, labels: frozenset[str] = frozenset()
    ) -> None:
        self._reader = reader
        self.name = name
        # ClassLabels: stored as uint32, given as TFDS gives them (int64).
        self._labels = labels

    def _read_rows(self, rows: Sequence[int] | np.ndarray) -> Example:
        out = self._reader.read_rows(rows)
        for name in self._labels:
            out[name] = out[name].astype(np.int64)
        return out

    def __len__(self) -> int:
        return self._reader.num_rows

    def __getitem__(self, index: Any) -> Any:
        """Examples by index.

        Args:
          index: an int (or any `__index__` value: numpy and torch integers,
            a 0-d integer array); a slice; or a list or 1-D array of ints.
            Negative values count from the end.

        Returns:
          For an int, one example: a dict of numpy arrays of the feature's
          dtype (int64 for a ClassLabel, as TFDS gives it) and shape. For a slice, a list of examples. For a list or 1-D
          array, the batch: one stacked array per feature (`read_batch`), so
          that a PyTorch `DataLoader(source, sampler=BatchSampler(...),
          batch_size=None)` reads each batch in one call and skips
          per-example collation.

        Raises:
          IndexError: an index out of range.
          TypeError: an index of another type.
        """
        if isinstance(index, slice):
            return self.__getitems__(range(*index.indices(len(self))))
        if isinstance(index, list) or (isinstance(index, np.ndarray) and index.ndim == 1):
            return self.read_batch(index)
        i = self._index(index)
        # `[0, ...]`: an array of the row's shape, 0-d included (not a numpy scalar).
        return {k: v[0, ...] for k, v in self._read_rows([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        """The examples at `indices`, read in one call (Grain, PyTorch's DataLoader)."""
        batch = self.read_batch(indices)
        return [{k: v[j, ...] for k, v in batch.items()} for j in range(len(batch[self._first]))]

    # Grain's batched-read protocol (`SupportsBatchedReadRandomAccessDataSource`).
    _getitems = __getitems__

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> Example:
        """The examples at `indices` as one array per feature, in one call.

        Args:
          indices: example numbers (ints; negative ones count from the end).
            Runs of adjacent rows are read together.

        Returns:
          A dict of arrays, each of shape `(len(indices), *feature_shape)`.

        Raises:
          IndexError: an index out of range.
          TypeError: `indices` is not a flat sequence of ints.
        """
        rows = np.asarray(indices)
        if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
            raise TypeError(
                f"indices must be a flat sequence of ints (example numbers of {self.name}); "
                f"got {_short(indices)} (shape {rows.shape}, dtype {rows.dtype})."
            )
        n = len(self)
        if rows.dtype == np.uint64 and rows.size and rows.max() > np.iinfo(np.int64).max:
            raise IndexError(
                f"index {int(rows.max())} is out of range for {self.name} ({n} examples)."
            )
        rows = rows.astype(np.int64, copy=False)  # `rows + n` must not wrap in a small dtype
        rows = np.where(rows < 0, rows + n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            bad = np.asarray(indices)[int(np.argmax((rows < 0) | (rows >= n)))]
            raise IndexError(f"index {int(bad)} is out of range for {self.name} ({n} examples).")
        return self._read_rows(rows)

    @property
    def _first(self) -> str:
        return self._reader.names[0]

    def _index(self, index: Any) -> int:
        if isinstance(index, (bool, np.bool_)):
            raise TypeError(f"index={index!r} is a bool; give an example number of {self.name}.")
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"index={_short(index)} must be an int (an example number of {self.name}), "
                "a slice, or a list or 1-D array of ints."
            ) from None
        n = len(self)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"index {i} is out of range for {self.name} ({n} examples).")
        return j

    def __repr__(self) -> str:
        specs = ", ".join(
            f"{k}: {s}" for k, s in zip(self._reader.names, self._reader.layout.specs, strict=True)
        )
        return f"ArraysDataSource({self.name}, {len(self)} examples, {{{specs}}})"


def _short(value: Any) -> str:
    """A value for a one-line message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def source_of(
    builder: Any, layout: Layout, split: Any, *, options: ReadOptions | None = None
) -> ArraysDataSource:
    """The data source of `split` of a built dataset of ours (TFDS builder)."""
    info = builder.info.splits[split]
    reads = shard_reads(info.file_instructions)
    if not reads:  # as stock TFDS says it, for an empty selection such as train[10:10]
        raise ValueError(f"Instruction {info.file_instructions} corresponds to no data!")
    # What the caller asked for is checked; TFDS_BIGARRAYS_DATA_SERVICE, set
    # for tfds.load in the same job, does not concern a data source.
    asked = given(options)
    if asked.data_service:
        raise ReadError(
            f"ReadOptions(data_service={asked.data_service!r}) does not apply to a data "
            "source, which reads rows by index in this process: leave it out, or use tfds.load."
        )
    if asked.access == "sequential":
        raise ReadError(
            "ReadOptions(access='sequential') does not apply to a data source, which reads "
            "rows by index: use access='random' or 'mapped', or tfds.load."
        )
    resolved = resolve(asked, recorded_budget=layout.memory_budget)
    from tfds_bigarrays._read import core  # the native library, loaded on first use

    reader = core.Reader(
        reads,
        layout.codec(),
        verify=bool(resolved.verify_checksums),
        mapped=resolved.access == "mapped",
    )
    return ArraysDataSource(
        reader, name=f"{builder.name}/{split}", labels=class_label_features(builder.info.features)
    )


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
    refused = {k: v for k, v in tfds_kwargs.items() if v is not None}
    if "DESERIALIZE_AND_DECODE" in str(refused.get("deserialize_method")):
        del refused["deserialize_method"]  # TFDS's default: what we do
    if str(refused.get("file_format", "")).lower().endswith("tfrecord"):
        del refused["file_format"]  # the format our datasets are in
    if refused:
        raise ReadError(
            f"as_data_source({', '.join(f'{k}={v!r}' for k, v in refused.items())}) "
            "is not supported for tfds_bigarrays datasets: their examples are read already "
            "decoded, from TFRecord shards. Leave these arguments out."
        )
    builder.assert_is_not_blocked()
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
      options: `ReadOptions` (`verify_checksums`, `access="random"` or
        `"mapped"`); None: the innermost `read_options` block, the
        environment, the dataset's. A data source holds no buffers and reads
        in this process: `memory_budget` and the data service fields do not
        apply (an explicit `data_service` or `access="sequential"` is refused).

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

"""Read path: a built dataset as a shuffled, batch-decoded tf.data pipeline.

Records are batched while still serialized and decoded a whole batch at a
time: every record of a dataset has the same layout (see `_encoding`), so a
batch is one `(B, record_bytes)` uint8 matrix and each feature is a column
slice of it, bit-cast to its dtype. No per-example proto parsing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_bigarrays._encoding import BYTES, RecordCodec
from tfds_bigarrays._layout import Layout

# Decode unbatched reads in blocks this big, then unbatch: decoding one record
# at a time costs more in op dispatch than in work.
_DECODE_BLOCK = 256
# Per-element bookkeeping of a tf.data shuffle buffer, on top of the record.
_ELEMENT_OVERHEAD_BYTES = 128
_MAX_INTERLEAVE = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """Read settings that `tfds.ReadConfig` has no field for.

    Attributes:
      shuffle_buffer_bytes: bound on the example shuffle buffer, in bytes.
        None takes the value recorded at build time.
    """

    shuffle_buffer_bytes: int | None = None


_ENV_SHUFFLE_BYTES = "TFDS_BIGARRAYS_SHUFFLE_BUFFER_BYTES"


def shuffle_buffer_examples(
    layout: Layout, *, num_examples: int, options: ReadOptions | None = None
) -> int:
    """How many examples fit in the shuffle buffer's byte budget."""
    budget = options.shuffle_buffer_bytes if options else None
    if budget is None and os.environ.get(_ENV_SHUFFLE_BYTES):
        budget = int(os.environ[_ENV_SHUFFLE_BYTES])
    if budget is None:
        budget = layout.shuffle_buffer_bytes
    per_example = layout.record_bytes + _ELEMENT_OVERHEAD_BYTES
    return int(max(1, min(num_examples, budget // per_example)))


def make_decoder(codec: RecordCodec) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """A TF function: `(B,)` serialized records -> dict of `(B, *shape)` tensors."""
    const_pos = np.concatenate(
        [np.arange(s, s + len(c)) for s, c in codec._constants]  # noqa: SLF001
    ).astype(np.int32)
    const_val = np.concatenate([c for _, c in codec._constants])  # noqa: SLF001

    def decode(records: tf.Tensor) -> dict[str, tf.Tensor]:
        # decode_raw refuses a batch of unequal lengths; ensure_shape refuses a
        # batch whose common length is not ours. Neither pads or truncates.
        raw = tf.ensure_shape(tf.io.decode_raw(records, tf.uint8), [None, codec.record_bytes])
        batch = tf.shape(raw)[0]
        check = tf.debugging.assert_equal(
            tf.gather(raw, const_pos, axis=1),
            tf.broadcast_to(const_val, [batch, len(const_val)]),
            message="tfds_bigarrays: a record does not match the dataset's "
            "layout (features.json / tfds_bigarrays.json); the shard is corrupt "
            "or from another dataset",
        )
        out = {}
        with tf.control_dependencies([check]):
            for name, slot in codec.slots.items():
                spec = slot.spec
                chunk = raw[:, slot.start : slot.stop]
                n = spec.num_elements
                if slot.encoding == BYTES:
                    dtype = tf.as_dtype(spec.dtype)
                    if spec.dtype == np.bool_:
                        values = tf.cast(chunk, tf.bool)
                    elif spec.dtype.itemsize == 1:
                        values = tf.bitcast(chunk, dtype) if dtype != tf.uint8 else chunk
                    else:
                        values = tf.bitcast(
                            tf.reshape(chunk, [batch, n, spec.dtype.itemsize]), dtype
                        )
                else:  # uint32 as fixed-width varints
                    groups = tf.cast(tf.reshape(chunk, [batch, n, 5]), tf.uint32)
                    values = tf.zeros([batch, n], tf.uint32)
                    for i in range(5):
                        values = tf.bitwise.bitwise_or(
                            values,
                            tf.bitwise.left_shift(
                                tf.bitwise.bitwise_and(groups[:, :, i], 0x7F), 7 * i
                            ),
                        )
                out[name] = tf.reshape(values, [batch, *spec.shape])
        return out

    return decode


def share_of_reads(
    reads: list[tuple[str, int, int]], *, num_shares: int, index: int
) -> list[tuple[str, int, int]]:
    """Share `index` of `num_shares` of (file, skip, take) reads.

    Each file's range is cut into `num_shares` contiguous pieces, so shares are
    disjoint, together complete, balanced to one example per file, and fixed
    before any shuffling (every worker computes the same cut).
    """
    out = []
    for filename, skip, take in reads:
        lo = skip + take * index // num_shares
        hi = skip + take * (index + 1) // num_shares
        if hi > lo:
            out.append((filename, lo, hi - lo))
    return out


def _file_instructions(builder, split) -> list[Any]:
    return list(builder.info.splits[split].file_instructions)


def as_dataset(
    builder: tfds.core.DatasetBuilder,
    layout: Layout,
    *,
    split: Any,
    batch_size: int | None,
    shuffle_files: bool,
    read_config: tfds.ReadConfig,
    as_supervised: bool,
    options: ReadOptions | None = None,
) -> tf.data.Dataset:
    """The tf.data pipeline behind `tfds.load` for one split of our dataset."""
    instructions = _file_instructions(builder, split)
    if not instructions:
        raise ValueError(f"split={split!r} selects no examples of {builder.name}.")
    codec = layout.codec()
    seed = read_config.shuffle_seed
    reshuffle = read_config.shuffle_reshuffle_each_iteration
    if reshuffle is None:
        reshuffle = True

    reads = [(os.fspath(fi.filename), int(fi.skip), int(fi.take)) for fi in instructions]
    ctx = read_config.input_context
    if ctx is not None and ctx.num_input_pipelines > 1:
        reads = share_of_reads(
            reads, num_shares=ctx.num_input_pipelines, index=ctx.input_pipeline_id
        )
    num_examples = sum(take for _, _, take in reads)
    filenames = [f for f, _, _ in reads]
    skips = [skip for _, skip, _ in reads]
    takes = [take for _, _, take in reads]
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(filenames, tf.string),
            tf.constant(skips, tf.int64),
            tf.constant(takes, tf.int64),
        )
    )
    if shuffle_files:
        files = files.shuffle(max(1, len(filenames)), seed=seed, reshuffle_each_iteration=reshuffle)

    def read_file(filename, skip, take):
        return tf.data.TFRecordDataset(filename).skip(skip).take(take)

    cycle = 1
    if shuffle_files:
        cycle = read_config.interleave_cycle_length
        # ReadConfig's default is a 'missing' sentinel (a str), or None/AUTOTUNE.
        if not isinstance(cycle, int) or isinstance(cycle, str) or cycle <= 0:
            cycle = max(1, min(len(filenames), _MAX_INTERLEAVE))
    parallel = {"num_parallel_calls": min(cycle, 4), "deterministic": True} if cycle > 1 else {}
    records = files.interleave(
        read_file,
        cycle_length=cycle,
        block_length=read_config.interleave_block_length or 1,
        **parallel,
    )

    if read_config.assert_cardinality:
        # Known length: Keras sizes epochs from it, and a shard shorter than
        # its recorded length fails loudly instead of shortening the epoch.
        records = records.apply(tf.data.experimental.assert_cardinality(num_examples))
    if shuffle_files:
        buffer = shuffle_buffer_examples(layout, num_examples=num_examples, options=options)
        records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle)

    wants_full = batch_size == -1
    if wants_full:
        batch_size = num_examples or sys.maxsize
    decode = make_decoder(codec)
    keys = builder.info.supervised_keys if as_supervised else None
    if as_supervised and not keys:
        raise ValueError(
            f"as_supervised=True but {builder.name} has no supervised keys; build "
            "it with --supervised x,y (or SUPERVISED_KEYS), or use as_supervised=False."
        )

    def structure(features):
        if keys:
            return tf.nest.map_structure(lambda k: features[k], keys)
        return features

    ds = records.batch(batch_size or _DECODE_BLOCK)
    ds = ds.map(
        lambda r: structure(decode(r)),
        num_parallel_calls=read_config.num_parallel_calls_for_decode or tf.data.AUTOTUNE,
        deterministic=True,
    )
    if not batch_size:
        ds = ds.unbatch()
    if not read_config.skip_prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    if read_config.options is not None:
        ds = ds.with_options(read_config.options)
    if wants_full:
        return ds.get_single_element()
    return ds


_LAYOUT_ATTR = "_tfds_bigarrays_layout"


def layout_of(builder: tfds.core.DatasetBuilder) -> Layout | None:
    """The builder's layout (read once per builder), or None if not ours."""
    from tfds_bigarrays._layout import read_layout

    if _LAYOUT_ATTR not in builder.__dict__:
        builder.__dict__[_LAYOUT_ATTR] = read_layout(builder.data_path)
    return builder.__dict__[_LAYOUT_ATTR]


def build_single_dataset(
    builder, fallback, *, split, batch_size, shuffle_files, decoders, read_config, as_supervised
):
    """`DatasetBuilder._build_single_dataset` for datasets of ours.

    Falls back to stock TFDS for datasets without our layout file, and for
    `decoders=` (partial decoding) and `add_tfds_id`, which our batch decoder
    does not take.
    """
    layout = layout_of(builder)
    if layout is None or decoders is not None or read_config.add_tfds_id:
        return fallback(split, batch_size, shuffle_files, decoders, read_config, as_supervised)
    return as_dataset(
        builder,
        layout,
        split=split,
        batch_size=batch_size,
        shuffle_files=shuffle_files,
        read_config=read_config,
        as_supervised=as_supervised,
    )

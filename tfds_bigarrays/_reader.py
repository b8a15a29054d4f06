"""Read path: a built dataset as a shuffled, block-decoded tf.data pipeline.

Every record of a dataset has the same length (see `_encoding`), so a shard
is an array of fixed-size TFRecord frames. Two pipelines use that:

Random access (default for shards on a local or mounted file system):
  a stream of (epoch seed, group) pairs, each mapped by one
  `tf.numpy_function` to `_rowread.GroupReader.read_group`, which reads a
  group of blocks at computed offsets (a keyed permutation of all blocks
  when shuffling, no shuffle buffer) straight into the batch's arrays and
  checks them. See `_random_groups`.

Sequential access (remote file systems, the tf.data service, or
`ReadOptions(access="sequential")`):
1. `FixedLengthRecordDataset` reads *blocks* of frames (about 64 KiB), so
   tf.data handles one element per block, not per example;
2. blocks are interleaved across shards and shuffled in a buffer bounded in
   bytes;
3. blocks are batched into groups of at least a batch and decoded with one
   `decode_raw`; frame headers, the Example layout and CRCs are checked
   (naming the shard on mismatch); the group's rows are permuted in-graph,
   then every feature is a column slice of its byte matrix, bit-cast to its
   dtype: no per-example parsing.

Either way groups are then rebatched to the requested batch size (unless a
group is exactly one batch) and prefetched. Stock TFDS still reads the same
shards one Example at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_bigarrays import _readplan, _rowread, _tfop
from tfds_bigarrays._encoding import BYTES, RecordCodec, crc_errors
from tfds_bigarrays._layout import Layout
from tfds_bigarrays._lazy import LazyDataset
from tfds_bigarrays._options import _OPTIONS, ReadOptions
from tfds_bigarrays._pycalls import CALLS

_ENV_BUDGET = "TFDS_BIGARRAYS_MEMORY_BUDGET"
_ENV_VERIFY = "TFDS_BIGARRAYS_VERIFY_CHECKSUMS"
_ENV_SERVICE = "TFDS_BIGARRAYS_DATA_SERVICE"
_HEADER = 12  # uint64 length + masked crc of it


def _resolve(layout: Layout, options: ReadOptions | None) -> ReadOptions:
    """The options in effect: explicit, then the context, then env, then layout."""
    options = options or _OPTIONS.get() or ReadOptions()
    budget = options.memory_budget
    if budget is None and os.environ.get(_ENV_BUDGET):
        text = os.environ[_ENV_BUDGET]
        try:
            budget = int(text)
        except ValueError as e:
            raise _readplan.ReadPlanError(
                f"{_ENV_BUDGET}={text!r} must be a number of bytes, e.g. 268435456."
            ) from e
    if budget is None:
        budget = layout.memory_budget
    service = options.data_service
    if service is None:
        service = os.environ.get(_ENV_SERVICE) or None
        if service is not None and "://" not in service:
            raise ValueError(
                f"{_ENV_SERVICE}={service!r} is not a dispatcher address; write it with "
                "its protocol, e.g. grpc://localhost:5050, or unset it to read locally."
            )
    service = service or None  # "": read locally whatever the environment says
    verify = options.verify_checksums
    if verify and service:
        raise ValueError(
            f"verify_checksums=True cannot be combined with data_service={service!r}: "
            "CRCs are checked with NumPy, which tf.data service workers cannot run. "
            "Check them once with `tfds-bigarrays verify NAME`, and read with "
            "verify_checksums=None (frame headers and layout are still checked)."
        )
    if verify is None:
        verify = not service and os.environ.get(_ENV_VERIFY, "1") != "0"
    return dataclasses.replace(
        options, memory_budget=budget, verify_checksums=verify, data_service=service
    )


def _group_decoder(codec: RecordCodec, *, block_rows: int, verify: bool) -> Callable:
    """TF function: (M block strings, their shard names) -> (rows, frame) uint8.

    One `decode_raw` for the whole group: decoding block by block and then
    concatenating costs twice as much. Blocks are equal-sized except the last
    of each read; those are zero-padded by `decode_raw` and the padding rows
    dropped. Frame headers, the Example layout and (with `verify`) every
    record's CRC32C are checked; on failure the message names the shard(s).
    """
    frame = codec.frame_bytes
    header = np.frombuffer(codec._frame_header.tobytes(), np.uint8)  # noqa: SLF001
    layout_pos = np.concatenate(
        [_HEADER + start + np.arange(len(const)) for start, const in codec._constants]  # noqa: SLF001
    ).astype(np.int32)
    layout_val = np.concatenate([const for _, const in codec._constants])  # noqa: SLF001
    block_bytes = block_rows * frame

    def decode_group(blocks: tf.Tensor, filenames: tf.Tensor) -> tf.Tensor:
        num_blocks = tf.shape(blocks)[0]
        rows_in_block = tf.strings.length(blocks) // frame
        raw = tf.io.decode_raw(blocks, tf.uint8, fixed_length=block_bytes)
        frames = tf.reshape(raw, [num_blocks * block_rows, frame])
        valid = tf.reshape(tf.sequence_mask(rows_in_block, block_rows), [-1])
        # Frame headers (length and its CRC) are outside the data CRC: check
        # every row. The Example layout is inside it: with CRC verification,
        # the first row of each block suffices to catch a foreign dataset;
        # without, every row is checked.
        ok = tf.reduce_all(tf.equal(tf.slice(frames, [0, 0], [-1, _HEADER]), header), axis=1)
        if verify:
            firsts = tf.slice(raw, [0, 0], [-1, frame])
            first_ok = tf.reduce_all(
                tf.equal(tf.gather(firsts, layout_pos, axis=1), layout_val), axis=1
            )
        else:
            ok = tf.logical_and(
                ok,
                tf.reduce_all(tf.equal(tf.gather(frames, layout_pos, axis=1), layout_val), axis=1),
            )
            first_ok = tf.ones([num_blocks], tf.bool)
        ok = tf.logical_or(ok, tf.logical_not(valid))
        block_ok = tf.logical_and(
            tf.reduce_all(tf.reshape(ok, [num_blocks, block_rows]), axis=1), first_ok
        )
        checks = [
            tf.debugging.Assert(
                tf.reduce_all(block_ok),
                [
                    "tfds_bigarrays: shard",
                    tf.boolean_mask(filenames, tf.logical_not(block_ok)),
                    "holds a record that does not match the dataset's layout "
                    "(tfds_bigarrays.json); it is corrupt or from another dataset. "
                    "Rebuild the dataset or restore the shard.",
                ],
            )
        ]
        frames = tf.cond(
            tf.reduce_all(valid), lambda: frames, lambda: tf.boolean_mask(frames, valid)
        )
        if verify:
            bad = tf.numpy_function(
                CALLS.wrap(lambda f: crc_errors(f, codec.record_bytes)),
                [frames],
                tf.int64,
                stateful=False,
            )
            row_block = tf.boolean_mask(tf.repeat(tf.range(num_blocks), block_rows), valid)
            checks.append(
                tf.debugging.Assert(
                    tf.equal(tf.size(bad), 0),
                    [
                        "tfds_bigarrays: shard",
                        tf.gather(filenames, tf.gather(row_block, bad[:1])),
                        "has records whose CRC32C does not match (bit rot or an "
                        "altered file). Rebuild the dataset or restore the shard.",
                    ],
                )
            )
        with tf.control_dependencies(checks):
            return tf.identity(frames)

    return decode_group


def make_decoder(codec: RecordCodec) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """TF function: (n, frame_bytes) uint8 frames -> dict of (n, *shape) tensors."""

    def decode(frames: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.shape(frames)[0]
        out = {}
        for name, slot in codec.slots.items():
            spec = slot.spec
            # tf.slice copies whole row runs; a strided slice of uint8 is slower.
            chunk = tf.slice(frames, [0, _HEADER + slot.start], [-1, slot.stop - slot.start])
            count = spec.num_elements
            if slot.encoding == BYTES:
                dtype = tf.as_dtype(spec.dtype)
                if spec.dtype == np.bool_:
                    values = tf.cast(chunk, tf.bool)
                elif spec.dtype.itemsize == 1:
                    values = chunk if dtype == tf.uint8 else tf.bitcast(chunk, dtype)
                else:
                    values = tf.bitcast(tf.reshape(chunk, [n, count, spec.dtype.itemsize]), dtype)
            else:  # uint32 as fixed-width varints
                groups = tf.cast(tf.reshape(chunk, [n, count, 5]), tf.uint32)
                values = tf.zeros([n, count], tf.uint32)
                for i in range(5):
                    values = tf.bitwise.bitwise_or(
                        values,
                        tf.bitwise.left_shift(tf.bitwise.bitwise_and(groups[:, :, i], 0x7F), 7 * i),
                    )
            out[name] = tf.reshape(values, [n, *spec.shape])
        return out

    return decode


def _element_spec(codec: RecordCodec, keys: Any, *, batched: bool) -> Any:
    lead = [None] if batched else []
    specs = {
        name: tf.TensorSpec([*lead, *slot.spec.shape], tf.as_dtype(slot.spec.dtype))
        for name, slot in codec.slots.items()
    }
    if keys:
        return tf.nest.map_structure(lambda k: specs[k], keys)
    return specs


def _reads(builder, split) -> list[tuple[str, int, int, int]]:
    instructions = builder.info.splits[split].file_instructions
    return [
        (os.fspath(fi.filename), int(fi.skip), int(fi.take), int(fi.examples_in_shard))
        for fi in instructions
    ]


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


def _random_access(reads: list[tuple[str, int, int, int]], options: ReadOptions) -> bool:
    """Whether this read can use positioned reads (`_rowread`), per `options.access`."""
    local = all("://" not in filename for filename, *_ in reads)
    if options.access == "sequential":
        return False
    if options.access in ("random", "mapped") and (options.data_service or not local):
        where = (
            f"data_service={options.data_service!r}"
            if options.data_service
            else (f"shards on {next(f for f, *_ in reads if '://' in f).split('://')[0]}://")
        )
        raise ValueError(
            f"access={options.access!r} cannot read with {where}: positioned reads need the shards "
            "on a local or mounted file system, in this process. Use access='auto' or "
            "'sequential'."
        )
    return local and not options.data_service


def _random_groups(
    reader: _rowread.GroupReader,
    *,
    op: Any,
    parallel_reads: int,
    seed: int | None,
    reshuffle: bool,
    structure: Callable[[dict[str, tf.Tensor]], Any],
) -> tf.data.Dataset:
    """Decoded groups of rows, read at computed offsets by `reader`.

    The pipeline is a stream of (epoch seed, group index) pairs mapped by one
    call of `op` (the TensorFlow op of `_read_op.cc`), or where it is None by
    one `tf.numpy_function` call to `reader.read_group`; both do the same
    (see there): shuffled, an epoch is a keyed permutation of all full
    blocks (no buffer, no table) with each group's rows permuted too. An
    iterator's state is its position in that stream, so checkpoints resume
    exactly. One small function: a pipeline's functions are instantiated,
    graph passes included, for every new iterator, i.e. every epoch.
    """
    specs = [slot.spec for slot in reader.codec.slots.values()]
    names = list(reader.codec.slots)
    dtypes = [tf.as_dtype(spec.dtype) for spec in specs]
    attrs = reader.op_attrs() if op is not None else None
    if attrs is not None:  # the same rows, with no Python call and no second copy

        def read_arrays(group: tf.Tensor, epoch_seed: tf.Tensor) -> Any:
            return op.tfds_bigarrays_read_group(group, epoch_seed, **attrs)

    else:
        read = CALLS.wrap(reader.read_group)  # a quiet exit: see _pycalls

        def read_arrays(group: tf.Tensor, epoch_seed: tf.Tensor) -> Any:
            return tf.numpy_function(read, [group, epoch_seed], dtypes, stateful=False)

    def read_group(epoch_seed: tf.Tensor, group: tf.Tensor) -> Any:
        arrays = read_arrays(group, epoch_seed)
        return structure(
            {
                name: tf.ensure_shape(a, [None, *spec.shape])
                for name, a, spec in zip(names, arrays, specs, strict=True)
            }
        )

    num_groups = reader.num_groups
    if reader.shuffle:
        # One seed per epoch (per iterator), the same for all its groups.
        seeds = (
            tf.data.Dataset.random(seed=_seed(seed, 0), rerandomize_each_iteration=reshuffle)
            .take(1)
            .map(lambda s: tf.fill([num_groups], s))
            .unbatch()
        )
    else:
        seeds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat(num_groups)
    pairs = tf.data.Dataset.zip(seeds, tf.data.Dataset.range(num_groups))
    return pairs.map(read_group, num_parallel_calls=parallel_reads, deterministic=True)


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
    codec = layout.codec()
    frame = codec.frame_bytes
    keys = builder.info.supervised_keys if as_supervised else None
    if as_supervised and not keys:
        raise ValueError(
            f"as_supervised=True but {builder.name} has no supervised keys; build "
            "it with --supervised x,y (or SUPERVISED_KEYS), or use as_supervised=False."
        )
    reads = _reads(builder, split)
    ctx = read_config.input_context
    if ctx is not None and ctx.num_input_pipelines > 1:
        reads = _readplan.share_of_reads(
            reads, num_shares=ctx.num_input_pipelines, index=ctx.input_pipeline_id
        )
    _readplan.check_shard_sizes(reads, frame_bytes=frame)
    num_examples = sum(take for _, _, take, _ in reads)
    wants_full = batch_size == -1
    if wants_full:
        batch_size = max(1, num_examples)
    options = _resolve(layout, options)
    budget, verify = int(options.memory_budget or 0), bool(options.verify_checksums)
    batch_rows = batch_size or 256
    plan = _readplan.plan_memory(
        frame_bytes=frame,
        num_examples=max(1, num_examples),
        num_files=len({r[0] for r in reads}),
        batch_rows=batch_rows,
        budget=budget,
        shuffle=shuffle_files,
    )
    reshuffle = read_config.shuffle_reshuffle_each_iteration
    reshuffle = True if reshuffle is None else reshuffle

    seed = read_config.shuffle_seed
    if options.data_service and shuffle_files and seed is not None:
        logging.getLogger(__name__).warning(
            "shuffle_seed=%s is ignored through the tf.data service: shards go to "
            "whichever worker asks first, so the order cannot be reproduced.",
            seed,
        )
        seed = None

    def structure(features):
        if keys:
            return tf.nest.map_structure(lambda k: features[k], keys)
        return features

    group_plan = None
    if _random_access(reads, options):
        # The same plan with or without the op: the same order either way.
        group_plan = _readplan.plan_groups(
            frame_bytes=frame,
            num_examples=max(1, num_examples),
            batch_rows=batch_rows,
            budget=budget,
        )

    def build() -> tf.data.Dataset:
        # Runs TensorFlow ops (and so initializes devices): deferred to first use.
        if group_plan is not None:
            # Loading (or building) the op is deferred too.
            op = _tfop.library() if _rowread.op_can_read(codec) else None
            ds = _random_groups(
                _rowread.GroupReader(
                    _rowread.RowSpace.from_reads(reads),
                    codec,
                    block_rows=group_plan.block_rows,
                    group_blocks=group_plan.group_blocks,
                    shuffle=shuffle_files,
                    verify=verify,
                    groups_in_flight=group_plan.groups_in_flight,
                    lookahead=group_plan.lookahead_groups,
                    mapped=options.access == "mapped",
                ),
                op=op,
                parallel_reads=group_plan.parallel_reads,
                seed=seed,
                reshuffle=reshuffle,
                structure=structure,
            )
            exact = group_plan.exact_batches and bool(batch_size)
        else:
            # Service workers instantiate the pipeline anew for every epoch, so
            # any fixed seed (a global tf.random.set_seed included) would give
            # every epoch the same order; unseeded ops draw fresh seeds there.
            unseeded = options.data_service and shuffle_files
            with _without_global_seed() if unseeded else contextlib.nullcontext():
                ds = _sequential_groups().map(structure)
            exact = False
        return _finish(ds, exact=exact)

    def _sequential_groups() -> tf.data.Dataset:
        """Decoded groups of rows from tf.data's sequential file readers."""
        parts = _readplan.pieces(reads, frame_bytes=frame, block_rows=plan.block_rows)
        files = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant([p.filename for p in parts], tf.string),
                tf.constant([p.record_bytes for p in parts], tf.int64),
                tf.constant([p.header_bytes for p in parts], tf.int64),
                tf.constant([p.footer_bytes for p in parts], tf.int64),
            )
        )
        if shuffle_files:
            files = files.shuffle(
                max(1, len(parts)), seed=_seed(seed, 0), reshuffle_each_iteration=reshuffle
            )

        read_buffer = max(256 * 1024, plan.block_rows * frame)

        def read_piece(filename, record_bytes, header_bytes, footer_bytes):
            blocks = tf.data.FixedLengthRecordDataset(
                filename, record_bytes, header_bytes, footer_bytes, buffer_size=read_buffer
            )
            return blocks.map(lambda b: (b, filename))

        cycle = plan.cycle_length
        parallel = (
            {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if cycle > 1 else {}
        )
        blocks = files.interleave(read_piece, cycle_length=cycle, block_length=1, **parallel)
        if shuffle_files and plan.shuffle_blocks > 1:
            blocks = blocks.shuffle(
                plan.shuffle_blocks, seed=_seed(seed, 1), reshuffle_each_iteration=reshuffle
            )
        decode_group = _group_decoder(codec, block_rows=plan.block_rows, verify=verify)
        decode = make_decoder(codec)

        groups = blocks.batch(
            plan.group_blocks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        if shuffle_files and plan.block_rows > 1:
            randoms = tf.data.Dataset.random(
                seed=_seed(seed, 2), rerandomize_each_iteration=reshuffle
            ).batch(2)

            def permute_and_decode(group, rnd):
                frames = decode_group(*group)
                # Permute row indices, then gather: shuffling the byte matrix
                # itself is ten times slower.
                order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(frames)[0]), rnd)
                return decode(tf.gather(frames, order))

            ds = tf.data.Dataset.zip((groups, randoms)).map(
                permute_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        else:
            # Not shuffling, or rows already shuffled one by one (one-row
            # blocks): decode in stored order.
            ds = groups.map(
                lambda *group: decode(decode_group(*group)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        if options.data_service:
            # Everything above runs on the service's workers (each gets whole
            # shards in distributed_epoch mode); they send decoded groups.
            # Rebatching later gives full batches whatever the number of workers.
            ds = ds.apply(
                tf.data.experimental.service.distribute(
                    processing_mode=options.data_service_mode,
                    service=options.data_service,
                    job_name=options.data_service_job,
                    # Arrays of numbers hardly compress; compressing cost the
                    # workers and the trainer more CPU than the transfer saved.
                    compression=None,
                )
            )
        return ds

    def _finish(ds: tf.data.Dataset, *, exact: bool) -> tf.data.Dataset:
        """Groups of decoded rows -> the batches (or examples) asked for."""
        if not exact:
            ds = ds.rebatch(batch_rows)
        if batch_size:
            cardinality = -(-num_examples // batch_size)
        else:
            ds = ds.unbatch()
            cardinality = num_examples
        if read_config.assert_cardinality:
            # Known length: Keras sizes epochs from it, and a shard shorter than its
            # recorded length fails loudly instead of shortening the epoch.
            ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
        if not read_config.skip_prefetch:
            prefetch = (
                group_plan.prefetch_batches if group_plan is not None else plan.prefetch_batches
            )
            ds = ds.prefetch(prefetch if batch_size else tf.data.AUTOTUNE)
        opts = tf.data.Options()
        opts.autotune.ram_budget = plan.autotune_ram_bytes
        if group_plan is not None and batch_size:
            # Random access with batches has no AUTOTUNE knob (parallel reads and
            # prefetch are planned), and tf.data's autotuning thread only cost:
            # destroying an iterator waits for an optimization in progress, which
            # held about 67 ms at the end of a quarter of the epochs (measured on
            # 64x64 rows: 200k examples/s with autotune, 255k without). Set
            # `options.autotune.enabled = True` on the dataset to bring it back.
            opts.autotune.enabled = False
        ds = ds.with_options(opts)
        if read_config.options is not None:
            ds = ds.with_options(read_config.options)
        return ds

    if wants_full:
        return build().get_single_element()
    return LazyDataset(build, _element_spec(codec, keys, batched=bool(batch_size)))


@contextlib.contextmanager
def _without_global_seed() -> Iterator[None]:
    """Builds ops as if no global seed were set, then restores it untouched.

    With no global and no op seed, tf.data's random ops get seeds (0, 0) and
    draw fresh ones each time the pipeline is instantiated, which is what a
    tf.data service worker does every epoch. TensorFlow has no public way to
    read and restore the eager global seed and its op-seed sequence, so this
    saves and restores the eager context's own fields.
    """
    from tensorflow.python.eager import context as eager_context
    from tensorflow.python.framework import config as tf_config

    ctx = eager_context.context()
    if tf_config.is_op_determinism_enabled():
        raise ValueError(
            "Op determinism is enabled (tf.config.experimental.enable_op_determinism), "
            "but reading through the tf.data service cannot be deterministic: shards go "
            "to whichever worker asks first. Read without data_service, or with "
            "shuffle_files=False."
        )
    saved = ctx.__dict__.get("_seed"), ctx.__dict__.get("_rng")
    ctx._seed = None  # noqa: SLF001
    try:
        yield
    finally:
        ctx._seed = saved[0]  # noqa: SLF001
        if saved[1] is not None:
            ctx._rng = saved[1]  # noqa: SLF001


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
    `decoders=` (partial decoding) and `add_tfds_id`, which our block decoder
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

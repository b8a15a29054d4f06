"""The tf.data pipeline behind `tfds.load` for a split of ours: plan, engine, finish.

1. Plan (`plan.plan_read`): which shard rows, in which blocks and groups, with
   what buffers, read by which engine. Pure Python, decided at load.
2. Engine: decoded groups of rows, as dicts of tensors.
   - random (shards on a local or mounted file system; also "mapped"): a
     stream of (epoch seed, group) pairs, each read by one call of the read
     core's op (`TfdsBigarraysReadGroup`): a keyed permutation of all blocks
     when shuffling, with each group's rows permuted too, no shuffle buffer.
   - sequential (other file systems, the tf.data service): tf.data's
     FixedLengthRecordDataset streams blocks of frames, interleaved across
     shards and shuffled in a byte-bounded buffer; groups of blocks are
     checked and decoded by the core's other op (`TfdsBigarraysDecodeFrames`).
3. Finish: the batches (or examples) asked for, the known cardinality,
   prefetch and tf.data options.

Stock TFDS still reads the same shards one Example at a time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_bigarrays._format.layout import Layout, read_layout
from tfds_bigarrays._read import op as _op
from tfds_bigarrays._read.features import check_layout_with_builder, class_label_features
from tfds_bigarrays._read.lazy import LazyDataset
from tfds_bigarrays._read.options import ReadOptions, resolve
from tfds_bigarrays._read.plan import (
    ReadError,
    ReadPlan,
    pieces,
    plan_read,
    shard_reads,
    share_of_reads,
)

_log = logging.getLogger(__name__)


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed + offset


# ---------------------------------------------------------------- engines


def random_groups(plan: ReadPlan, *, seed: int | None, reshuffle: bool) -> tf.data.Dataset:
    """Decoded groups read at computed offsets by the core (see the module docstring).

    An iterator's state is its position in the (epoch seed, group) stream, so
    checkpoints resume exactly. One small function: a pipeline's functions
    are instantiated, graph passes included, for every new iterator.
    """
    assert plan.groups is not None
    lib = _op.library()
    attrs = _op.read_group_attrs(
        plan.layout,
        plan.reads,
        plan.identities,
        verify=plan.verify,
        block_rows=plan.groups.block_rows,
        group_blocks=plan.groups.group_blocks,
        window_groups=plan.groups.window_groups,
        shuffle=plan.shuffle,
        lookahead=plan.groups.lookahead_groups,
        mapped=plan.access == "mapped",
        read_threads=plan.groups.read_threads,
        fill_pieces=plan.groups.fill_pieces,
    )
    rows = plan.groups.group_rows
    num_groups = -(-plan.num_examples // rows)
    names, specs = plan.layout.names, plan.layout.specs

    def read_group(epoch_seed: tf.Tensor, group: tf.Tensor) -> dict[str, tf.Tensor]:
        arrays = lib.tfds_bigarrays_read_group(group, epoch_seed, **attrs)
        return {
            name: tf.ensure_shape(a, [None, *spec.shape])
            for name, a, spec in zip(names, arrays, specs, strict=True)
        }

    if plan.shuffle:
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
    return pairs.map(read_group, num_parallel_calls=plan.groups.parallel_reads, deterministic=True)


def sequential_groups(
    plan: ReadPlan, *, seed: int | None, reshuffle: bool, options: ReadOptions
) -> tf.data.Dataset:
    """Decoded groups of rows from tf.data's sequential file readers."""
    lib = _op.library()
    memory, frame = plan.memory, plan.layout.frame_bytes
    parts = pieces(plan.reads, frame_bytes=frame, block_rows=memory.block_rows)
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([p.filename for p in parts], tf.string),
            tf.constant([p.record_bytes for p in parts], tf.int64),
            tf.constant([p.header_bytes for p in parts], tf.int64),
            tf.constant([p.footer_bytes for p in parts], tf.int64),
        )
    )
    if plan.shuffle:
        files = files.shuffle(
            max(1, len(parts)), seed=_seed(seed, 0), reshuffle_each_iteration=reshuffle
        )
    read_buffer = max(256 * 1024, memory.block_rows * frame)

    def read_piece(filename, record_bytes, header_bytes, footer_bytes):
        blocks = tf.data.FixedLengthRecordDataset(
            filename, record_bytes, header_bytes, footer_bytes, buffer_size=read_buffer
        )
        return blocks.map(lambda b: (b, filename))

    cycle = memory.cycle_length
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if cycle > 1 else {}
    blocks = files.interleave(read_piece, cycle_length=cycle, block_length=1, **parallel)
    if plan.shuffle and memory.shuffle_blocks > 1:
        blocks = blocks.shuffle(
            memory.shuffle_blocks, seed=_seed(seed, 1), reshuffle_each_iteration=reshuffle
        )
    groups = blocks.batch(
        memory.group_blocks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    # A shard's identity (device, inode) means something on this machine only:
    # not checked on tf.data service workers, which may be other machines.
    local = {
        r.filename: i
        for r, i in zip(plan.reads, plan.identities, strict=True)
        if "://" not in r.filename and not options.data_service
    }
    attrs = {
        **_op.layout_attrs(plan.layout, verify=plan.verify),
        "identity_names": list(local),
        "identities": [int(v) for ident in local.values() for v in ident],
    }
    names = plan.layout.names

    def decode(blocks: tf.Tensor, filenames: tf.Tensor, dest: tf.Tensor) -> dict[str, tf.Tensor]:
        arrays = lib.tfds_bigarrays_decode_frames(blocks, filenames, dest, **attrs)
        return {
            name: tf.ensure_shape(a, [None, *spec.shape])
            for name, a, spec in zip(names, arrays, plan.layout.specs, strict=True)
        }

    if plan.shuffle and memory.block_rows > 1:
        randoms = tf.data.Dataset.random(
            seed=_seed(seed, 2), rerandomize_each_iteration=reshuffle
        ).batch(2)

        def permute_and_decode(group, rnd):
            blocks, filenames = group
            n = tf.reduce_sum(tf.strings.length(blocks)) // frame
            # Output row i is frame order[i]: frame r goes to row inverse[r].
            order = tf.random.experimental.stateless_shuffle(tf.range(n), rnd)
            return decode(blocks, filenames, tf.cast(tf.math.invert_permutation(order), tf.int64))

        ds = tf.data.Dataset.zip((groups, randoms)).map(
            permute_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        # Not shuffling, or rows already shuffled one by one (one-row blocks).
        ds = groups.map(
            lambda blocks, filenames: decode(blocks, filenames, tf.zeros([0], tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if options.data_service:
        # Everything above runs on the service's workers (each gets whole
        # shards in distributed_epoch mode); they send decoded groups, which
        # are rebatched after, whatever the number of workers.
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


# ---------------------------------------------------------------- finish


def finish(ds: tf.data.Dataset, plan: ReadPlan, read_config: tfds.ReadConfig) -> tf.data.Dataset:
    """Groups of decoded rows -> the batches (or examples) asked for."""
    if not plan.exact_batches:
        ds = ds.rebatch(plan.batch_rows)
    if plan.batch_size:
        cardinality = -(-plan.num_examples // plan.batch_size)
    else:
        ds = _unbatch(ds, plan)
        cardinality = plan.num_examples
    if read_config.assert_cardinality:
        # Known length: Keras sizes epochs from it, and a shard shorter than its
        # recorded length fails loudly instead of shortening the epoch.
        ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
    if not read_config.skip_prefetch:
        if not plan.batch_size:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        elif plan.groups is not None:
            if plan.groups.prefetch_batches:  # else the reads in flight are the buffer
                ds = ds.prefetch(plan.groups.prefetch_batches)
        else:
            ds = ds.prefetch(plan.memory.prefetch_batches)
    opts = tf.data.Options()
    opts.autotune.ram_budget = plan.memory.autotune_ram_bytes
    if plan.groups is not None and plan.batch_size:
        # Random access with batches has nothing to autotune (reads and
        # prefetch are planned), and destroying an iterator waits for an
        # autotuning pass in progress (docs/design.md#tuning). Set
        # `options.autotune.enabled = True` on the dataset to bring it back.
        opts.autotune.enabled = False
        if not plan.groups.prefetch_batches:
            # The reads in flight are the buffer; an injected prefetch would
            # hold batches past the budget if autotuning is turned back on.
            opts.experimental_optimization.inject_prefetch = False
    ds = ds.with_options(opts)
    if read_config.options is not None:
        ds = ds.with_options(read_config.options)
    return ds


def _unbatch(ds: tf.data.Dataset, plan: ReadPlan) -> tf.data.Dataset:
    """Single examples; `unbatch()` crashes TF 2.21 on zero-element components."""
    if all(spec.num_elements for spec in plan.layout.specs):
        return ds.unbatch()
    return ds.flat_map(lambda *e: tf.data.Dataset.from_tensor_slices(e[0] if len(e) == 1 else e))


# ---------------------------------------------------------------- tfds.load


def _element_spec(plan: ReadPlan, keys: Any, labels: frozenset[str]) -> Any:
    lead = [None] if plan.batch_size else []
    specs = {
        name: tf.TensorSpec(
            [*lead, *spec.shape], tf.int64 if name in labels else tf.as_dtype(spec.dtype)
        )
        for name, spec in zip(plan.layout.names, plan.layout.specs, strict=True)
    }
    if keys:
        return tf.nest.map_structure(lambda k: specs[k], keys)
    return specs


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
    keys = builder.info.supervised_keys if as_supervised else None
    if as_supervised and not keys:
        raise ReadError(
            f"as_supervised=True but {builder.name} has no supervised keys; build "
            "it with --supervised x,y (or SUPERVISED_KEYS), or use as_supervised=False."
        )
    reads = shard_reads(builder.info.splits[split].file_instructions)
    if not reads:  # as stock TFDS says it, for an empty selection such as train[10:10]
        instructions = builder.info.splits[split].file_instructions
        raise ValueError(f"Instruction {instructions} corresponds to no data!")
    ctx = read_config.input_context
    if ctx is not None and ctx.num_input_pipelines > 1:
        reads = share_of_reads(
            reads, num_shares=ctx.num_input_pipelines, index=ctx.input_pipeline_id
        )
    options = resolve(options, recorded_budget=layout.memory_budget)
    plan = plan_read(
        reads=reads,
        codec=layout.codec(),
        batch_size=batch_size,
        shuffle=shuffle_files,
        options=options,
    )
    reshuffle = read_config.shuffle_reshuffle_each_iteration
    reshuffle = True if reshuffle is None else reshuffle
    seed = read_config.shuffle_seed
    if options.data_service and shuffle_files and seed is not None:
        _log.warning(
            "shuffle_seed=%s is ignored through the tf.data service: shards go to "
            "whichever worker asks first, so the order cannot be reproduced.",
            seed,
        )
        seed = None

    # ClassLabels are stored as uint32 and read as TFDS gives them: int64.
    labels = class_label_features(builder.info.features)

    def structure(features: dict[str, tf.Tensor]) -> Any:
        if labels:
            features = {k: tf.cast(v, tf.int64) if k in labels else v for k, v in features.items()}
        if keys:
            return tf.nest.map_structure(lambda k: features[k], keys)
        return features

    def build() -> tf.data.Dataset:
        # Runs TensorFlow ops (and so initializes devices): deferred to first use.
        if plan.groups is not None:
            ds = random_groups(plan, seed=seed, reshuffle=reshuffle)
        else:
            # Service workers instantiate the pipeline anew for every epoch, so
            # any fixed seed (a global tf.random.set_seed included) would give
            # every epoch the same order; unseeded ops draw fresh seeds there.
            unseeded = options.data_service and shuffle_files
            with _without_global_seed() if unseeded else contextlib.nullcontext():
                ds = sequential_groups(plan, seed=seed, reshuffle=reshuffle, options=options)
        return finish(ds.map(structure), plan, read_config)

    if batch_size == -1:
        return build().get_single_element()
    return LazyDataset(build, _element_spec(plan, keys, labels))


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
        raise ReadError(
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
    """The builder's layout, checked against its TFDS metadata (once per
    builder), or None if the dataset is not ours."""
    if _LAYOUT_ATTR not in builder.__dict__:
        layout = read_layout(builder.data_path)
        if layout is not None:
            check_layout_with_builder(layout, builder)
        builder.__dict__[_LAYOUT_ATTR] = layout
    return builder.__dict__[_LAYOUT_ATTR]


def build_single_dataset(
    builder: tfds.core.DatasetBuilder,
    fallback: Callable[..., tf.data.Dataset],
    *,
    split: Any,
    batch_size: int | None,
    shuffle_files: bool,
    decoders: Any,
    read_config: tfds.ReadConfig,
    as_supervised: bool,
) -> tf.data.Dataset:
    """`DatasetBuilder._build_single_dataset` for datasets of ours.

    Falls back to stock TFDS for datasets without our layout file, and for
    `decoders=` (partial decoding) and `add_tfds_id`, which our reader does
    not take.
    """
    layout = layout_of(builder)
    if layout is None:
        return fallback(split, batch_size, shuffle_files, decoders, read_config, as_supervised)
    if decoders is not None or read_config.add_tfds_id:
        reason = "decoders=" if decoders is not None else "read_config.add_tfds_id=True"
        _log.warning(
            "tfds_bigarrays: %s makes tfds.load read %s/%s with TFDS's own reader, which "
            "shuffles file order only and is 15-100x slower (docs/read_benchmark.md, "
            "stock-tfds rows). Leave it out to read with tfds_bigarrays.",
            reason,
            builder.name,
            split,
        )
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

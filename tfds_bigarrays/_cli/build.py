"""`tfds-bigarrays build`: arrays to a TFDS dataset."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from tfds_bigarrays._cli.common import UsageError, add_data_dir, data_dir, parse_size, subcommand
from tfds_bigarrays._cli.quiet import logs_to_file

SOURCE_KINDS = """sources (PATH in --split):
  x.npy                 a .npy file (read in row ranges, never whole)
  shards/               a folder of .npy files, concatenated in name order
  data.npz:x            a member of an .npz archive (stored members are memory-mapped)
  data.h5:/group/x      an HDF5 dataset (pip install 'tfds-bigarrays[hdf5]')
  https://host/x.npy    any of the above by URL, downloaded once and checksummed
  data.zarr             a Zarr array (v2 or v3 store; pip install 'tfds-bigarrays[zarr]')
  data.zarr:/group/x    an array in a Zarr group
  'x.npy[:90%]'         rows of any of the above: [start:stop], row numbers or percents
                        (one file, two splits: train:x=x.npy[:90%] validation:x=x.npy[90%:])
Relative paths are taken from the current directory; ~ is expanded."""


def parse_split(text: str) -> tuple[str, dict[str, str]]:
    """'train:x=X.npy,y=Y.npy' -> ('train', {'x': 'X.npy', 'y': 'Y.npy'})."""
    example = "--split train:x=x_train.npy,y=y_train.npy"
    if ":" not in text:
        raise UsageError(f"--split {text!r} has no split name; write it as {example}.")
    name, _, rest = text.partition(":")
    if not name.strip():
        raise UsageError(f"--split {text!r} has an empty split name; write it as {example}.")
    features: dict[str, str] = {}
    for item in rest.split(","):
        feature, eq, path = item.partition("=")
        if not eq or not feature.strip() or not path.strip():
            raise UsageError(
                f"--split {text!r}: {item!r} is not FEATURE=PATH; write it as {example}."
            )
        if feature.strip() in features:
            raise UsageError(f"--split {text!r} names feature {feature.strip()!r} twice.")
        features[feature.strip()] = path.strip()
    return name.strip(), features


def add_parser(sub) -> None:
    p = subcommand(
        sub,
        "build",
        help="Convert arrays into a TFDS dataset.",
        description=(
            "Convert arrays into a TFDS dataset of TFRecord shards, in this process "
            "(--beam for Apache Beam). Load it afterwards with tfds.load(NAME, "
            "data_dir=DIR); the command prints the line.\n\n" + SOURCE_KINDS
        ),
        examples=[
            "tfds-bigarrays build my_arrays --split train:x=x_train.npy,y=y_train.npy "
            "--split validation:x=x_val.npy,y=y_val.npy --supervised x,y",
            "tfds-bigarrays build big --data-dir /data/tfds --split train:x=shards/,y=y.npy "
            "--shard-size 256MiB",
            "tfds-bigarrays build climate --split 'train:x=era5.zarr:/t2m[:90%]' "
            "--split 'test:x=era5.zarr:/t2m[90%:]' --dask tcp://HEAD:8786",
        ],
    )
    p.add_argument("name", help="dataset name (lower snake case), e.g. my_arrays")
    add_data_dir(p, what="to build into")
    p.add_argument(
        "--split",
        action="append",
        required=True,
        metavar="SPLIT:FEATURE=PATH,...",
        help="a split and its arrays, e.g. train:x=x.npy,y=y.npy; PATH may be "
        "FILE.npz:MEMBER, and may end in a row range, 'x.npy[:90%%]'. Repeat for each split.",
    )
    p.add_argument(
        "--supervised",
        metavar="INPUT,TARGET",
        help="features returned by as_supervised=True, e.g. x,y; several inputs joined "
        "with + (x1+x2,y gives ((x1, x2), y) for a two-input model); a third for weights",
    )
    p.add_argument(
        "--class-names",
        metavar="[FEATURE=]NAME,...",
        help="the label feature's class names, in id order: it becomes a tfds ClassLabel "
        "(info.features[...].names); FEATURE defaults to the --supervised target, "
        "e.g. cat,dog or label=cat,dog",
    )
    p.add_argument(
        "--num-classes",
        metavar="[FEATURE=]N",
        help="as --class-names, with N classes named 0..N-1",
    )
    p.add_argument("--version", default="1.0.0", help="dataset version (default 1.0.0)")
    p.add_argument(
        "--shard-size",
        metavar="SIZE",
        default="128MiB",
        help="max shard file size (default 128MiB; smaller shards mix better when shuffling)",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        default="128MiB",
        help="default bound on the reader's buffers together: groups being read "
        "and prefetched (and, with sequential access, the shuffle buffer) (default 128MiB)",
    )
    p.add_argument(
        "--permute",
        type=int,
        metavar="SEED",
        help="write rows in a keyed pseudo-random order (better shuffling on read, "
        "see README); default: array order",
    )
    p.add_argument(
        "--beam",
        action="store_true",
        help="build through Apache Beam (default: in this process, whatever the size; "
        "faster on one machine, with a progress bar)",
    )
    p.add_argument(
        "--beam-options",
        metavar="K=V,...",
        help="Beam pipeline options, e.g. runner=DirectRunner,direct_num_workers=2 or "
        "runner=FlinkRunner,... (implies --beam)",
    )
    p.add_argument(
        "--dask",
        metavar="tcp://HOST:PORT",
        help="write the shards on this Dask cluster, one task per shard, where a Zarr "
        "store's chunks are read (Beam's Dask runner; implies --beam)",
    )
    p.add_argument(
        "--checksums-dir",
        metavar="DIR",
        default="checksums",
        help="where sizes and sha256 of http(s) sources are kept, as NAME.tsv "
        "(default: ./checksums)",
    )
    p.add_argument(
        "--register-checksums",
        action="store_true",
        help="record the checksums of downloaded URLs (otherwise they are verified)",
    )
    p.add_argument("--description", metavar="TEXT", help="free text recorded in dataset_info.json")
    p.add_argument(
        "--overwrite", action="store_true", help="rebuild if this version already exists"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tfds_bigarrays as tb

    splits: dict[str, dict[str, str]] = {}
    for text in args.split:
        name, features = parse_split(text)
        if name in splits:
            raise UsageError(f"--split {name!r} is given twice; give each split once.")
        splits[name] = features
    keys = None
    if args.supervised:
        parts = [p.strip() for p in args.supervised.split(",")]
        keys = tuple(tuple(p.split("+")) if "+" in p else p for p in parts)
        names = [n for p in parts for n in p.split("+")]
        if len(keys) not in (2, 3) or not all(n.strip() == n and n for n in names):
            raise UsageError(
                f"--supervised {args.supervised!r} must be INPUT,TARGET (or INPUT,TARGET,WEIGHTS), "
                "e.g. x,y; join several inputs with +, e.g. x1+x2,y."
            )
    labels = _class_labels(args, keys=keys, features={f for s in splits.values() for f in s})
    _hide_gpus()
    beam = bool(args.beam or args.beam_options or args.dask)
    start = time.perf_counter()
    # Beam's workers log dozens of lines per build: into a file, not the terminal.
    logs = logs_to_file("tfds_bigarrays-beam-") if beam else contextlib.nullcontext(None)
    with logs as beam_log:
        try:
            builder = _build(tb, args, splits=splits, keys=keys, labels=labels, beam=beam)
        except BaseException:
            if beam_log is not None:
                print(f"Beam's log: {beam_log}", file=sys.stderr)
            raise
    seconds = time.perf_counter() - start
    total = sum(s.num_bytes for s in builder.info.splits.values())
    print(f"Built {builder.name} {builder.version} at {builder.data_path}")
    if beam_log is not None:
        print(f"  Beam's log: {beam_log}")
    for split in builder.info.splits.values():
        print(
            f"  {split.name}: {split.num_examples} examples in {split.num_shards} "
            f"shard(s), {split.num_bytes / 1e6:.1f} MB"
        )
    print(
        f"  {total / 1e6:.1f} MB in {seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.0f} MB/s)"
    )
    first = next(iter(builder.info.splits))
    supervised = ", as_supervised=True" if builder.info.supervised_keys else ""
    print(
        "Load it with:\n"
        f"  tfds.load({builder.name!r}, split={first!r}, data_dir={_absolute(builder.data_dir_root)!r}, "
        f"shuffle_files=True, batch_size=256{supervised})"
    )
    return 0


def _absolute(path) -> str:
    text = os.fspath(path)
    return text if "://" in text else os.path.abspath(text)


def _class_labels(args: argparse.Namespace, *, keys, features: set[str]) -> dict[str, object]:
    """--class-names / --num-classes as build()'s class_labels."""
    if args.class_names and args.num_classes:
        raise UsageError("--class-names and --num-classes both given; give one of them.")
    flag, text = (
        ("--class-names", args.class_names)
        if args.class_names
        else ("--num-classes", args.num_classes)
    )
    if not text:
        return {}
    feature, _, value = text.rpartition("=")
    if not feature:
        target = keys[1] if keys and isinstance(keys[1], str) else None
        feature = target or ("label" if "label" in features else "")
        if not feature:
            raise UsageError(
                f"{flag} {text!r}: which feature? Give FEATURE={text} or --supervised INPUT,TARGET."
            )
    if feature not in features:
        raise UsageError(
            f"{flag} {text!r}: no feature {feature!r} in --split (features: "
            f"{', '.join(sorted(features))}); write {flag} FEATURE=..."
        )
    if flag == "--num-classes":
        if not value.isdigit() or not 1 <= int(value) <= 1 << 32:
            raise UsageError(f"--num-classes {text!r}: N must be an integer in 1..2**32, e.g. 10.")
        return {feature: int(value)}
    names = [n.strip() for n in value.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise UsageError(
            f"--class-names {text!r}: give each class one non-empty, distinct name, in id "
            "order, e.g. cat,dog,bird."
        )
    return {feature: names}


def _build(tb, args: argparse.Namespace, *, splits, keys, labels, beam: bool):
    return tb.build(
        args.name,
        splits=splits,
        data_dir=data_dir(args),
        supervised_keys=keys,
        class_labels=labels,
        version=args.version,
        shard_bytes=parse_size(args.shard_size, flag="--shard-size"),
        memory_budget=parse_size(args.memory_budget, flag="--memory-budget"),
        permute_seed=args.permute,
        beam=beam,
        beam_options=args.beam_options,
        dask=args.dask,
        description=args.description,
        overwrite=args.overwrite,
        checksums_dir=args.checksums_dir,
        register_checksums=args.register_checksums,
    )


def _hide_gpus() -> None:
    """The CLI process only converts data: keep TensorFlow off the GPUs.

    The build itself does not import TensorFlow, so hiding the GPUs through
    CUDA_VISIBLE_DEVICES (inherited by Beam's worker processes too) is enough
    and costs nothing; if TensorFlow is already loaded, ask it directly.
    (Not done by the Python API, where the caller may train afterwards.)
    """
    if "tensorflow" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialized: nothing to hide any more
        pass

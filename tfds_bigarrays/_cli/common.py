"""What every subcommand shares: the usage error, sizes, dataset lookup."""

from __future__ import annotations

import argparse
import os
import re
import textwrap

from etils import epath

from tfds_bigarrays._build.plan import VERSION
from tfds_bigarrays._errors import TfdsBigarraysError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class UsageError(TfdsBigarraysError, ValueError):
    """A command-line argument is malformed."""


# Errors raised below the CLI name Python's arguments (`shard_bytes=`); the
# CLI shows its own flags instead. Python name -> flag:
FLAGS = {
    "data_dir": "--data-dir",
    "splits": "--split",
    "supervised_keys": "--supervised",
    "class_labels": "--class-names",
    "version": "--version",
    "shard_bytes": "--shard-size",
    "memory_budget": "--memory-budget",
    "permute_seed": "--permute",
    "beam": "--beam",
    "beam_options": "--beam-options",
    "dask": "--dask",
    "description": "--description",
    "overwrite": "--overwrite",
    "checksums_dir": "--checksums-dir",
    "register_checksums": "--register-checksums",
    "file_format": "--file_format",
    "card_mb": "--card-mb",
    "overhead_mb": "--overhead-mb",
    "models": "--models",
    "device": "--device",
}
_SWITCHES = ("beam", "overwrite", "register_checksums")  # `overwrite=True` is `--overwrite`
_NAMES = "|".join(sorted(FLAGS, key=len, reverse=True))
# Only a name that starts the message or follows a space or "(": never part
# of a path or a feature name the user wrote ('/data/version=2/x.npy').
_PARAM = re.compile(rf"(?:^|(?<=[\s(]))({_NAMES})=(True\b)?")


def as_flags(message: str, *, keep: frozenset[str] | set[str] = frozenset()) -> str:
    """`shard_bytes=1` -> `--shard-size=1`, `overwrite=True` -> `--overwrite`.

    Names in `keep` (the build's feature names) are left as they are.
    """

    def flag(m: re.Match) -> str:
        name, true = m.group(1), m.group(2)
        if name in keep:
            return m.group(0)
        before = m.string[max(0, m.start() - 2) : m.start()]
        if len(before) == 2 and before[1] == "(" and (before[0].isalnum() or before[0] == "_"):
            return m.group(0)  # an argument in code, as in ReadOptions(memory_budget=...)
        if true and name in _SWITCHES:
            return FLAGS[name]
        return f"{FLAGS[name]}={true or ''}"

    return _PARAM.sub(flag, message)


def parse_size(text: str, *, flag: str) -> int:
    """'256MiB', '1G', '4096' -> bytes (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{flag}={text!r} is not a size; write e.g. 256MiB, 1G or 65536.")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "")[:1].upper()])


def registry(args: argparse.Namespace):
    """The registry named by --registry, else by the environment."""
    from tfds_bigarrays._registry import lookup

    if getattr(args, "registry", None):
        return lookup.Registry.from_files([f.strip() for f in args.registry.split(",")])
    return lookup.Registry.from_env()


def subcommand(sub, name: str, *, help: str, description: str | None = None, examples=()):
    """A subcommand's parser, with its examples as the epilog of its --help."""
    epilog = None
    if examples:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    # Raw, for the examples and lists; one-line paragraphs are wrapped here.
    paragraphs = (description or help).split("\n\n")
    text = "\n\n".join(p if "\n" in p else textwrap.fill(p, 79) for p in paragraphs)
    return sub.add_parser(
        name,
        help=help,
        description=text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


DATASET_HELP = (
    "a dataset built under --data-dir (NAME), or published in the registry "
    "(NAMESPACE:NAME or NAMESPACE:NAME:VERSION)"
)


def add_data_dir(p: argparse.ArgumentParser, *, what: str) -> None:
    """--data-dir (and TFDS's spelling, --data_dir), with TFDS's default."""
    p.add_argument(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        metavar="DIR",
        help=f"TFDS data directory {what} (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets)",
    )


def data_dir(args: argparse.Namespace) -> str:
    """The data directory every subcommand uses: the flag, else TFDS's default."""
    from tfds_bigarrays._files import user_path

    return user_path(
        getattr(args, "data_dir", None)
        or os.environ.get("TFDS_DATA_DIR")
        or "~/tensorflow_datasets"
    )


def add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        metavar="FILE[,FILE]",
        help="registry TOML file(s), comma-separated (default: $TFDS_BIGARRAYS_REGISTRY)",
    )


def add_dataset_args(p: argparse.ArgumentParser, *, registry: bool = True) -> None:
    """--data-dir, --version (and --registry): how a subcommand finds a dataset."""
    add_data_dir(p, what="holding the dataset")
    p.add_argument("--version", help="dataset version, e.g. 1.0.0 (default: the latest)")
    if registry:
        add_registry(p)


def _latest(root: epath.Path, name: str) -> epath.Path:
    versions = (
        sorted(
            (v for v in (root / name).iterdir() if VERSION.fullmatch(v.name)),
            key=lambda v: tuple(int(p) for p in v.name.split(".")),
        )
        if (root / name).exists()
        else []
    )
    if not versions:
        raise UsageError(
            f"No built dataset {name!r} under {root}; give its --data-dir DIR, or write "
            "NAMESPACE:NAME for a published one."
        )
    return versions[-1]


def resolve(args: argparse.Namespace) -> epath.Path:
    """NAME (with --data-dir) or NAMESPACE:NAME[:VERSION] -> dataset directory."""
    from tfds_bigarrays._registry.lookup import check_name

    if args.version and not VERSION.fullmatch(args.version):
        raise UsageError(f"--version {args.version!r} must look like 1.0.0 (major.minor.patch).")
    parts = args.dataset.split(":")
    if len(parts) >= 2:
        version = parts[2] if len(parts) > 2 else args.version
        return registry(args).dataset_dir(parts[0], parts[1], version)
    check_name(args.dataset, what="dataset name")
    root = epath.Path(data_dir(args))
    if args.version:
        path = root / args.dataset / args.version
        if not (path / "dataset_info.json").exists():
            raise UsageError(f"No version {args.version} of {args.dataset!r} under {root}.")
        return path
    return _latest(root, args.dataset)

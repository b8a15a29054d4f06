"""`tfds-bigarrays verify`: re-hash and re-read every shard of a dataset."""

from __future__ import annotations

import argparse

from etils import epath

from tfds_bigarrays._cli.common import DATASET_HELP, add_dataset_args, resolve, subcommand


def add_parser(sub) -> None:
    p = subcommand(
        sub,
        "verify",
        help="Re-hash and re-read every shard of a dataset.",
        description="Re-read every shard of a dataset: sizes, whole-shard checksums, every "
        "record's frame, layout and CRC32C. Exit status 1 if a shard is bad.",
        examples=[
            "tfds-bigarrays verify my_arrays --data-dir ~/tensorflow_datasets",
            "tfds-bigarrays verify team:my_arrays:1.0.0 --quick",
        ],
    )
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME", help=DATASET_HELP)
    p.add_argument(
        "--quick",
        action="store_true",
        help="only sizes and whole-shard checksums (records moved, swapped or replaced), "
        "not every record's layout and CRC32C",
    )
    add_dataset_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._registry.verify import verify

    reports = verify(resolve(args), quick=args.quick)
    bad = [r for r in reports if r.problem]
    for r in reports:
        status = "BAD " + r.problem if r.problem else "ok"
        print(f"{r.split:12s} {epath.Path(r.path).name}: {r.examples} examples, {status}")
    total = sum(r.examples for r in reports if not r.problem)
    print(f"{len(reports) - len(bad)}/{len(reports)} shards ok, {total} examples re-counted")
    if bad:
        names = ", ".join(epath.Path(r.path).name for r in bad)
        print(f"tfds-bigarrays verify: error: bad shard(s): {names}", flush=True)
        return 1
    return 0

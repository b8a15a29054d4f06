"""`tfds-bigarrays verify`: re-hash and re-read every shard of a dataset."""

from __future__ import annotations

import argparse

from etils import epath

from tfds_bigarrays._cli.common import add_dataset_args, resolve


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="Re-hash and re-read every shard of a dataset.")
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME")
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

"""`tfds-bigarrays inspect`: splits, counts, sizes, specs and provenance."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import add_dataset_args, resolve


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="Splits, counts, sizes, specs and provenance.")
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME")
    add_dataset_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._registry.verify import describe

    print(describe(resolve(args)))
    return 0

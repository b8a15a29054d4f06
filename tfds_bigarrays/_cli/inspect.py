"""`tfds-bigarrays inspect`: splits, counts, sizes, specs and provenance."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import DATASET_HELP, add_dataset_args, resolve, subcommand


def add_parser(sub) -> None:
    p = subcommand(
        sub,
        "inspect",
        help="Splits, counts, sizes, specs and provenance.",
        examples=[
            "tfds-bigarrays inspect my_arrays",
            "tfds-bigarrays inspect team:my_arrays --registry ~/registry.toml",
        ],
    )
    p.add_argument("dataset", metavar="NAME|NAMESPACE:NAME", help=DATASET_HELP)
    add_dataset_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._registry.verify import describe

    print(describe(resolve(args)))
    return 0

"""`tfds-bigarrays publish`: copy a built version into a team namespace."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import add_dataset_args, registry, resolve, subcommand


def add_parser(sub) -> None:
    p = subcommand(
        sub,
        "publish",
        help="Copy a built version into a team namespace.",
        description="Copy a built version into a team namespace of the registry, atomically; "
        "teammates then load it with tfds.load('NAMESPACE:NAME').",
        examples=[
            "tfds-bigarrays publish my_arrays --to team --registry ~/registry.toml",
            "tfds-bigarrays publish my_arrays --data-dir /data/tfds --version 1.0.0 --to team",
        ],
    )
    p.add_argument("dataset", metavar="NAME", help="a dataset built under --data-dir")
    p.add_argument(
        "--to", required=True, metavar="NAMESPACE", help="the registry namespace to publish into"
    )
    add_dataset_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._registry.publish import publish

    source = resolve(args)
    target = publish(source, registry=registry(args), namespace=args.to)
    print(f"Published {source} as {args.to}:{target.parent.name}:{target.name} at {target}")
    return 0

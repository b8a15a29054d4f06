"""`tfds-bigarrays publish`: copy a built version into a team namespace."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import add_dataset_args, registry, resolve


def add_parser(sub) -> None:
    p = sub.add_parser("publish", help="Copy a built version into a team namespace.")
    p.add_argument("dataset", metavar="NAME")
    p.add_argument("--to", required=True, metavar="NAMESPACE")
    add_dataset_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._registry.publish import publish

    source = resolve(args)
    target = publish(source, registry=registry(args), namespace=args.to)
    print(f"Published {source} as {args.to}:{target.parent.name}:{target.name} at {target}")
    return 0

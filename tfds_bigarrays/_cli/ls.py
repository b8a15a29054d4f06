"""`tfds-bigarrays ls`: list namespaces, or a namespace's datasets and versions."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import registry


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="List namespaces, or a namespace's datasets and versions.")
    p.add_argument("namespace", nargs="?")
    p.add_argument("--registry", help="registry TOML file(s) (default: $TFDS_BIGARRAYS_REGISTRY)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = registry(args)
    if args.namespace:
        for name, versions in found.datasets(args.namespace).items():
            print(f"{args.namespace}:{name}  {', '.join(versions)}")
        return 0
    for ns in sorted(found.namespaces.values(), key=lambda n: n.name):
        count = len(found.datasets(ns.name))
        print(f"{ns.name}  {count} dataset(s)  {ns.info}  [{', '.join(map(str, ns.paths))}]")
    return 0

"""`tfds-bigarrays ls`: list namespaces, or a namespace's datasets and versions."""

from __future__ import annotations

import argparse

from tfds_bigarrays._cli.common import add_data_dir, add_registry, registry, subcommand


def add_parser(sub) -> None:
    p = subcommand(
        sub,
        "ls",
        help="List namespaces, or a namespace's datasets and versions.",
        description="List the registry's namespaces, a namespace's datasets and versions, "
        "or (with --data-dir) the datasets built in a data directory.",
        examples=[
            "tfds-bigarrays ls --registry ~/registry.toml",
            "tfds-bigarrays ls team",
            "tfds-bigarrays ls --data-dir ~/tensorflow_datasets",
        ],
    )
    p.add_argument("namespace", nargs="?", help="a namespace: list its datasets and versions")
    add_registry(p)
    add_data_dir(p, what="to list the datasets of, instead of the registry")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data_dir:
        return _local(args)
    found = registry(args)
    if not found.files:
        print(
            "No registry file: name one with --registry FILE, or set "
            "TFDS_BIGARRAYS_REGISTRY=FILE (docs/registry.md). For the datasets built in a "
            "data directory: tfds-bigarrays ls --data-dir DIR."
        )
        return 0
    if args.namespace:
        for name, versions in found.datasets(args.namespace).items():
            print(f"{args.namespace}:{name}  {', '.join(versions)}")
        return 0
    for ns in sorted(found.namespaces.values(), key=lambda n: n.name):
        count = len(found.datasets(ns.name))
        print(f"{ns.name}  {count} dataset(s)  {ns.info}  [{', '.join(map(str, ns.paths))}]")
    return 0


def _local(args: argparse.Namespace) -> int:
    """Datasets of ours built under --data-dir, with their versions."""
    from etils import epath

    from tfds_bigarrays._build.plan import VERSION
    from tfds_bigarrays._cli.common import data_dir
    from tfds_bigarrays._format.layout import LAYOUT_FILENAME

    root = epath.Path(data_dir(args))
    if not root.is_dir():
        from tfds_bigarrays._cli.common import UsageError

        raise UsageError(f"--data-dir {root} is not a directory.")
    found = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = sorted(
            (
                v.name
                for v in folder.iterdir()
                if VERSION.fullmatch(v.name) and (v / LAYOUT_FILENAME).exists()
            ),
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
        if versions:
            found += 1
            print(f"{folder.name}  {', '.join(versions)}")
    if not found:
        print(f"No tfds_bigarrays datasets under {root}.")
    return 0

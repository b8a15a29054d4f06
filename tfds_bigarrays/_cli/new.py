"""`tfds-bigarrays new`: write a dataset folder in the TFDS template layout."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("new", help="Write a dataset folder in the TFDS template layout.")
    p.add_argument("name")
    p.add_argument("--dir", default=".", help="parent folder (default: .)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._build.template import write_template

    folder = write_template(args.name, parent=args.dir)
    print(f"Wrote {folder}. Test it with: python -m pytest {folder}")
    print(f"Build it with: tfds build {folder} --manual_dir {folder}/dummy_data")
    return 0

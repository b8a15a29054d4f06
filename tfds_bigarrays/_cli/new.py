"""`tfds-bigarrays new`: write a dataset folder in the TFDS template layout."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from tfds_bigarrays._cli.common import subcommand

    p = subcommand(
        sub,
        "new",
        help="Write a dataset folder in the TFDS template layout.",
        description="Write NAME/ with a builder (NAME_dataset_builder.py), its test, "
        "dummy_data/, checksums.tsv and README, for `tfds build NAME`.",
        examples=["tfds-bigarrays new my_arrays", "tfds-bigarrays new my_arrays --dir datasets"],
    )
    p.add_argument("name", help="dataset name (lower snake case), e.g. my_arrays")
    p.add_argument("--dir", default=".", help="parent folder (default: .)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._build.template import write_template

    folder = write_template(args.name, parent=args.dir)
    print(f"Wrote {folder}. Test it with: python -m pytest {folder}")
    print(f"Build it with: tfds build {folder} --manual_dir {folder}/dummy_data")
    return 0

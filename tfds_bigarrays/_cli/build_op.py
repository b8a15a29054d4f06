"""`tfds-bigarrays build-op`: compile the TensorFlow op again, in place."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from tfds_bigarrays._cli.common import subcommand

    p = subcommand(
        sub,
        "build-op",
        help="Compile the TensorFlow read op against the installed TensorFlow.",
        description=(
            "Compile the read path's TensorFlow op (op.cc) against the installed "
            "TensorFlow, into the installed package. Installing tfds-bigarrays does this "
            "already; run it after changing TensorFlow. Needs a C++ compiler (CXX, "
            "default g++)."
        ),
        examples=["tfds-bigarrays build-op", "CXX=clang++ tfds-bigarrays build-op"],
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfds_bigarrays._read import build, core, op
    from tfds_bigarrays._read.core import NotBuiltError

    core_path = core.library_path()
    if core_path is None:
        raise NotBuiltError(
            f"The read core is not built, so neither can the op be: {core.REBUILD_HINT}."
        )
    out = op.library_path() or (build.HERE / build.OP_NAME)
    try:
        build.build_op(out=out, core=core_path)
    except RuntimeError as e:
        raise NotBuiltError(f"Could not compile the TensorFlow op: {e}") from e
    print(out)
    return 0

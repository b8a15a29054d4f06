"""`tfds-bigarrays`: the command line, one module per subcommand.

Logging and TensorFlow's chatter are configured in `main()`, never at import.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from tfds_bigarrays._cli import (
    build,
    build_op,
    data_service,
    gpu,
    inspect,
    ls,
    new,
    publish,
    verify,
)
from tfds_bigarrays._cli.quiet import quiet_tensorflow
from tfds_bigarrays._errors import TfdsBigarraysError

SUBCOMMANDS = (build, publish, verify, inspect, ls, new, data_service, gpu, build_op)


def make_parser() -> argparse.ArgumentParser:
    from tfds_bigarrays._version import __version__

    parser = argparse.ArgumentParser(
        prog="tfds-bigarrays",
        description="NumPy arrays bigger than RAM as TensorFlow Datasets.",
        epilog="Run `tfds-bigarrays COMMAND --help` for a command's flags and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tfds-bigarrays {__version__}")
    # Not dest="command": `gpu run` has a positional of that name (the command to run).
    sub = parser.add_subparsers(dest="subcommand", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # This process's own TensorFlow start-up lines are filtered; the programs
    # `gpu run` starts inherit the environment, so it keeps TF's log level.
    quiet_tensorflow()
    if args.subcommand != "gpu":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # SIGTERM as Ctrl-C: builds and publishes then clean up what they started.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except (TfdsBigarraysError, FileExistsError) as e:
        return _fail(args, str(e))
    except KeyboardInterrupt as e:
        why = f"{e.args[0]}" if e.args else "SIGINT"
        return _fail(args, f"interrupted ({why}); nothing was left half-written.")
    except OSError as e:
        return _fail(args, f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(args: argparse.Namespace, message: str) -> int:
    from tfds_bigarrays._cli.common import as_flags

    # A feature the user named like a parameter (device=...) stays as written.
    features = {
        m.group(1)
        for text in getattr(args, "split", None) or []
        for m in re.finditer(r"(?:^[^:]*:|,)\s*(\w+)=", text)
    }
    print(
        f"tfds-bigarrays {args.subcommand}: error: {as_flags(message, keep=features)}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())

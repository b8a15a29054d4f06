"""The TensorFlow ops of the read core (op.cc): loaded, never compiled, here.

The library is built at install time (setup.py, `_read/build.py`); a missing
or unloadable one is a `NotBuiltError` that says how to build it.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

from tfds_bigarrays._read import core
from tfds_bigarrays._read.core import NotBuiltError
from tfds_bigarrays._read.plan import RecordLayout, ShardRead

_HERE = pathlib.Path(__file__).parent
BUILD_HINT = "run `tfds-bigarrays build-op` to compile it against the installed TensorFlow"


def library_path() -> pathlib.Path | None:
    found = sorted(_HERE.glob("_op*.so"))
    return found[0] if found else None


@functools.cache
def library() -> Any:
    """The ops' module (`tf.load_op_library`), loaded once per process.

    Raises:
      NotBuiltError: the library is missing or was built for another TensorFlow.
    """
    import tensorflow as tf

    core.lib()  # first, so that the op library links to this very copy of the core
    path = library_path()
    if path is None:
        raise NotBuiltError(
            f"The TensorFlow op of tfds_bigarrays is not built in {_HERE}: {BUILD_HINT}."
        )
    try:
        return tf.load_op_library(str(path))
    except (tf.errors.OpError, OSError) as e:
        raise NotBuiltError(
            f"The TensorFlow op {path} cannot be loaded by TensorFlow {tf.__version__} ({e}); "
            f"{BUILD_HINT}."
        ) from e


def layout_attrs(layout: RecordLayout, *, verify: bool) -> dict[str, Any]:
    """The attributes both ops take to describe a record."""
    return {
        "field_lengths": list(layout.field_lengths),
        "field_outputs": list(layout.field_outputs),
        "constants": layout.constants,
        "kinds": list(layout.kinds),
        "names": list(layout.names),
        "verify": verify,
        "out_types": [spec.dtype for spec in layout.specs],
        "out_shapes": [list(spec.shape) for spec in layout.specs],
    }


def read_group_attrs(
    layout: RecordLayout,
    reads: tuple[ShardRead, ...],
    identities: tuple[tuple[int, int, int, int], ...],
    *,
    verify: bool,
    block_rows: int,
    group_blocks: int,
    shuffle: bool,
    lookahead: int,
    mapped: bool,
    window_groups: int = 1,
    read_threads: int = 1,
    fill_pieces: bool = False,
) -> dict[str, Any]:
    return {
        **layout_attrs(layout, verify=verify),
        "filenames": [r.filename for r in reads],
        "skips": [r.skip for r in reads],
        "takes": [r.take for r in reads],
        "identities": [int(v) for ident in identities for v in ident],
        "block_rows": block_rows,
        "group_blocks": group_blocks,
        "window_groups": window_groups,
        "shuffle": shuffle,
        "lookahead": lookahead,
        "mapped": mapped,
        "read_threads": read_threads,
        "fill_pieces": fill_pieces,
    }

"""Every environment variable tfds_bigarrays reads: name, parser, default, doc.

Read with `get(VAR)`: the value is parsed (and checked) at the point of use,
so a process can change its environment between loads. A bad value raises
`EnvError`, naming the variable and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from tfds_bigarrays._errors import TfdsBigarraysError


class EnvError(TfdsBigarraysError, ValueError):
    """An environment variable of ours holds a value that cannot be used."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Var:
    """One environment variable.

    Attributes:
      name: the variable's name.
      parse: text -> value; raises ValueError with the fix on bad text.
      default: the value when unset or empty.
      doc: what it sets (shown in docs/loading.md and `--help` texts).
    """

    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


def _int_between(minimum: int, maximum: int, example: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise ValueError(f"must be an integer from {minimum} to {maximum}, e.g. {example}")
        return value

    return parse


def _megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError("must be a positive int (megabytes), e.g. 2048")
    return value


def _switch(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return text == "1"


def _address(text: str) -> str:
    if "://" not in text:
        raise ValueError(
            "is not a dispatcher address; write it with its protocol, e.g. "
            "grpc://localhost:5050, or unset it to read in this process"
        )
    return text


def _paths(text: str) -> tuple[str, ...]:
    return tuple(os.path.expanduser(p.strip()) for p in text.split(",") if p.strip())


def _devices(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError:
        raise ValueError("must be GPU indices separated by commas, e.g. 0 or 0,1") from None


MEMORY_BUDGET = Var(
    name="TFDS_BIGARRAYS_MEMORY_BUDGET",
    parse=_int_between(4 << 20, 1 << 40, "268435456"),
    default=None,
    doc="bytes the read pipeline's buffers may hold together (default: the dataset's "
    "recorded budget, 128 MiB unless built with --memory-budget)",
)
VERIFY_CHECKSUMS = Var(
    name="TFDS_BIGARRAYS_VERIFY_CHECKSUMS",
    parse=_switch,
    default=None,
    doc="0 skips the per-record CRC32C check while reading (frames and layout are still checked)",
)
AUTOLOAD = Var(
    # Read by tfds_bigarrays_autoload at start-up, which cannot import this
    # package (it imports TFDS); a test checks that the two names agree.
    name="TFDS_BIGARRAYS_AUTOLOAD",
    parse=_switch,
    default=True,
    doc="0: do not activate tfds_bigarrays when tensorflow_datasets is imported "
    "(then `import tfds_bigarrays` does)",
)
DATA_SERVICE = Var(
    name="TFDS_BIGARRAYS_DATA_SERVICE",
    parse=_address,
    default=None,
    doc="a tf.data service dispatcher (grpc://host:port): reading and decoding run on its workers",
)
REGISTRY = Var(
    name="TFDS_BIGARRAYS_REGISTRY",
    parse=_paths,
    default=(),
    doc="registry TOML file(s), comma-separated: the namespaces of tfds.load('team:name')",
)
GPU_MEMORY_MB = Var(
    name="TFDS_BIGARRAYS_GPU_MEMORY_MB",
    parse=_megabytes,
    default=None,
    doc="GPU memory cap in MB, applied by gpu.limit_memory() with no argument and by `gpu run`",
)
GPU_DEVICE = Var(
    name="TFDS_BIGARRAYS_GPU_DEVICE",
    parse=_devices,
    default=None,
    doc="GPU indices the cap applies to, e.g. 0,1 (default: all)",
)
GPU_REPORT = Var(
    name="TFDS_BIGARRAYS_GPU_REPORT",
    parse=str,
    default=None,
    doc="set by `gpu run` for its children: where each writes its peak GPU memory (JSON)",
)
MODEL_INDEX = Var(
    name="TFDS_BIGARRAYS_MODEL_INDEX",
    parse=_int_between(0, 1 << 20, "0"),
    default=None,
    doc="set by `gpu run` for its children: the index of the model a process trains",
)
FUZZ_EXAMPLES = Var(
    name="TFDS_BIGARRAYS_FUZZ_EXAMPLES",
    parse=_int_between(1, 1 << 30, "2000"),
    default=50,
    doc="tests only: Hypothesis examples per fuzz property",
)

ALL: tuple[Var, ...] = (
    MEMORY_BUDGET,
    VERIFY_CHECKSUMS,
    DATA_SERVICE,
    REGISTRY,
    GPU_MEMORY_MB,
    GPU_DEVICE,
    GPU_REPORT,
    MODEL_INDEX,
    FUZZ_EXAMPLES,
)


def get(var: Var) -> Any:
    """The variable's parsed value, or its default when unset or empty."""
    text = os.environ.get(var.name, "")
    if not text:
        return var.default
    try:
        return var.parse(text)
    except ValueError as e:
        raise EnvError(f"{var.name}={text!r} {e}.") from None

"""Compiles the TensorFlow op (op.cc) against the installed TensorFlow.

A TensorFlow custom op must match the headers and ABI of the TensorFlow it
runs in, so it is compiled with `tf.sysconfig`'s flags. setup.py runs this at
install time, against the pinned TensorFlow; `tfds-bigarrays build-op` runs it
again in an installed package (after changing TensorFlow). Nothing compiles at
read time. This module imports only the standard library (and TensorFlow
inside `build_op`), because setup.py loads it by path.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shlex
import subprocess
import sysconfig
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
CORE_NAME = "_core" + EXT_SUFFIX
OP_NAME = "_op" + EXT_SUFFIX


def build_op(*, out: pathlib.Path, core: pathlib.Path) -> None:
    """Compiles op.cc into `out`, linked to the core library `core` (same folder).

    Raises:
      RuntimeError: with the compiler's output, if the build fails.
    """
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(out.parent / ".op-build.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time: the leftovers are not theirs
        for stale in out.parent.glob(".op-*.so"):
            stale.unlink()  # a compile that was killed
        _compile(out, core)
    finally:
        os.close(lock)


def _compile(out: pathlib.Path, core: pathlib.Path) -> None:
    import tensorflow as tf

    fd, tmp = tempfile.mkstemp(prefix=".op-", suffix=".so", dir=out.parent)
    os.close(fd)
    command = [
        *shlex.split(os.environ.get("CXX", "g++")),
        "-shared",
        "-fPIC",
        "-O3",
        "-Wall",
        "-Wno-deprecated-declarations",  # TensorFlow's own headers
        f"-I{HERE}",
        str(HERE / "op.cc"),
        "-o",
        tmp,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
        f"-L{pathlib.Path(core).parent}",
        f"-l:{pathlib.Path(core).name}",
        "-Wl,-rpath,$ORIGIN",
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # atomically: a half-written library is never seen
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

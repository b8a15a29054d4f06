"""The TensorFlow op of the read path (`_read_op.cc`): built on first use, cached.

A TensorFlow custom op must be compiled against the TensorFlow it runs in
(its headers, its ABI), which a wheel of ours cannot know in advance. So the
op is compiled the first time a pipeline wants it, with the compile and link
flags of the installed TensorFlow (`tf.sysconfig`), into a cache directory
keyed by the sources, the TensorFlow version and the flags; later processes
load the cached library (about 10 s to build here, milliseconds to load).

Without a C++ compiler, or if the build fails, `library()` returns None once
with a warning saying why, and the reader falls back to its
`tf.numpy_function` path (same rows, same order, slower).

Settings (environment):
  TFDS_BIGARRAYS_OP=0: never build or use the op (the fallback path).
  TFDS_BIGARRAYS_CACHE: where the built library goes (default
    $XDG_CACHE_HOME/tfds_bigarrays, else ~/.cache/tfds_bigarrays).
  CXX: the C++ compiler (default g++).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pathlib
import shlex
import subprocess
import tempfile
import threading
from typing import Any

_SOURCES = ("_read_op.cc", "_readcore.h")
_ENV_SWITCH = "TFDS_BIGARRAYS_OP"
_ENV_CACHE = "TFDS_BIGARRAYS_CACHE"
_lock = threading.Lock()
_loaded: dict[str, Any] = {}


class OpBuildError(RuntimeError):
    """The op could not be compiled or loaded (the message says why)."""


def enabled() -> bool:
    return os.environ.get(_ENV_SWITCH, "1") != "0"


def cache_dir() -> pathlib.Path:
    if os.environ.get(_ENV_CACHE):
        return pathlib.Path(os.environ[_ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tfds_bigarrays"


@functools.cache
def _flags() -> tuple[list[str], list[str]]:
    """TensorFlow's compile and link flags (asked once: both the path and the build need them)."""
    import tensorflow as tf

    return list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def library_path() -> pathlib.Path:
    """Where the library for these sources, this TensorFlow and these flags lives."""
    import tensorflow as tf

    here = pathlib.Path(__file__).parent
    compile_flags, link_flags = _flags()
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    for part in (tf.__version__, os.environ.get("CXX", "g++"), *compile_flags, *link_flags):
        digest.update(part.encode() + b"\0")
    return cache_dir() / f"read_op-{tf.__version__}-{digest.hexdigest()[:16]}.so"


def build(path: pathlib.Path) -> None:
    """Compiles the op into `path` (atomically: a half-written library is never seen)."""
    here = pathlib.Path(__file__).parent
    compile_flags, link_flags = _flags()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.so", dir=path.parent)
    except OSError as e:
        raise OpBuildError(
            f"cannot write the op into {path.parent} ({e.strerror}); set {_ENV_CACHE} to a "
            "writable directory"
        ) from e
    os.close(fd)
    command = [
        *shlex.split(os.environ.get("CXX", "g++")),
        "-shared",
        "-fPIC",
        "-O3",
        "-Wno-deprecated-declarations",
        f"-I{here}",
        str(here / "_read_op.cc"),
        "-o",
        tmp,
        *compile_flags,
        *link_flags,
    ]
    try:
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OpBuildError(f"could not run {command[0]}: {e}") from e
        if proc.returncode != 0:
            raise OpBuildError(
                f"{shlex.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        os.chmod(tmp, 0o700)  # whatever the linker and umask did: private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_private(path: pathlib.Path) -> None:
    """Refuses to load code that another user could have planted or altered."""
    for p in (path.parent, path):
        try:
            st = p.stat()
        except OSError as e:
            raise OpBuildError(f"cannot read {p} ({e.strerror})") from e
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise OpBuildError(
                f"{p} is not owned by this user or is writable by others (mode "
                f"{st.st_mode & 0o777:o}): not loading a library from there. Remove it, or set "
                f"{_ENV_CACHE} to a private directory."
            )


def load_library() -> Any:
    """The op's module (`tf.load_op_library`), building it first if needed.

    Raises:
      OpBuildError: if it cannot be built or loaded.
    """
    import tensorflow as tf

    with _lock:
        if "module" in _loaded:
            return _loaded["module"]
        path = library_path()
        if not path.exists():
            build(path)
        _check_private(path)
        try:
            module = tf.load_op_library(str(path))
        except (tf.errors.OpError, OSError) as e:
            raise OpBuildError(f"could not load {path}: {e}") from e
        _loaded["module"] = module
        return module


def library() -> Any | None:
    """The op's module, or None (once warned) where it is off or cannot be built."""
    if not enabled():
        return None
    if "error" in _loaded:
        return None
    try:
        return load_library()
    except OpBuildError as e:
        with _lock:
            if "error" not in _loaded:
                _loaded["error"] = str(e)
                logging.getLogger(__name__).warning(
                    "tfds_bigarrays: reading through tf.numpy_function (slower): the "
                    "TensorFlow op could not be built: %s. Set %s=0 to skip trying.",
                    e,
                    _ENV_SWITCH,
                )
        return None

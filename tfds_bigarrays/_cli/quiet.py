"""Keeps the libraries' start-up and worker logs out of the CLI's output.

TensorFlow logs its start-up (oneDNN, CUDA stubs, CPU features, a failed
`cuInit` on machines without a GPU) through absl before absl is initialized,
and such messages ignore `TF_CPP_MIN_LOG_LEVEL`, so the only way to hide them
is at the file descriptor. Beam's worker processes log dozens of lines per
build to the stderr they inherit; the CLI sends those to a log file instead
and keeps the terminal for its progress bar.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

# Lines TensorFlow writes while it loads and finds its devices. Errors other
# than CUDA's missing-driver ones still get through.
_CHATTER = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] "
    rb"|E\d{4} [\d:. ]+\d+ (cuda_\w+|gpu_\w+)\.cc:\d+\] "
    rb"|To enable the following instructions: .* rebuild TensorFlow"
)


def filtered(text: bytes) -> bytes:
    """`text` without TensorFlow's start-up lines."""
    return b"".join(
        line for line in text.splitlines(keepends=True) if not _CHATTER.match(line.lstrip())
    )


# Run as a separate process so that what TensorFlow writes just before an
# abort (a fatal "Check failed" line) still reaches the terminal.
_FILTER = (
    "import os, re, sys\n"
    "chatter = re.compile(sys.argv[1].encode('latin-1'))\n"
    "for line in sys.stdin.buffer:\n"
    "    if not chatter.match(line.lstrip()):\n"
    "        os.write(2, line)\n"
)


@contextlib.contextmanager
def stderr_filtered() -> Iterator[None]:
    """This process's fd 2, without the start-up chatter, through a filter process."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        filter_ = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", _FILTER, _CHATTER.pattern.decode("latin-1")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=saved,
        )
    except OSError:  # no process to spare: unfiltered rather than not at all
        os.close(saved)
        yield
        return
    assert filter_.stdin is not None
    os.dup2(filter_.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        filter_.stdin.close()
        filter_.wait()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any):
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        # is_package, get_resource_reader, ...: as the real loader.
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stderr_filtered():
            self._loader.exec_module(module)
            # Finding the devices is the other noisy step (cuInit); do it now,
            # inside the filter. Physical devices only: a caller can still
            # configure logical devices and memory growth afterwards.
            with contextlib.suppress(Exception):
                module.config.list_physical_devices()


class _QuietTensorflow(importlib.abc.MetaPathFinder):
    """Filters stderr while `tensorflow` is first imported, wherever that happens."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and find_spec below must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Hides TensorFlow's start-up lines in this process, if it imports TensorFlow."""
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorflow) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorflow())


@contextlib.contextmanager
def logs_to_file(prefix: str) -> Iterator[str]:
    """Sends fd 2 (this process's logging and its children's) to a log file.

    `sys.stderr` keeps writing to the terminal, so progress bars and the CLI's
    own messages still show. Yields the log's path; the log is kept.
    """
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    previous = sys.stderr
    os.dup2(fd, 2)
    log = os.fdopen(fd, "w", buffering=1)
    # Logging configured from now on (logging.warning() calls basicConfig,
    # which would pick up the terminal) must write into the log too.
    root = logging.getLogger()
    handler = None
    if not root.handlers:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
        root.addHandler(handler)
    sys.stderr = terminal
    try:
        yield path
    finally:
        terminal.flush()
        sys.stderr = previous
        if handler is not None:
            root.removeHandler(handler)
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        terminal.close()

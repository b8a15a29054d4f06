"""Python calls made by tf.data threads, and a quiet exit for them.

A pipeline that calls Python (`tf.numpy_function`) and is still filling its
buffers when the interpreter finalizes hangs the process for good (TF 2.21,
Python 3.11): a tf.data thread that asks for the GIL after finalization has
begun is ended by Python (`PyThread_exit_thread`) before its call returns,
and the main thread, destroying the iterator while it clears module
globals, then waits forever for that call. A script whose last line is
`next(iter(ds))`, or that stops a training loop early, never exits.

So every Python call our pipelines make goes through `CALLS.wrap`, which
counts the calls in flight, and an `atexit` hook (registered by the first
wrapped function, not at import) waits, before finalization, until no call
has been in flight for a short while: by then every buffer of the pipeline
is full, nothing calls Python any more, and the iterator is destroyed
cleanly. The wait gives up after a bound, so a consumer that keeps reading
from another thread at exit delays the exit by at most that bound.

A heuristic, not a guarantee: a TensorFlow-only stage after ours that keeps
pulling batches during shutdown, more slowly than one per QUIET_SECONDS,
can still start a call after the wait returned. Only TensorFlow can close
that window (its py_func kernel checks `Py_IsInitialized`, which stays
true while the interpreter finalizes).
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

# Idle this long (no call in flight, none ended more recently) means the
# pipeline's buffers are full: a group takes about a millisecond.
QUIET_SECONDS = 0.05
# A consumer still reading from another thread at exit delays it this much.
EXIT_WAIT_SECONDS = 5.0


class _Calls:
    """Counts Python calls in flight from tf.data threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._last_end = 0.0

    def wrap(self, fn: _F) -> _F:
        """`fn`, counted while it runs; arms the exit wait on first use."""
        _register_hooks()

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._in_flight += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._last_end = time.monotonic()
                    if not self._in_flight:
                        self._idle.notify_all()

        return call  # type: ignore[return-value]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def wait_quiet(
        self, *, quiet: float = QUIET_SECONDS, timeout: float = EXIT_WAIT_SECONDS
    ) -> bool:
        """Waits until no call has run for `quiet` seconds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                now = time.monotonic()
                if not self._in_flight and now - self._last_end >= quiet:
                    return True
                if now >= deadline:
                    return False
                wake = self._last_end + quiet if not self._in_flight else deadline
                self._idle.wait(max(0.001, min(wake, deadline) - now))

    def _after_fork_in_child(self) -> None:
        # The parent's tf.data threads do not exist in the child.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0


CALLS = _Calls()


def _at_exit() -> None:
    CALLS.wait_quiet()


@functools.cache
def _register_hooks() -> None:
    """Registered by the first pipeline built, not at import."""
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=CALLS._after_fork_in_child)  # noqa: SLF001

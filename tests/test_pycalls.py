"""The count of Python calls in flight that lets a process exit quietly."""

import threading
import time

from tfds_bigarrays._pycalls import _Calls


def test_wait_quiet_waits_for_calls_in_flight():
    calls = _Calls()
    release = threading.Event()
    entered = threading.Event()

    @calls.wrap
    def slow(x):
        entered.set()
        release.wait(10)
        return x * 2

    results = []
    thread = threading.Thread(target=lambda: results.append(slow(21)))
    thread.start()
    assert entered.wait(10)
    assert calls.in_flight == 1
    assert calls.wait_quiet(quiet=0.01, timeout=0.2) is False  # still running
    release.set()
    start = time.monotonic()
    assert calls.wait_quiet(quiet=0.05, timeout=10) is True
    assert time.monotonic() - start >= 0.05  # quiet counted from the call's end
    thread.join(10)
    assert results == [42] and calls.in_flight == 0


def test_a_failing_call_is_not_counted_forever():
    calls = _Calls()

    @calls.wrap
    def boom():
        raise ValueError("bad shard")

    for _ in range(3):
        try:
            boom()
        except ValueError:
            pass
    assert calls.in_flight == 0
    assert calls.wait_quiet(quiet=0.0, timeout=1) is True

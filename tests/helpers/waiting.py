"""Waiting on a condition or on a process's output, never for time to pass.

``wait_until`` polls a condition until it holds, with a deadline from
``time.monotonic()``; ``read_line`` waits for a subprocess to print a line.
Both fail with an AssertionError that names what never happened. Where a
test needs time to pass (an expiry), ``ManualClock`` stands in for the code's
clock and the test moves it.
"""

from __future__ import annotations

import os
import selectors
import time
from typing import IO, Callable, TypeVar

T = TypeVar("T")
POLL_S = 0.02  # between two looks at the condition: how quickly a wait notices it, not a wait itself


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = POLL_S) -> T:
    """Call ``predicate`` until it returns something true, and return that; an AssertionError
    naming ``what`` (the condition, e.g. "the job finished") if it has not after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"waited {timeout:g} s, and still not: {what}")
        time.sleep(min(interval, left))


def read_line(stream: IO[bytes], timeout: float, what: str) -> bytes:
    """The next line a subprocess writes to ``stream`` (its ``stdout=PIPE``), newline included;
    what was written before the end of the stream if it ends first (``b""`` for nothing).
    Reads byte by byte from the pipe, so nothing after the line is taken from it."""
    fd = stream.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"waited {timeout:g} s, and still not: {what} (read so far: {line!r})")
            byte = os.read(fd, 1)
            if not byte:
                return line
            line += byte
    return line


class ManualClock:
    """A clock that moves only when a test moves it: pass it where code takes a ``clock``."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

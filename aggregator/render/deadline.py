"""A time budget for a render: code that runs too long is interrupted where it runs.

An operator's template can loop for hours without writing a byte (three nested
`range(10000)` loops with an empty body: 10¹² iterations), which no output cap or range
limit catches, and Jinja2 offers no way to stop a render. A render is pure Python, so the
thread running it can be interrupted between two bytecodes: a timer thread raises
`RenderTimeout` in it (`PyThreadState_SetAsyncExc`) when the budget is spent. The render's
caller catches it like any other template error.
"""

from __future__ import annotations

import ctypes
import threading
from types import TracebackType


class RenderTimeout(Exception):
    """The render took longer than its budget."""


def _raise_in(thread: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in `thread` at its next bytecode; None clears one not yet raised."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(exception) if exception else None
    )


class Deadline:
    """`with Deadline(seconds):` the body is interrupted with `RenderTimeout` once
    `seconds` have passed. Only for pure-Python work with no cleanup of its own to do (a
    render builds a string): the exception may land anywhere in it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._thread = 0
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        self._thread = threading.get_ident()
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self.fired = True
                _raise_in(self._thread, RenderTimeout)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._timer is not None
        self._timer.cancel()
        with self._lock:
            self._done = True
            if self.fired:
                _raise_in(self._thread, None)  # fired as the body ended: not delivered yet
        if self.fired and kind is None:
            raise RenderTimeout

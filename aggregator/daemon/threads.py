"""Work the daemon runs in threads of their own: publishing, copying, loading feeds.toml."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# How long a thread may keep the GIL while another waits for it (CPython's default: 5 ms).
# The event loop's SQLite calls give the GIL up at every statement and every row, and must
# take it back from whatever thread runs Python meanwhile: behind a publish rendering 50,000
# sources on its thread, a claim of a few rows took 0.1-0.3 s at 5 ms a wait. `/healthz`'s
# slowest answer while a daemon takes in 50,000 sources: 0.55 s at 5 ms, 0.33 s at 1 ms
# (`python -m bench stall`). A thread alone never waits, so nothing else changes.
LOOP_SWITCH_SECONDS = 0.001


_running: list[float] = []  # the setting before the first daemon of the process started
_guard = threading.Lock()


@contextlib.contextmanager
def loop_first() -> Iterator[None]:
    """The GIL handed over within `LOOP_SWITCH_SECONDS` while a daemon runs; the
    interpreter's setting back when the last daemon of the process stops (tests run
    several, whose runs overlap)."""
    with _guard:
        _running.append(sys.getswitchinterval())
        sys.setswitchinterval(min(_running[0], LOOP_SWITCH_SECONDS))
    try:
        yield
    finally:
        with _guard:
            before = _running.pop()
            if not _running:
                sys.setswitchinterval(before)


async def in_daemon_thread(name: str, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a thread of its own that never delays the process's exit.

    Not `asyncio.to_thread`: the default executor's threads are joined at exit (by
    `asyncio.run` and by the interpreter), so one stuck in a publish would keep a stopped
    daemon alive. A daemon thread ends with the process; what it was writing is safe, each
    file being replaced atomically and each store write being one transaction.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not outcome.done():  # the caller may have been cancelled meanwhile
            setter(value)

    def run() -> None:
        try:
            result = work(*args)
        except BaseException as e:  # whatever happens, the awaiting task hears of it
            setter: Callable[[Any], None] = outcome.set_exception
            value: Any = e
        else:
            setter, value = outcome.set_result, result
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, setter, value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await outcome

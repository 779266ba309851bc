"""Work the daemon runs in threads of their own: publishing, copying, loading feeds.toml."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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

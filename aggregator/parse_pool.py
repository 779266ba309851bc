"""Parsing on every core: feedparser is pure Python and holds the GIL, so threads cannot.

A pool of worker processes, one per core, started on the first feed that needs parsing (a
cycle of 304s never pays for it) and kept for the life of the process. Workers come from a
fork server, never forked from the daemon itself, whose threads (the web server, the file
watcher) a fork would copy in whatever state they were in. A worker is also where a hostile
document spends its memory: a worker that dies takes only its own feed with it, the pool
is rebuilt, the feeds that were in flight on it are tried once more, and a feed that kills
a worker twice is reported as failed.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from aggregator.errors import ParseError
from aggregator.types import ParsedFeed

_PR_SET_PDEATHSIG = 1
# The pid a fork server or worker expects as its parent: one reparented to a subreaper (not
# to pid 1) finds out its parent died before it asked to die with it.
_PARENT_PID = "AGGREGATOR_PARSER_PARENT"
# Imported by the fork server when it starts: the parser, and `die_with_parent` run there.
_PRELOAD = "aggregator.parse_server"
# A worker is replaced after this many feeds, so anything feedparser or a hostile feed
# leaves behind in it (caches, fragmented memory) is returned to the system.
_TASKS_PER_WORKER = 500


def worker_count() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere nothing).

    Run in the fork server (it is imported there first, see `_PRELOAD`) and in each worker:
    a daemon killed with SIGKILL runs no clean-up, and its fork server and workers would
    otherwise live on, orphaned, holding their memory.
    """
    if not sys.platform.startswith("linux"):
        return
    expected = os.environ.get(_PARENT_PID)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: orphans are then left to the caller
        return
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)  # the parent died before the request took effect (we were reparented)
    os.environ[_PARENT_PID] = str(os.getpid())  # what the processes this one starts check


def _parse(
    body: bytes, headers: dict[str, str], url: str, timezone: str, teaser_length: int
) -> ParsedFeed:
    from aggregator.parse import parse_feed

    return parse_feed(body, headers, url, timezone=timezone, teaser_length=teaser_length)


class ParsePool:
    """`await pool.parse(...)` from the event loop; `close()` when done."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers or worker_count()
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                os.environ[_PARENT_PID] = str(os.getpid())  # see die_with_parent
                context = multiprocessing.get_context("forkserver")
                # The fork server imports the parser once; every worker is forked with it
                # loaded. (Not the default, `__main__`: that would load the whole CLI.)
                # Importing it also ties the fork server's life to this process's.
                context.set_forkserver_preload([_PRELOAD])
                self._executor = ProcessPoolExecutor(
                    max_workers=self._workers,
                    mp_context=context,
                    initializer=die_with_parent,
                    max_tasks_per_child=_TASKS_PER_WORKER,
                )
            return self._executor

    async def parse(
        self,
        body: bytes,
        headers: Mapping[str, str],
        url: str,
        *,
        timezone: str = "UTC",
        teaser_length: int = 200,
    ) -> ParsedFeed:
        """The parsed feed; `ParseError` when it is not one or it killed its worker twice."""
        call = functools.partial(_parse, body, dict(headers), url, timezone, teaser_length)
        for attempt in (1, 2):
            pool = self._pool()
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, call)
            except BrokenProcessPool as e:
                self._discard(pool)
                if attempt == 2:
                    raise ParseError("the parser process died on this feed (out of memory?)") from e
        raise AssertionError("unreachable")

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False)  # its pending feeds have already failed with it

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

"""Parsing on every core: feedparser is pure Python and holds the GIL, so threads cannot.

A pool of worker processes, one per core, started on the first feed that needs parsing (a
cycle of 304s never pays for it); workers with nothing to parse for `IDLE_SECONDS` exit,
and the next feed forks new ones from the fork server, which stays. Workers come from a
fork server, never forked from the daemon itself, whose threads (the web server, the file
watcher) a fork would copy in whatever state they were in. A worker is also where a hostile
document spends its memory: a worker that dies takes only its own feed with it, the pool
is rebuilt, the feeds that were in flight on it are tried once more, and a feed that kills
a worker twice is reported as failed.

Each parse has a time budget. A running task cannot be cancelled, so a parse over budget
has its pool's workers killed (the pool is rebuilt on the next parse) and fails with
`ParseTimeout`; the other feeds in flight on that pool are parsed again, at no cost to
them. At most one feed more than there are workers is in the pool at a time: that one keeps
a worker from idling while the event loop is busy (without it a cycle of 200 feeds took a
quarter longer here). Since it may wait for a worker through at most one other parse,
itself bounded by the budget, its deadline is twice the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import forkserver
from typing import Any

from aggregator.errors import ParseError, ParseTimeout
from aggregator.processes import (
    die_with_parent,
    fork_server_context,
    kill_workers,
    worker_count,
)
from aggregator.settings import DEFAULT_PARSE_TIMEOUT
from aggregator.types import ItemMemory, ParsedFeed

# Workers are replaced after this many feeds each, so anything feedparser or a hostile feed
# leaves behind in them (caches, fragmented memory) is returned to the system: the whole
# executor is retired for a new one (`_pool`), not each worker by `max_tasks_per_child`,
# which on Python 3.11 leaves a pool short of workers and can leave it with none while
# feeds wait (CPython gh-115634: a replacement is skipped on a stale idle-worker token).
# A new worker costs ~75 ms of CPU (fork, first touches of its memory): ~0.04 ms a feed.
_TASKS_PER_WORKER = 2000
# Workers exit when no feed came for this long: a daemon between polls does not hold a
# worker per core (~15 MB each, most of it feedparser's working memory) doing nothing. The
# next feed forks a new one from the fork server, which keeps the parser loaded: ~75 ms of
# CPU, paid at most once per idle spell (a daemon whose changed feeds come more often than
# this keeps its workers). Ten seconds, as php-fpm's on-demand workers wait.
IDLE_SECONDS = 10.0
# A feed whose pool is killed for other feeds' budgets again and again still ends.
_MAX_SUBMISSIONS = 8
DEFAULT_BUDGET = DEFAULT_PARSE_TIMEOUT.total_seconds()  # `[poll] parse_timeout`'s default


def _parse(
    body: bytes, headers: dict[str, str], url: str, timezone: str, partly: Partly | None
) -> ParsedFeed:
    if partly is None:
        from aggregator.parse.feed import parse_feed

        return parse_feed(body, headers, url, timezone=timezone)
    from aggregator.parse.partial import parse_changed

    return parse_changed(body, headers, url, timezone=timezone, memory=partly.memory)


@dataclass(frozen=True)
class Partly:
    """Parse only the items that changed since the parse `memory` is of (`parse.partial`)."""

    memory: ItemMemory | None = None  # None: parse it all, and remember its items


def describe_budget(seconds: float) -> str:
    """ "parse took longer than 20 s": the reason a timed-out source shows in `status`."""
    return f"parse took longer than {seconds:g} s"


def _nothing() -> None:
    """A task that only makes an executor spawn a worker."""


def _spawn_first_worker(pool: ProcessPoolExecutor, done: Future[None]) -> None:
    """Have `pool` spawn a worker (waiting, if need be, for the fork server to start)."""
    try:
        # Broken or shut down meanwhile: the parse's own submit will say so.
        with contextlib.suppress(Exception):
            pool.submit(_nothing)
    finally:
        done.set_result(None)


def _stop_fork_server() -> None:
    """End multiprocessing's fork server (it is started again when a pool needs it)."""
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, AttributeError):
        server._stop()  # closes its pipe, reaps it, removes its socket


class ParsePool:
    """`await pool.parse(...)` from the event loop; `close()` when done.

    Used from one event loop at a time (the daemon's, or one `asyncio.run` after another).
    """

    def __init__(self, workers: int | None = None, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self._workers = workers or worker_count()
        self._idle_seconds = idle_seconds
        self._idle_check: asyncio.TimerHandle | None = None  # `_retire_if_idle`, when due
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        # Executors killed for one feed's budget: the others in flight there are not to blame.
        self._sacrificed: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()
        self._stopped: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()  # close(kill)
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._running = 0
        self._progress = time.monotonic()  # the last parse ended, or work began after idling
        self._submitted = 0  # feeds given to the current executor
        # Feeds given an executor and not yet handed to it (waiting for its first worker):
        # it is not retired under them, or their hand-over would be refused.
        self._waiting: weakref.WeakKeyDictionary[ProcessPoolExecutor, int] = (
            weakref.WeakKeyDictionary()
        )
        # Executors retired for a new one, finishing what they were given, with their
        # workers: a shut-down executor forgets its own (`_processes` becomes None), and a
        # parse over budget on one must still have its worker killed (`_kill`). The map is
        # the executor's own, which its manager thread keeps up to date.
        self._retired: weakref.WeakKeyDictionary[ProcessPoolExecutor, Mapping[int, Any]] = (
            weakref.WeakKeyDictionary()
        )
        # Each executor's first worker, being spawned on a thread of its own (`_first_worker`).
        self._starting: weakref.WeakKeyDictionary[ProcessPoolExecutor, Future[None]] = (
            weakref.WeakKeyDictionary()
        )

    def _pool(self) -> ProcessPoolExecutor:
        """The executor to give the next feed to: a new one once the current one was given
        `_TASKS_PER_WORKER` feeds per worker (it finishes those, then its workers exit)."""
        with self._lock:
            if self._submitted >= self._recycle_after():
                self._retire()  # unless it cannot be yet: renewed at a later feed
            if self._executor is None:
                self._submitted = 0
                self._executor = ProcessPoolExecutor(
                    max_workers=self._workers,
                    mp_context=fork_server_context(),
                    initializer=die_with_parent,
                )
            self._submitted += 1
            self._waiting[self._executor] = self._waiting.get(self._executor, 0) + 1
            return self._executor

    def _handed(self, pool: ProcessPoolExecutor) -> None:
        """A feed `_pool` gave `pool` was handed to it (or gave up before)."""
        with self._lock:
            self._waiting[pool] -= 1

    def _retire(self) -> bool:
        """Retire the current executor (with `_lock` held): it finishes what it was given,
        then its workers exit; the next feed gets a new one. False if it cannot be yet:
        a feed it was given waits to be handed to it (the hand-over would be refused), or
        its first worker is still being spawned (the spawning thread holds the executor's
        lock, which `shutdown` would wait for here, on the event loop, for as long as the
        fork server is stuck)."""
        current = self._executor
        if current is None:
            return True
        starting = self._starting.get(current)
        if self._waiting.get(current, 0) or (starting is not None and not starting.done()):
            return False
        self._executor = None
        self._retired[current] = current._processes
        current.shutdown(wait=False)
        return True

    def _retire_when_idle(self) -> None:
        """Look again in `_idle_seconds`: if no feed came meanwhile, the workers exit."""
        if self._idle_check is not None:
            self._idle_check.cancel()  # superseded (harmless on a loop that has ended)
        loop = asyncio.get_running_loop()
        self._idle_check = loop.call_later(self._idle_seconds, self._retire_if_idle)

    def _retire_if_idle(self) -> None:
        self._idle_check = None
        if self._running:  # busy again: the end of that work looks again
            return
        with self._lock:
            retired = self._retire()
        if not retired:  # a first worker still being spawned (a parse waited, then left)
            self._retire_when_idle()  # look again later

    def _first_worker(self, pool: ProcessPoolExecutor) -> Future[None]:
        """The spawn of `pool`'s first worker, begun on another thread at the first call.

        An executor spawns a worker inside `submit`, and the first spawn waits for the fork
        server to load the parser (~0.12 s here, longer on a loaded machine): on the event
        loop, that would freeze every poll in flight. The fork server itself is started
        here, on the event loop's thread, which lasts as long as the process: it asks to die
        with its parent (`die_with_parent`), and Linux takes that to mean the thread that
        started it, not the process (a short-lived thread's end would kill it). The future is
        already running, so a parse that stops waiting for it cannot cancel it for the
        others; `_run` bounds the wait by the parse's budget.
        """
        with self._lock:
            starting = self._starting.get(pool)
            if starting is None:
                forkserver.ensure_running()  # starts it, does not wait for it
                starting = self._starting[pool] = Future()
                starting.set_running_or_notify_cancel()
                try:
                    threading.Thread(
                        target=_spawn_first_worker, args=(pool, starting), daemon=True
                    ).start()
                except RuntimeError:  # no thread to be had: the parse's own submit spawns it
                    starting.set_result(None)
        return starting

    def _recycle_after(self) -> int:
        return self._workers * _TASKS_PER_WORKER

    def _free_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self._workers + 1))
        return self._slots[1]

    def stalled_seconds(self) -> float:
        """How long parses have been in flight with none finishing; 0.0 when idle."""
        return time.monotonic() - self._progress if self._running else 0.0

    async def parse(
        self,
        body: bytes,
        headers: Mapping[str, str],
        url: str,
        *,
        timezone: str = "UTC",
        budget: float = DEFAULT_BUDGET,
        partly: Partly | None = None,
    ) -> ParsedFeed:
        """The parsed feed; `ParseError` when it is not one, it killed its worker twice, or
        it took longer than `budget` seconds (`ParseTimeout`). With `partly`, only the
        items that changed since its memory are parsed (`parse.partial`)."""
        call = functools.partial(_parse, body, dict(headers), url, timezone, partly)
        deaths = 0
        for _ in range(_MAX_SUBMISSIONS):
            async with self._free_slots():
                pool = self._pool()
                try:
                    return await self._run(pool, call, budget)
                except BrokenProcessPool as e:
                    self._discard(pool)
                    if pool in self._stopped:
                        raise ParseError("the parser was stopped") from e
                    if pool in self._sacrificed:
                        continue  # killed for another feed's budget: try again, uncounted
                    deaths += 1
                    if deaths == 2:
                        raise ParseError(
                            "the parser process died on this feed (out of memory?)"
                        ) from e
        raise ParseError("the parser pool kept failing; try again later")

    async def _run(
        self, pool: ProcessPoolExecutor, call: functools.partial[ParsedFeed], budget: float
    ) -> ParsedFeed:
        """`call` on `pool`, its workers killed if it takes longer than `budget` seconds
        (waiting for a new pool's first worker included)."""
        if not self._running:
            self._progress = time.monotonic()  # busy from now, not since the last parse
        # Every worker busy: this feed waits for one through at most one parse (≤ budget).
        deadline = budget * 2 if self._running >= self._workers else budget
        self._running += 1
        future: Future[ParsedFeed] | None = None
        try:
            async with asyncio.timeout(deadline):
                try:
                    starting = self._first_worker(pool)
                    if not starting.done():
                        await asyncio.wrap_future(starting)
                    future = pool.submit(call)
                except RuntimeError as e:  # shut down meanwhile (killed for another feed)
                    raise BrokenProcessPool(str(e)) from e
                finally:
                    self._handed(pool)
                waiting = asyncio.wrap_future(future)
                try:
                    # Shielded: a cancel passed on to a feed still queued in the executor
                    # made CPython 3.11's pool, once its workers were killed (a stop, a
                    # budget), raise InvalidStateError in its manager thread (it sets every
                    # queued future's exception) and leave its clean-up undone.
                    return await asyncio.shield(waiting)
                except asyncio.CancelledError:
                    waiting.add_done_callback(_outcome_taken)
                    raise
        except TimeoutError:
            if future is None:
                # No worker within the budget: the fork server is stuck (stopped, starved).
                # Ended, it unblocks the spawning thread, and the next pool starts anew.
                _stop_fork_server()
            self._sacrifice(pool)
            raise ParseTimeout(describe_budget(budget)) from None
        except asyncio.CancelledError:
            # The worker goes on with it: should it run past the budget, kill it then.
            if future is not None and not future.done():
                loop = asyncio.get_running_loop()
                loop.call_later(deadline, self._kill_if_running, pool, future)
            raise
        finally:
            self._running -= 1
            self._progress = time.monotonic()
            if not self._running:
                self._retire_when_idle()

    def _kill_if_running(self, pool: ProcessPoolExecutor, future: Future[ParsedFeed]) -> None:
        if not future.done():
            self._sacrifice(pool)

    def _sacrifice(self, pool: ProcessPoolExecutor) -> None:
        """Kill `pool`'s workers for one feed's sake; the others in flight are retried."""
        self._sacrificed.add(pool)
        kill_workers(pool, self._retired.get(pool))  # first: a shutdown forgets its processes
        self._discard(pool)

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False)  # its pending feeds have already failed with it

    def close(self, *, kill: bool = False) -> None:
        """Wait for the parses under way to end; with `kill`, end them (and the fork
        server) at once: a stop must not wait for a runaway parse."""
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        with self._lock:
            executor, self._executor = self._executor, None
            executors = [*self._retired, *([executor] if executor is not None else [])]
        if kill:
            # The fork server first: a thread spawning a first worker through it holds
            # that executor's lock (which `kill_workers`' shutdown waits for) until it
            # answers, and a stuck one never would.
            _stop_fork_server()
            for each in executors:
                self._stopped.add(each)
                kill_workers(each, self._retired.get(each))
        else:
            for each in executors:
                each.shutdown(wait=True, cancel_futures=True)


def _outcome_taken(waiting: asyncio.Future[ParsedFeed]) -> None:
    """Take the outcome of a parse nobody waits for any more, so that its failure (the
    pool killed at a stop) is not logged as never retrieved."""
    if not waiting.cancelled():
        waiting.exception()

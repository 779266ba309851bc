"""Archive days rendered on every core, for `aggregator once`.

A first `once` builds the archive of every past day in its publish (13 days of 2,000
entries for 1,000 feeds: ~3 s of rendering, half the publish), after the parser processes
have ended and while a core waits. A day's render is a pure function of picklable values
(the publication's site, theme and channel; the `ArchiveDay`), so worker processes do it
and send back the files' bytes, in order; same input, same bytes. Workers are started only
for work worth their start (~0.1-0.2 s): at least `MIN_ITEMS` items to render, so a publish
that changes a day or two renders them here. They come from the fork server, as the
parser's do (`aggregator.processes`), and leave Ctrl-C to this process.

What goes wrong in a worker is handled here: a render error (a template's, or its time
budget spent) stops the other workers at once, as the parser's budget does, rather than
letting the days handed to them run out their own budgets; a worker that dies (killed, out
of memory) leaves the rest of the publish's days to be rendered here.

The daemon does not use them: it renders one day at a time, paced in its publishing
thread, and several documents at once would raise its peak memory, which is bounded.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from aggregator.archive import ArchiveDay
from aggregator.processes import (
    die_with_parent,
    fork_server_context,
    kill_workers,
    worker_count,
)

log = logging.getLogger("aggregator")

R = TypeVar("R")

# More workers than this only hold more documents at once: a publish renders a few days.
MAX_WORKERS = 4
# Items to render below which the days are rendered here: ~0.2 s of rendering, what
# starting the workers costs.
MIN_ITEMS = 2_000


def _start_worker() -> None:
    """A worker dies with the fork server (and so with this process), and ignores Ctrl-C:
    the terminal sends it to the whole process group, and this process stops the workers."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RenderWorkers:
    """`workers.map(render, days)`: the results in order, as `map` gives them (an error
    raised by a render is raised here); `close()` when done."""

    def __init__(self, workers: int | None = None, *, min_items: int = MIN_ITEMS) -> None:
        self._workers = min(workers or worker_count(), MAX_WORKERS)
        self._min_items = min_items
        self._executor: ProcessPoolExecutor | None = None

    def map(self, render: Callable[[ArchiveDay], R], days: Iterable[ArchiveDay]) -> Iterator[R]:
        """`render` of each day, in order: in the workers when there are two or more and
        enough to render (every day is handed to them at once: a publish's days, within its
        budget), else right here, one after the other."""
        days = list(days)
        if self._workers < 2 or sum(len(d.timeline.items) for d in days) < self._min_items:
            return map(render, days)
        executor = self._executor or self._start()
        try:
            futures = [executor.submit(render, day) for day in days]
        except BrokenProcessPool:  # a worker died since the last map
            self.close(kill=True)
            log.warning("render workers died; rendering %d archive days here", len(days))
            return map(render, days)
        return self._results(render, days, futures)

    def _start(self) -> ProcessPoolExecutor:
        self._executor = ProcessPoolExecutor(
            max_workers=self._workers, mp_context=fork_server_context(), initializer=_start_worker
        )
        return self._executor

    def _results(
        self,
        render: Callable[[ArchiveDay], R],
        days: Sequence[ArchiveDay],
        futures: list[Future[R]],
    ) -> Iterator[R]:
        try:
            for day, future in zip(days, futures, strict=True):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    log.warning("archive %s: a render worker died; rendering it here", day.day)
                    self.close(kill=True)
                    yield render(day)
        except BaseException:
            self.close(kill=True)  # an error, Ctrl-C, or the caller gone: no render waited for
            raise

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers: after the renders under way, or with `kill` at once."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if kill:
            kill_workers(executor)
        else:
            executor.shutdown(wait=True, cancel_futures=True)

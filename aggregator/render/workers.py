"""Archive days rendered on every core, for `aggregator once`.

A first `once` builds the archive of every past day in its publish (13 days of 2,000
entries for 1,000 feeds: ~3 s of rendering, half the publish), after the parser processes
have ended and while a core waits. A day's render is a pure function of picklable values
(the publication's site, theme and channel; the `ArchiveDay`), so worker processes do it
and send back the files' bytes, in order; same input, same bytes. Workers are started at
the first day to render (an unchanged publish starts none), from the fork server, as the
parser's are (`aggregator.processes`).

The daemon does not use them: it renders one day at a time, paced in its publishing
thread, and several documents at once would raise its peak memory, which is bounded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from aggregator.processes import die_with_parent, fork_server_context, worker_count

T = TypeVar("T")
R = TypeVar("R")

# More workers than this only hold more documents at once: a publish renders a few days.
MAX_WORKERS = 4


class RenderWorkers:
    """`workers.map(render, days)`: the results in order, as `map` gives them (an error
    raised by a render is raised here); `close()` when done (`contextlib.closing`)."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = min(workers or worker_count(), MAX_WORKERS)
        self._executor: ProcessPoolExecutor | None = None

    def map(self, render: Callable[[T], R], values: Iterable[T]) -> Iterator[R]:
        """`render` of each value, in order: in the workers when there are two or more and
        anything to render (every value is handed to them at once: a publish's days, within
        its budget), else right here, one after the other."""
        values = iter(values)
        for first in values:
            every = itertools.chain([first], values)
            break
        else:
            return iter(())
        if self._workers < 2:
            return map(render, every)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=fork_server_context(),
                initializer=die_with_parent,
            )
        return self._executor.map(render, every)

    def close(self) -> None:
        """Stop the workers (after the renders under way)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

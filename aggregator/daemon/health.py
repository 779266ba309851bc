"""What `/healthz` asks of the daemon: errors that repeat while they last, and the answer.

The probes themselves belong to the loops they watch (`polling`, `publishing`); the
watchdog (`aggregator.watchdog`) runs them. Here: `Trouble`, how a repeating error is
logged and timed, and `health`, the one answer built from the scheduler, the watchdog and
the store.
"""

from __future__ import annotations

import logging
import time

from aggregator.errors import AggregatorError
from aggregator.store.adapter import AsyncStore
from aggregator.watchdog import Watchdog

log = logging.getLogger("aggregator")


class Trouble:
    """An error that repeats every few seconds while it lasts (the database away): logged
    when it starts or changes, and once more when it is over, not at every repetition."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.current: str | None = None
        self.since: float | None = None  # time.monotonic() when it started failing

    def failed(self, error: Exception, *, bug: bool = False) -> None:
        """Log `error` unless it is the one already reported; a `bug` with its traceback."""
        if str(error) != self.current:
            log.error("%s failed: %s", self.what, error, exc_info=error if bug else None)
        self.current = str(error)
        if self.since is None:
            self.since = time.monotonic()

    def worked(self) -> None:
        if self.current is not None:
            log.info("%s works again", self.what)
        self.current = None
        self.since = None

    def seconds(self) -> float:
        """How long it has been failing; 0.0 while it works."""
        return 0.0 if self.since is None else time.monotonic() - self.since


async def health(scheduling: bool, watchdog: Watchdog, store: AsyncStore) -> str | None:
    """None while the scheduler runs, the watchdog sees no problem and the store answers;
    else why not."""
    if not scheduling:
        return "the scheduler is not running"
    if (problem := watchdog.problem()) is not None:
        return problem
    try:
        await store.ping()
    except AggregatorError as e:
        return str(e)
    return None

"""Poll records that store nothing but the poll itself, written together.

A poll answered 304 (or with the very body parsed last time) writes only how it went: its
validators, its next poll, the end of its claim. One transaction each cost ~50 µs of CPU
on SQLite and several round trips on PostgreSQL; gathered for up to a second (a tick),
they go into the store in one (`StoreAPI.record_polls`).

What a `kill -9` loses: the records not yet written, and nothing else. Each such source
keeps its old next poll (it is due) and its claim, which a restarted daemon or `once` on
this host takes back at once (`poll.take_back_dead_claims`; elsewhere the lease runs out),
so it is polled once more. No entry waits here: a poll that stores entries, a failure and
a permanent redirect are recorded at once, by the poll itself.
"""

from __future__ import annotations

import asyncio
import logging

from aggregator.errors import AggregatorError
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import PollRecord

log = logging.getLogger("aggregator")

# How long a record may wait for others: the daemon's tick.
GATHER_SECONDS = 1.0


class RecordBatch:
    """Records waiting to be written together; `flush` writes them now (at a stop, at the
    end of `once`), else they go `delay` seconds after the first of them came."""

    def __init__(self, store: AsyncStore, *, delay: float = GATHER_SECONDS) -> None:
        self._store = store
        self._delay = delay
        self._waiting: list[PollRecord] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing = asyncio.Lock()  # one write at a time, in the order records came
        self._flushes: set[asyncio.Task[None]] = set()
        self.problem: str | None = None  # why the last write failed; None once one worked

    def add(self, record: PollRecord) -> None:
        """Write `record` with the others gathered within `delay`."""
        self._waiting.append(record)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._due)

    def _due(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush(), name="poll records")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> None:
        """Write every record gathered so far, in one transaction; a store that refuses is
        logged (and `problem` says so): those sources are polled again once their claims
        end, which is all a lost record of this kind costs."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._writing:
            records, self._waiting = self._waiting, []
            if not records:
                return
            try:
                await self._store.record_polls(records)
            except AggregatorError as e:  # the store is away or refused
                self.problem = f"{len(records)} polls could not be recorded: {e}"
                log.error("%s; their sources are polled again when their claims end", self.problem)
                return
            except Exception as e:  # a bug: logged with its traceback, the same cost
                self.problem = f"{len(records)} polls could not be recorded: {e!r}"
                log.exception("%s", self.problem)
                return
            self.problem = None

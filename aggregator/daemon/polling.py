"""The daemon's polling loop: each tick claims the due sources and polls them through the
one poll path (`poll.poll_claimed`), keeping the in-flight set.

A claim (`claim_due`) hands each due source to exactly one daemon sharing the store. A
source being polled here is never claimed again meanwhile: never twice at once. The
fetcher and the parser pool are this loop's: the fetcher is replaced when `[poll]`
changes, and both are closed at the stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from aggregator import poll
from aggregator.announce import PollTally
from aggregator.daemon.health import Trouble
from aggregator.errors import AggregatorError
from aggregator.fetch import Fetcher
from aggregator.metrics import Metrics
from aggregator.parse.pool import ParsePool
from aggregator.poll import Clock, Poller, SourceReport, claim_owner, sync_sources_in_steps
from aggregator.recording import RecordBatch
from aggregator.settings import Config, SourceConfig
from aggregator.store import SourceState
from aggregator.store.adapter import AsyncStore
from aggregator.watchdog import stalled_parsers_problem

log = logging.getLogger("aggregator")

# A parse killed at its budget ends within moments; the pool may take this long to be rebuilt.
PARSER_SLACK = 10.0


def new_fetcher(config: Config) -> Fetcher:
    return Fetcher(
        timeout=config.poll.timeout.total_seconds(),
        concurrency=config.poll.concurrency,
        per_host=config.poll.per_host,
        max_bytes=config.poll.max_bytes,
        user_agent=config.poll.user_agent,
    )


class Polling:
    """Claims, polls in flight, and what they report to metrics, `/healthz` and publishing."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        config: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
        stopping: asyncio.Event,
        on_stored: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.store = store
        self._config = config  # the running configuration, which a reload replaces
        self._metrics = metrics
        self._clock = clock
        self._stopping = stopping
        self._on_stored = on_stored  # something new was stored: publish soon
        self._spawn = spawn
        self.parsers = ParsePool()
        self.fetcher = new_fetcher(config())
        self.owner = claim_owner()
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._claiming = asyncio.Lock()
        self._claims: set[asyncio.Task[None]] = set()  # awaited, never cancelled, at stop
        self.unsynced = False  # a reload changed the sources; the next claim syncs the store
        self._trouble = Trouble("claiming due sources")
        self._record_problem: str | None = None  # a poll's record the store refused
        self.tally = PollTally()  # polls since the last summary line; the daemon resets it
        # Told of every poll's report (the WebSub subscriber takes its next step from it).
        self.after_poll: Callable[[SourceConfig, SourceReport], None] | None = None
        self.records = RecordBatch(store)  # 304s' records, written together
        self._sources: tuple[Config | None, dict[str, SourceConfig]] = (None, {})

    # -- probes ----------------------------------------------------------------------------

    def record_problem(self) -> str | None:
        """The store refused a poll's record, and no later poll's record was written."""
        return self._record_problem or self.records.problem

    def parser_problem(self) -> str | None:
        """The parser pool finished nothing for longer than its budget allows: a parse over
        budget is killed, and a queued one waits through at most one other (twice the
        budget), so a longer stall means the kill itself failed."""
        budget = self._config().poll.parse_timeout.total_seconds()
        return stalled_parsers_problem(self.parsers.stalled_seconds(), 2 * budget + PARSER_SLACK)

    # -- claiming --------------------------------------------------------------------------

    async def tick(self) -> None:
        """The scheduler's job: `claim_soon`."""
        self.claim_soon()

    def claim_soon(self) -> None:
        """Start claiming due sources and polling them, unless the last claim is still
        under way (waiting for a database that is away): claims never pile up, and the
        scheduler never waits for one."""
        if not self._claiming.locked():
            self._claim()

    def _claim(self) -> asyncio.Task[None]:
        """Start a claim (`_claim_and_poll`); the task is kept so that a stop can await it."""
        task = asyncio.create_task(self._claim_and_poll(), name="claim")
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)
        return task

    async def _claim_and_poll(self) -> None:
        """Claim due sources until twice `concurrency` are in flight, and poll them.

        Claiming no more than that keeps the rest for other daemons sharing the store, and
        bounds a claim's wait for a free fetch slot (`config.default_lease` relies on it).
        One claim at a time, so each counts the polls the one before it started.
        """
        async with self._claiming:
            if self._stopping.is_set():
                return
            try:
                while self.unsynced:  # again if a reload came in while it synced (in steps)
                    await self.sync_store()
                config = self._config()
                room = 2 * config.poll.concurrency - len(self.inflight)
                if room <= 0:
                    return
                idle = [name for name in self._by_name(config) if name not in self.inflight]
                claimed = await self.store.claim_due(
                    idle, self._clock(), self.owner, config.poll.lease, limit=room
                )
            except AggregatorError as e:  # the store is away: each tick tries again
                self._trouble.failed(e)
                return
            except Exception:  # a bug; the next tick claims again
                log.exception("claiming due sources failed")
                return
            self._trouble.worked()
            states = await self._states_of(claimed)
            # The configuration may have been reloaded, or a stop begun, during the claim;
            # every poll starts before the next await, so no reload comes in between.
            config = self._config()
            sources = {} if self._stopping.is_set() else self._by_name(config)
            unwanted = []
            for name in claimed:
                if name in sources:
                    task = asyncio.create_task(
                        self.poll(sources[name], states), name=f"poll:{name}"
                    )
                    self.inflight[name] = task
                    task.add_done_callback(functools.partial(self._finished, name))
                else:
                    unwanted.append(name)
            for name in unwanted:
                try:
                    await self.store.release(name, self.owner)
                except AggregatorError as e:  # the lease runs out by itself
                    log.error(
                        "%s: could not give the claim back: %s", name, e, extra=poll.about(name)
                    )

    async def _states_of(self, claimed: list[str]) -> Mapping[str, SourceState] | None:
        """The claimed sources' states in one read, rather than one read per poll. They are
        claimed now: should the read fail (None), each poll reads its own (and, the store
        being away, records its failure or gives its claim back) rather than holding the
        claims, unpolled, until their leases run out."""
        if not claimed:
            return {}
        try:
            return await self.store.poll_states(claimed)
        except AggregatorError as e:
            log.warning("reading the claimed sources' states failed: %s", e)
        except Exception:  # a bug (a row it cannot read): the polls say more
            log.exception("reading the claimed sources' states failed")
        return None

    def _by_name(self, config: Config) -> dict[str, SourceConfig]:
        """The configured sources by name, made once per configuration (a claim needs them,
        several times a second)."""
        made_for, by_name = self._sources
        if made_for is not config:
            by_name = {s.name: s for s in config.sources}
            self._sources = (config, by_name)
        return by_name

    async def sync_store(self) -> None:
        """At start and after a reload: the sources table in line with the configuration
        (new sources, changed URLs), and the disabled-source gauge with the store. After a
        reload the next claim makes it, so a reload never waits for the database."""
        self.unsynced = False
        config = self._config()
        try:
            await sync_sources_in_steps(self.store, config.sources, self._clock())
            disabled = await self.store.disabled_sources()
        except BaseException:
            self.unsynced = True  # the next claim tries again
            raise
        self._sync_disabled_metrics(config, disabled)

    def _sync_disabled_metrics(self, config: Config, disabled: set[str]) -> None:
        """The disabled-source gauge from the store: right after a restart or a url change."""
        shown = disabled & {s.name for s in config.sources}
        for name in self._metrics.disabled_sources() - shown:
            self._metrics.forget_disabled(name)
        for name in shown:
            self._metrics.mark_disabled(name)

    async def take_back_dead_claims(self) -> None:
        """At start: a predecessor killed on this host (`kill -9`) gets its claims ended
        now rather than when their leases run out."""
        await poll.take_back_dead_claims(self.store, self._clock())

    # -- polling ---------------------------------------------------------------------------

    def _finished(self, name: str, _: asyncio.Task[None]) -> None:
        self.inflight.pop(name, None)
        if len(self.inflight) == self._config().poll.concurrency:
            # Half the claims are done: claim more now rather than at the next tick, so a
            # daemon with thousands of due sources keeps its fetch slots busy.
            self._claim()

    def poller(self) -> Poller:
        """What a poll (or a push) uses now: the running configuration, fetcher, parsers
        and the batch of 304 records."""
        return Poller(
            self._config(), self.store, self.fetcher, self.parsers, self.owner, self._clock,
            self.records,
        )  # fmt: skip

    async def poll(
        self, source: SourceConfig, states: Mapping[str, SourceState] | None = None
    ) -> None:
        """Poll `source` (claimed; `states` read with the claim) the way `once` does, and
        tell the daemon how it went."""
        report: SourceReport = await poll.poll_claimed(source, self.poller(), states)
        # /healthz: the store refused this poll's record, or took it (clearing an earlier
        # refusal).
        self._record_problem = report.unrecorded and f"{source.name}: {report.unrecorded}"
        self._metrics.record_poll(
            source.name,
            report.outcome,
            report.new,
            self._clock(),
            parsed=report.parsed,
            reused=report.reused,
        )
        self.tally = self.tally.counted(report.outcome, report.new)
        # A poll the store failed may have stored its items already: publish all the same.
        if report.new or report.updated or report.unrecorded:
            self._on_stored()
        if self.after_poll is not None:
            self.after_poll(source, report)

    # -- reload and stop -------------------------------------------------------------------

    def reconfigured(self, old: Config, new: Config) -> None:
        """After a reload: a new fetcher if `[poll]` changed, removed sources' polls
        cancelled, and the store synced at the next claim, made now."""
        if new.poll != old.poll:
            # The new one first: were it refused, the running one must still be there.
            fetcher, self.fetcher = self.fetcher, new_fetcher(new)
            self._retire(fetcher)
        self.unsynced = True
        for name in {s.name for s in old.sources} - {s.name for s in new.sources}:
            if task := self.inflight.get(name):
                task.cancel()
        self.claim_soon()

    def _retire(self, fetcher: Fetcher) -> None:
        """Close an old fetcher once the polls still using it are done."""
        running = list(self.inflight.values())

        async def close() -> None:
            await asyncio.gather(*running, return_exceptions=True)
            await fetcher.__aexit__(None, None, None)

        self._spawn(close())

    async def stop(self, grace: float) -> None:
        """End polling: claims under way end by giving back what they got (they see the
        stop); polls are cancelled (giving their claims back) and waited for at most
        `grace` seconds, since one waiting for a database that is away may outlast it (its
        claim then runs out with its lease)."""
        await asyncio.gather(*self._claims, return_exceptions=True)
        polls = list(self.inflight.values())
        for task in polls:
            task.cancel()
        if polls:
            await asyncio.wait(polls, timeout=grace)
        await self.records.flush()  # what the polls that ended left to be written together
        # A parse under way (a runaway one, even) must not keep the process alive past the
        # stop: its worker is killed, not waited for. The polls that wanted it are gone.
        self.parsers.close(kill=True)

    async def close(self) -> None:
        await self.fetcher.__aexit__(None, None, None)

"""One source's poll, written once for `once` and the daemon: fetch → parse → store → record.

Each source is isolated: whatever it does ends as a `SourceReport`, never as an exception
that stops the others. The clock is passed in so tests can pin it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from aggregator import update
from aggregator.errors import ParseError
from aggregator.fetch import Fetcher
from aggregator.parse.pool import ParsePool
from aggregator.policy import (
    ServerHints,
    cache_lifetime,
    longest,
    next_poll,
    retry_after,
)
from aggregator.settings import Config, SourceConfig
from aggregator.store import SourceState, StoreAPI
from aggregator.store.records import PollOutcome, PollRecord, StoreResult
from aggregator.types import (
    Failed,
    Fetched,
    FetchOutcome,
    NotModified,
    ParsedEntry,
    ParsedFeed,
    Validators,
)
from aggregator.urls import public_url, redact_url

log = logging.getLogger("aggregator")

Clock = Callable[[], datetime]
T = TypeVar("T")
Params = ParamSpec("Params")
PARSERS = ParsePool()


# `once` polls every source whenever it is scheduled: claims "due by" the end of time.
EVERY_SCHEDULE = datetime.max.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def claim_owner() -> str:
    """This process's name on its claims: host, pid and a random part, since containers
    share host names and a restarted process may get a dead one's pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def is_dead_here(owner: str) -> bool:
    """Whether `owner` (a `claim_owner()`) was a process on this host that no longer runs.

    A daemon restarted after `kill -9` takes back its predecessor's claims at once instead
    of waiting out their leases. Owners elsewhere are never judged: only a lease ends them.
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, as someone else's process
        return False
    return False


@dataclass(frozen=True)
class SourceReport:
    """How one source's poll ended."""

    name: str
    outcome: PollOutcome
    new: int = 0
    updated: int = 0
    error: str | None = None
    warning: str | None = None

    def summary(self) -> str:
        if self.outcome is PollOutcome.FAILED:
            return f"error: {self.error}"
        if self.outcome in (PollOutcome.SKIPPED, PollOutcome.DISABLED):
            return f"{self.outcome}: {self.error}"
        if self.outcome is PollOutcome.NOT_MODIFIED:
            return "not modified"
        if self.outcome is PollOutcome.UNCHANGED:
            return "no new items"
        changed = f", {self.updated} updated" if self.updated else ""
        return f"{self.new} new{changed}"


async def poll_source(
    source: SourceConfig, fetcher: Fetcher, store: StoreAPI, config: Config, clock: Clock
) -> SourceReport:
    """Fetch, parse and store one source, record how it went, and schedule its next poll."""
    state = await in_store(store, store.source_state, source.name)
    if state is not None and state.disabled:
        return SourceReport(source.name, PollOutcome.DISABLED, error=state.disabled)
    # sync_sources already dropped the validators of a source whose URL changed.
    async with fetcher.polling(
        state.fetch_url if state else source.url, state.validators if state else Validators()
    ) as outcome:  # the source's slot is held until its body is parsed and stored
        return await _settle(source, state, outcome, store=store, config=config, clock=clock)


async def _settle(
    source: SourceConfig,
    state: SourceState | None,
    outcome: FetchOutcome,
    *,
    store: StoreAPI,
    config: Config,
    clock: Clock,
) -> SourceReport:
    """Everything after the response: parse, store, record the poll, schedule the next."""
    now = clock()
    if isinstance(outcome, Failed):
        return await in_store(store, _failed, source, state, store, outcome, now)
    feed = None
    body_hash = None
    if isinstance(outcome, Fetched):
        body_hash = hashlib.sha256(outcome.body).hexdigest()
        if state is None or body_hash != state.body_hash:  # the same bytes are not parsed again
            try:
                # In worker processes: a big feed takes seconds to parse and must not stall
                # the loop, and feedparser holds the GIL, so only processes use every core.
                feed = await PARSERS.parse(
                    outcome.body,
                    outcome.headers,
                    # The base of relative links: published, so without the fetch's secrets.
                    public_url(outcome.final_url),
                    timezone=source.timezone,
                    budget=config.poll.parse_timeout.total_seconds(),
                )
            except ParseError as e:
                failed = Failed(outcome.url, str(e))
                return await in_store(store, _failed, source, state, store, failed, now)
    moved = outcome.permanent_redirect
    if moved and moved != (state.fetch_url if state else source.url):
        log.warning(
            "%s: moved permanently to %s; polling it there from now on "
            "(update feeds.toml to make it official)",
            source.name,
            redact_url(moved),
        )
    own_hint = feed.lifetime if feed is not None else (state.lifetime if state else None)
    lifetime = longest(cache_lifetime(outcome.headers, now), own_hint)
    later = next_poll(source.name, source.interval, now, hints=ServerHints(lifetime=lifetime))
    return await in_store(
        store, _recorded, source, outcome, store=store, feed=feed, body_hash=body_hash,
        moved=moved, later=later, now=now,
    )  # fmt: skip


def _recorded(
    source: SourceConfig,
    outcome: Fetched | NotModified,
    *,
    store: StoreAPI,
    feed: ParsedFeed | None,
    body_hash: str | None,
    moved: str | None,
    later: datetime,
    now: datetime,
) -> SourceReport:
    """Store a successful poll: read what the store holds of the feed's entries, let the
    update rules decide what changes, and write that with the poll's record in one go."""
    writes = None
    if feed is not None:
        if feed.warning:
            log.warning("%s: %s", source.name, feed.warning)
        known = store.known_entries(source.name, [e.entry_id for e in feed.entries])
        writes = update.entry_writes(feed.entries, known, now)
    result = update.result_of(writes) if writes is not None else None
    if body_hash is not None and result is None:
        result = StoreResult(0, 0)  # the very body parsed last time: nothing in it is new
    report = SourceReport(
        source.name,
        update.outcome_of(result),
        result.new if result else 0,
        result.updated if result else 0,
        warning=feed.warning if feed else None,
    )
    store.record_poll(
        PollRecord(
            source.name,
            now,
            report.outcome,
            url=source.url,
            next_poll=later,
            validators=outcome.validators,
            moved_to=moved,
            body_hash=body_hash,
            feed=update.feed_meta(feed) if feed is not None else None,
            entries=writes if writes is not None and writes.writes_anything else None,
            keep_tombstones=feed is None,
        )
    )
    log.info("%s: %s", source.name, report.summary())
    return report


def store_entries(
    store: StoreAPI, source: str, entries: Sequence[ParsedEntry], now: datetime
) -> StoreResult:
    """Store a feed's entries without recording a poll (tests, benchmarks, imports): read,
    decide, write, as `_recorded` does."""
    if not entries:
        return StoreResult(0, 0)
    writes = update.entry_writes(
        entries, store.known_entries(source, [e.entry_id for e in entries]), now
    )
    store.write_entries(source, writes)
    return update.result_of(writes)


def sync_sources(store: StoreAPI, sources: Sequence[SourceConfig], now: datetime) -> None:
    """Make the store know the configured sources, then bring forward the next polls a
    shortened interval makes overdue (the rule: `update.schedule_repairs`)."""
    schedules = store.sync_sources(sources, now)
    store.reschedule(update.schedule_repairs(sources, schedules))


# After this many failures in a row at the address a permanent redirect led to, go back to
# the configured one: a bogus 301 (a parked domain) must not take a source over for good.
MOVED_FAILURE_LIMIT = 3


def _failed(
    source: SourceConfig, state: SourceState | None, store: StoreAPI, outcome: Failed, now: datetime
) -> SourceReport:
    """Record a failed poll: 410 disables the source, 429/503 honour Retry-After."""
    failures = (state.failures if state else 0) + 1
    if outcome.status == 410:
        reason = f"HTTP 410 Gone since {now:%Y-%m-%d %H:%M} UTC: not polled until its url changes"
        store.record_poll(
            PollRecord(source.name, now, PollOutcome.DISABLED, url=source.url, error=reason)
        )
        log.error("%s: the feed is gone (HTTP 410); disabled until its url changes", source.name)
        return SourceReport(source.name, PollOutcome.DISABLED, error=reason)
    wait = retry_after(outcome.retry_after, now) if outcome.status in (429, 503) else None
    later = next_poll(source.name, source.interval, now, failures, ServerHints(retry_after=wait))
    error = outcome.error
    if wait is not None and wait > now:
        error += f"; not asked again before {later:%Y-%m-%d %H:%M:%S} UTC (Retry-After)"
    go_back = state is not None and state.moved_to is not None and failures >= MOVED_FAILURE_LIMIT
    if go_back:
        error += (
            f"; going back to {redact_url(source.url)} (the address it had moved to keeps failing)"
        )
    store.record_poll(
        PollRecord(
            source.name, now, PollOutcome.FAILED, url=source.url, next_poll=later, error=error,
            retry_after=wait, forget_move=go_back,
        )
    )  # fmt: skip
    log.warning("%s: %s", source.name, error)
    return SourceReport(source.name, PollOutcome.FAILED, error=error)


async def in_store(
    store: StoreAPI, work: Callable[Params, T], /, *args: Params.args, **kwargs: Params.kwargs
) -> T:
    """`work(*args, **kwargs)`, which uses `store`: in a worker thread if the store is `remote`.

    With PostgreSQL every call waits for the server (another machine, perhaps), and made
    on the event loop it would stall every fetch and every reader's request meanwhile. A
    cancelled caller still waits for the call to end (unless cancelled again: a stop that
    cannot wait longer), so the claim it holds is given back after, not during, the write.
    SQLite calls are made right here: one connection, and a thread would cost more.
    """
    if not store.remote:
        return work(*args, **kwargs)
    call = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(work, *args, **kwargs)
    )
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        call.add_done_callback(_outcome_unwanted)  # even if this caller stops waiting
        await asyncio.wait([call])
        raise


def _outcome_unwanted(call: asyncio.Future[Any]) -> None:
    """Take the outcome of a store call whose caller was cancelled: an error then is no news
    (the stop goes on) and must not be reported as never retrieved."""
    if not call.cancelled() and (error := call.exception()) is not None:
        log.debug("a store call ended after its caller was cancelled: %s", error)


def reason_to_skip(
    store: StoreAPI, name: str, now: datetime, *, force: bool
) -> tuple[PollOutcome, str] | None:
    """(outcome, why) for a source a cycle must not poll now; None to poll it."""
    state = store.source_state(name)
    if state is None:
        return None
    if state.disabled:
        return PollOutcome.DISABLED, state.disabled
    if state.retry_after is not None and state.retry_after > now:
        until = f"{state.retry_after:%Y-%m-%d %H:%M:%S}"
        return PollOutcome.SKIPPED, f"the server asked us not to return before {until} UTC"
    if not force and state.failures and state.next_poll is not None and state.next_poll > now:
        return PollOutcome.SKIPPED, (
            f"backing off after {state.failures} failure(s) until "
            f"{state.next_poll:%Y-%m-%d %H:%M:%S} UTC (--force polls it now)"
        )
    return None


def record_crash(source: SourceConfig, store: StoreAPI, error: Exception, now: datetime) -> str:
    """A bug hit while polling `source`: record it as a failure, so backoff applies."""
    message = f"internal error: {type(error).__name__}: {error}"
    try:
        record_failed_poll(source, store, message, now)
    except Exception:  # the store itself is failing; /healthz will say so
        log.exception("%s: could not record the failure", source.name)
    return message


def record_failed_poll(source: SourceConfig, store: StoreAPI, message: str, now: datetime) -> None:
    """Record a poll that failed on our side: the claim ends, and the source backs off."""
    state = store.source_state(source.name)
    failures = (state.failures if state else 0) + 1
    later = next_poll(source.name, source.interval, now, failures)
    store.record_poll(
        PollRecord(
            source.name, now, PollOutcome.FAILED, url=source.url, next_poll=later, error=message
        )
    )

"""The one poll path of `once` and the daemon: claim → fetch → parse → store → record → release.

`once` claims a batch of sources at a time (`claim_batch`, then `poll_batched` each); the
daemon claims on its tick and hands each claimed source to `poll_claimed`, the same path
from there on. Each source is isolated: whatever it does ends as a `SourceReport`, never as
an exception that stops the others (a cancel aside, which gives the claim back). The store
is reached through `AsyncStore`, the parser pool and fetcher are the caller's (`Poller`),
and the clock is passed in so tests can pin it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aggregator import update
from aggregator.errors import AggregatorError, ParseError, StorageError
from aggregator.fetch import Fetcher
from aggregator.parse.pool import ParsePool, Partly
from aggregator.policy import (
    Push,
    ServerHints,
    cache_lifetime,
    longest,
    next_poll,
    retry_after,
)
from aggregator.recording import RecordBatch
from aggregator.settings import Config, SourceConfig
from aggregator.store import SourceState, StoreAPI
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import (
    EntryWrites,
    PollOutcome,
    PollRecord,
    StoreResult,
    Subscription,
)
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
from aggregator.websub.discovery import Discovery, discover
from aggregator.websub.rules import push_schedule

log = logging.getLogger("aggregator")

Clock = Callable[[], datetime]


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


def about(source: str, *, reported: bool = False) -> dict[str, object]:
    """A log record's `extra` for a record about one source: its name in a field of its own
    (`source` in JSON logs), and `reported` when the source's line in `once`'s report says
    the same (on a terminal, `once` shows such a failure there only, not twice)."""
    return {"source": source, "reported": reported}


@dataclass(frozen=True)
class Known:
    """What a poll read of a source's WebSub subscription: `sub`, or None for none."""

    sub: Subscription | None


@dataclass(frozen=True)
class SourceReport:
    """How one source's poll ended."""

    name: str
    outcome: PollOutcome
    new: int = 0
    updated: int = 0
    error: str | None = None
    warning: str | None = None
    # Why the store holds no record of this poll: it refused a write (a database away, a
    # full disk, a row it rejects). The daemon's /healthz says so until a poll is recorded.
    unrecorded: str | None = None
    # What the response said about a WebSub hub (None: nothing), for the daemon's subscriber.
    push: Discovery | None = None
    parsed: int = 0  # items feedparser read
    reused: int = 0  # items a partial parse left unread: unchanged since the last parse
    # The source's WebSub subscription as the poll read it (None: the poll did not read it).
    subscription: Known | None = None

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


@dataclass(frozen=True)
class Poller:
    """What a poll uses besides its source; `once` builds one, the daemon one per claim.

    The parser pool is its owner's (created and closed by `once` or the daemon); the
    fetcher too (the daemon replaces it when `[poll]` changes, so a poll keeps the one it
    started with).
    """

    config: Config
    store: AsyncStore
    fetcher: Fetcher
    parsers: ParsePool
    owner: str  # the name on this process's claims (`claim_owner`)
    clock: Clock = utc_now
    # Where polls that store nothing but themselves (a 304) are recorded together; None:
    # each in its own transaction.
    records: RecordBatch | None = None


@dataclass(frozen=True)
class Claimed:
    """`once`'s claim of a batch of sources: their states, read just before it, a report
    for each source of the batch that is not to be polled (and was not claimed), and the
    store's error if reading the states or claiming the rest failed (none of them is
    claimed then)."""

    states: Mapping[str, SourceState]
    skipped: Mapping[str, SourceReport]
    failed: Exception | None = None


async def claim_batch(sources: Sequence[SourceConfig], poller: Poller, *, force: bool) -> Claimed:
    """`once`'s claim of `sources`: one state read and one claim for the batch (not two
    store calls per source), saying why each source it does not claim must wait.

    Skipped, and said so: a source disabled by 410 Gone, one whose server asked us to wait
    (Retry-After), one backing off after errors unless `force` (which overrides only our
    own schedule, never a server's Retry-After), and one another daemon sharing the store
    is polling right now. Due or not, the rest is claimed: `once` polls every source.
    """
    names = [source.name for source in sources]
    try:
        states = await poller.store.poll_states(names)
    except Exception as e:  # the store failed, or a bug: this batch's sources only
        return Claimed({}, {}, failed=e)
    now = poller.clock()
    skipped: dict[str, SourceReport] = {}
    for name in names:
        skip = reason_to_skip(states.get(name), now, force=force)
        if skip is not None:
            skipped[name] = SourceReport(name, skip[0], error=skip[1])
    wanted = [name for name in names if name not in skipped]
    if not wanted:
        return Claimed(states, skipped)
    lease = poller.config.poll.lease
    try:
        claimed = set(
            await poller.store.claim_due(
                wanted, poller.clock(), poller.owner, lease, due_by=EVERY_SCHEDULE
            )
        )
    except Exception as e:  # nothing claimed; those skipped stay skipped, as they were
        return Claimed(states, skipped, failed=e)
    for name in wanted:
        if name not in claimed:
            skipped[name] = SourceReport(
                name, PollOutcome.SKIPPED, error="another daemon is polling it right now"
            )
    return Claimed(states, skipped)


async def poll_batched(source: SourceConfig, poller: Poller, claimed: Claimed) -> SourceReport:
    """`once`'s poll of one source of a batch `claim_batch` claimed: why not if it was not
    to be polled, the failure if the claim failed (a source that was to wait keeps its
    wait: a server's Retry-After is never overwritten), else the poll."""
    if (skipped := claimed.skipped.get(source.name)) is not None:
        return skipped
    if claimed.failed is not None:
        return await _ended_by(claimed.failed, source, poller)
    # Nobody else writes a source between the read and the claim but a daemon that polls
    # it, and the claim says none does: the state read is the one to poll with.
    return await poll_claimed(source, poller, claimed.states)


async def poll_claimed(
    source: SourceConfig, poller: Poller, states: Mapping[str, SourceState] | None = None
) -> SourceReport:
    """Poll `source`, which `poller.owner` has claimed, and end the claim whatever happens.

    `states`: the claimed sources' states, read with the claim (`StoreAPI.poll_states`);
    without them, the source's is read here.

    The one poll path of `once` and the daemon. Recording the poll ends the claim. A
    cancelled poll (a stop, a source removed) records nothing and gives the claim back, for
    another daemon to take at once rather than after the lease. A poll the store failed or
    a bug ended is recorded as a failure if the store lets it (`_ended_by`).
    """
    try:
        if states is None:
            states = await poller.store.poll_states([source.name])
        return await poll_source(source, poller, states.get(source.name))
    except asyncio.CancelledError:
        await _give_back(source.name, poller)
        raise
    except Exception as e:
        return await _ended_by(e, source, poller)


async def _ended_by(error: Exception, source: SourceConfig, poller: Poller) -> SourceReport:
    """Record a poll that `error` ended, on our side, as a failure; give the claim back if
    even that cannot be recorded.

    A `StorageError` (its database restarting, a full disk, a row it refused) is one line
    in the log: recorded as a failure, the source backs off, since an error only this
    source's data causes must not have it polled every tick. Anything else is a bug: its
    traceback is logged, and it backs off too. Its items may be stored already either way.
    """
    if isinstance(error, StorageError):
        message = f"the poll could not be recorded: {error}"
        log.error("%s: %s", source.name, message, extra=about(source.name, reported=True))
    else:
        log.exception("%s: unexpected error", source.name, exc_info=error, extra=about(source.name))
        message = f"internal error: {type(error).__name__}: {error}"
    unrecorded = message if isinstance(error, StorageError) else None
    try:
        await poller.store.run(lambda s: record_failed_poll(source, s, message, poller.clock()))
    except Exception as e:  # the store itself is failing; /healthz will say so
        log.error("%s: could not record the failure: %s", source.name, e, extra=about(source.name))
        unrecorded = unrecorded or f"the failure could not be recorded: {e}"
        await _give_back(source.name, poller)
    return SourceReport(source.name, PollOutcome.FAILED, error=message, unrecorded=unrecorded)


async def _give_back(name: str, poller: Poller) -> None:
    """End `poller.owner`'s claim on `name` before its lease does; if the store cannot,
    the lease runs out by itself."""
    try:
        await poller.store.release(name, poller.owner)
    except AggregatorError as e:
        log.error("%s: could not give the claim back: %s", name, e, extra=about(name))


async def poll_source(
    source: SourceConfig, poller: Poller, state: SourceState | None
) -> SourceReport:
    """Fetch, parse and store one source (its `state` as the store holds it), record how it
    went, and schedule its next poll."""
    # A hub may push to it: its lease sets the schedule. Read with the state.
    subscribing = poller.config.websub.subscribing
    sub = state.subscription if state is not None and subscribing else None
    if state is not None and state.disabled:
        return SourceReport(source.name, PollOutcome.DISABLED, error=state.disabled)
    if state is not None and state.url != source.url:
        # feeds.toml gave it a new URL that the store is not synced with yet (a reload
        # while the sources were being synced, in steps): polled now, the old URL would be
        # fetched with its validators, and what it serves stored under the source's name.
        await _give_back(source.name, poller)
        return SourceReport(source.name, PollOutcome.SKIPPED, error=URL_NOT_SYNCED)
    # sync_sources already dropped the validators of a source whose URL changed.
    async with poller.fetcher.polling(
        state.fetch_url if state else source.url, state.validators if state else Validators()
    ) as outcome:  # the source's slot is held until its body is parsed and stored
        report = await _settle(source, (state, sub), outcome, poller)
    return replace(report, subscription=Known(sub)) if subscribing else report


async def _settle(
    source: SourceConfig,
    known: tuple[SourceState | None, Subscription | None],
    outcome: FetchOutcome,
    poller: Poller,
) -> SourceReport:
    """Everything after the response: parse, store, record the poll, schedule the next."""
    store, config = poller.store, poller.config
    state, sub = known
    now = poller.clock()
    # A source a hub pushes to is polled as a safety net, and when its lease needs it.
    push = push_schedule(sub, config.websub.poll_interval, now)
    if isinstance(outcome, Failed):
        failed = outcome
        return await store.run(lambda s: _failed(source, state, s, failed, now, push))
    feed = None
    body_hash = None
    if isinstance(outcome, Fetched):
        body_hash = hashlib.sha256(outcome.body).hexdigest()
        if state is None or body_hash != state.body_hash:  # the same bytes are not parsed again
            partly = None
            if config.poll.partial_parse:  # only the items that changed since the last parse
                remembered = state is not None and state.remembers
                partly = Partly(await store.remembered_items(source.name) if remembered else None)
            try:
                feed = await _parse(source, outcome, poller, partly)
            except ParseError as e:
                unparsed = Failed(outcome.url, str(e))
                return await store.run(lambda s: _failed(source, state, s, unparsed, now))
    moved = outcome.permanent_redirect
    if moved and moved != (state.fetch_url if state else source.url):
        log.warning(
            "%s: moved permanently to %s; polling it there from now on "
            "(update feeds.toml to make it official)",
            source.name,
            redact_url(moved),
            extra=about(source.name),
        )
    own_hint = feed.lifetime if feed is not None else (state.lifetime if state else None)
    lifetime = longest(cache_lifetime(outcome.headers, now), own_hint)
    later = next_poll(
        source.name, source.interval, now, hints=ServerHints(lifetime=lifetime), push=push
    )
    answer = _Answer(outcome, feed, body_hash, moved, later, now)
    if answer.feed is None and moved is None and poller.records is not None:
        # A 304 (or the body parsed last time): nothing to read or write but the poll's
        # record, which waits to be written with others (`recording`).
        report = SourceReport(
            source.name,
            update.outcome_of(_unparsed(answer)),
            push=_discovered(source, outcome, None),  # a Link header may name a hub
        )
        poller.records.add(_poll_record(source, answer, report, None))
        log.info("%s: %s", source.name, report.summary(), extra=about(source.name))
        return report
    # One hop for the read and the write (entries with the poll's record): the store is read
    # and written in the thread its calls belong to.
    recorded = await store.run(lambda s: _recorded(source, answer, s))
    if recorded is None:  # the store lacks an entry the partial parse reused
        recorded = await _recorded_whole(source, state, answer, poller)
    return replace(recorded, push=_discovered(source, outcome, feed))


def _discovered(
    source: SourceConfig, outcome: Fetched | NotModified, feed: ParsedFeed | None
) -> Discovery | None:
    """What the response says about a WebSub hub; the topic, when the feed names no `self`,
    is the URL fetched (without its secrets: the hub is a third party). Local files: none."""
    url = outcome.final_url if isinstance(outcome, Fetched) else outcome.url
    if urlsplit(source.url).scheme not in ("http", "https"):
        return None
    found = discover(outcome.headers, feed, url)
    if found is not None and found.hub is not None and found.topic is None:
        return Discovery(found.hub, public_url(url))
    return found


async def _recorded_whole(
    source: SourceConfig, state: SourceState | None, answer: _Answer, poller: Poller
) -> SourceReport:
    """`_recorded` of the document parsed whole, when the store lacks an entry a partial
    parse reused (deleted by hand, say): a whole parse would find it new."""
    assert isinstance(answer.outcome, Fetched)
    fetched = answer.outcome
    try:
        whole = await _parse(source, fetched, poller, Partly())
    except ParseError as e:
        unparsed = Failed(fetched.url, str(e))
        return await poller.store.run(lambda s: _failed(source, state, s, unparsed, answer.now))
    report = await poller.store.run(lambda s: _recorded(source, replace(answer, feed=whole), s))
    assert report is not None  # nothing reused
    return report


async def _parse(
    source: SourceConfig, outcome: Fetched, poller: Poller, partly: Partly | None
) -> ParsedFeed:
    """The fetched body parsed in a worker process: a big feed takes seconds to parse and
    must not stall the loop, and feedparser holds the GIL, so only processes use every core."""
    return await poller.parsers.parse(
        outcome.body,
        outcome.headers,
        # The base of relative links: published, so without the fetch's secrets.
        public_url(outcome.final_url),
        timezone=source.timezone,
        budget=poller.config.poll.parse_timeout.total_seconds(),
        partly=partly,
    )


@dataclass(frozen=True)
class _Answer:
    """A source's answer as `_settle` makes it out: what `_recorded` writes."""

    outcome: Fetched | NotModified
    feed: ParsedFeed | None  # None: a 304, or the very body parsed last time
    body_hash: str | None  # None: a 304
    moved: str | None  # where a chain of permanent redirects led
    later: datetime  # the next poll
    now: datetime


def _recorded(source: SourceConfig, answer: _Answer, store: StoreAPI) -> SourceReport | None:
    """Store a successful poll: read what the store holds of the feed's entries, let the
    update rules decide what changes, and write that with the poll's record in one go.

    None, and nothing written, when a partial parse reused an entry the store does not hold
    (`update.reuse_holds`): the caller parses the document whole and calls again.
    """
    writes = None
    feed = answer.feed
    if feed is not None:
        writes = _entry_writes(store, source.name, feed.entries, answer.now, feed.reused)
        if writes is None:
            return None
        if feed.warning:
            log.warning("%s: %s", source.name, feed.warning, extra=about(source.name))
    result = update.result_of(writes) if writes is not None else _unparsed(answer)
    report = SourceReport(
        source.name,
        update.outcome_of(result),
        result.new if result else 0,
        result.updated if result else 0,
        warning=feed.warning if feed else None,
        parsed=feed.items_parsed if feed else 0,
        reused=feed.items_reused if feed else 0,
    )
    store.record_poll(_poll_record(source, answer, report, writes))
    log.info("%s: %s", source.name, report.summary(), extra=about(source.name))
    return report


async def take_push(
    source: SourceConfig, body: bytes, headers: Mapping[str, str], base: str, poller: Poller
) -> SourceReport | None:
    """Store an authenticated WebSub content distribution for `source`, as a poll stores
    its body: the same parser pool and budget, the same update rules, the same writes.

    The source's fetch state (validators, body hash, schedule) is left alone: it is the
    polls'. `base`: the topic, against which relative links resolve. None when the body is
    no feed (empty, a bare ping, HTML): the caller has the source polled instead.
    """
    if not body.strip():
        return None
    try:
        feed = await poller.parsers.parse(
            body,
            headers,
            public_url(base),
            timezone=source.timezone,
            budget=poller.config.poll.parse_timeout.total_seconds(),
        )
    except ParseError as e:
        log.info(
            "%s: the pushed body is no feed (%s); polling the source instead",
            source.name,
            e,
            extra=about(source.name),
        )
        return None
    now = poller.clock()
    result = await poller.store.run(store_entries, source.name, feed.entries, now)
    report = SourceReport(
        source.name, update.outcome_of(result), result.new, result.updated, warning=feed.warning
    )
    log.info("%s: pushed: %s", source.name, report.summary(), extra=about(source.name))
    return report


def _unparsed(answer: _Answer) -> StoreResult | None:
    """What a poll with nothing parsed stored: None for a 304, nothing for the very body
    parsed last time (nothing in it is new)."""
    return StoreResult(0, 0) if answer.body_hash is not None else None


def _poll_record(
    source: SourceConfig, answer: _Answer, report: SourceReport, writes: EntryWrites | None
) -> PollRecord:
    return PollRecord(
        source.name,
        answer.now,
        report.outcome,
        url=source.url,
        next_poll=answer.later,
        validators=answer.outcome.validators,
        moved_to=answer.moved,
        body_hash=answer.body_hash,
        feed=update.feed_meta(answer.feed) if answer.feed is not None else None,
        items=update.items_to_remember(answer.feed, answer.now) if answer.feed else None,
        entries=writes if writes is not None and writes.writes_anything else None,
        keep_tombstones=answer.feed is None,
    )


def store_entries(
    store: StoreAPI, source: str, entries: Sequence[ParsedEntry], now: datetime
) -> StoreResult:
    """Store a feed's entries without recording a poll (tests, benchmarks, imports): read,
    decide, write, as `_recorded` does."""
    if not entries:
        return StoreResult(0, 0)
    writes = _entry_writes(store, source, entries, now)
    assert writes is not None  # nothing reused
    store.write_entries(source, writes)
    return update.result_of(writes)


def _entry_writes(
    store: StoreAPI,
    source: str,
    entries: Sequence[ParsedEntry],
    now: datetime,
    reused: Sequence[str] = (),
) -> EntryWrites | None:
    """What a feed's entries change: the store's copies of them read, the rules asked.
    None when the store does not hold every entry a partial parse `reused`."""
    known = store.known_entries(source, [*(e.entry_id for e in entries), *reused])
    if not update.reuse_holds(reused, known):
        return None
    return update.entry_writes(entries, known, now, reused)


def sync_sources(store: StoreAPI, sources: Sequence[SourceConfig], now: datetime) -> None:
    """Make the store know the configured sources, then bring forward the next polls a
    shortened interval makes overdue (the rule: `update.schedule_repairs`)."""
    schedules = store.sync_sources(sources, now)
    store.reschedule(update.schedule_repairs(sources, schedules))


URL_NOT_SYNCED = "its url changed in feeds.toml; polled once the store has the new one"

# Sources synced per store call by `sync_sources_in_steps`: ~10 ms of the loop's time each.
SYNC_STEP = 1_000


async def sync_sources_in_steps(
    store: AsyncStore, sources: Sequence[SourceConfig], now: datetime
) -> None:
    """`sync_sources`, `SYNC_STEP` sources at a time, the event loop let run in between: in
    one call, a configuration of 50,000 sources held the loop (every fetch in flight, every
    reader's request, `/healthz`) for 0.6 s. A source's sync is whole within its step (one
    transaction) and independent of the others', so stopping between steps leaves nothing
    half done, and the next sync completes it."""
    for start in range(0, len(sources), SYNC_STEP):
        await store.run(sync_sources, sources[start : start + SYNC_STEP], now)
        await asyncio.sleep(0)


# After this many failures in a row at the address a permanent redirect led to, go back to
# the configured one: a bogus 301 (a parked domain) must not take a source over for good.
MOVED_FAILURE_LIMIT = 3


def _failed(
    source: SourceConfig,
    state: SourceState | None,
    store: StoreAPI,
    outcome: Failed,
    now: datetime,
    push: Push | None = None,
) -> SourceReport:
    """Record a failed poll: 410 disables the source, 429/503 honour Retry-After."""
    failures = (state.failures if state else 0) + 1
    if outcome.status == 410:
        reason = f"HTTP 410 Gone since {now:%Y-%m-%d %H:%M} UTC: not polled until its url changes"
        store.record_poll(
            PollRecord(source.name, now, PollOutcome.DISABLED, url=source.url, error=reason)
        )
        log.error(
            "%s: the feed is gone (HTTP 410); disabled until its url changes",
            source.name,
            extra=about(source.name, reported=True),
        )
        return SourceReport(source.name, PollOutcome.DISABLED, error=reason)
    wait = retry_after(outcome.retry_after, now) if outcome.status in (429, 503) else None
    later = next_poll(
        source.name, source.interval, now, failures, ServerHints(retry_after=wait), push
    )
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
    log.warning("%s: %s", source.name, error, extra=about(source.name, reported=True))
    return SourceReport(source.name, PollOutcome.FAILED, error=error)


def reason_to_skip(
    state: SourceState | None, now: datetime, *, force: bool
) -> tuple[PollOutcome, str] | None:
    """(outcome, why) for a source (its `state`) a cycle must not poll now; None to poll it."""
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


async def take_back_dead_claims(store: AsyncStore, now: datetime) -> None:
    """At start (`run`, `once`): a predecessor killed on this host (`kill -9`) gets its
    claims ended now rather than when their leases run out."""
    for owner in await store.claim_holders(now):
        if is_dead_here(owner):
            released = await store.release_all(owner)
            log.info("took back %d claims of %s, a process that died", released, owner)


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

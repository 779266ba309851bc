"""One cycle, readable in one place: fetch → parse → store for every source, then publish.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx

from aggregator import __version__
from aggregator.config import Config, SourceConfig
from aggregator.errors import ParseError
from aggregator.fetch import Fetcher
from aggregator.parse_pool import ParsePool
from aggregator.policy import (
    ServerHints,
    cache_lifetime,
    longest,
    next_poll,
    retry_after,
)
from aggregator.publish import (
    already_published,
    publish_files,
    remember_published,
    remove_stale_temp_files,
)
from aggregator.store_api import SourceState, StoreAPI
from aggregator.timeline import build_timeline
from aggregator.types import (
    Failed,
    Fetched,
    FetchOutcome,
    NotModified,
    ParsedFeed,
    SourceCredit,
    Timeline,
    Validators,
)
from aggregator.urls import public_url, redact_url

log = logging.getLogger("aggregator")

Clock = Callable[[], datetime]
T = TypeVar("T")
Params = ParamSpec("Params")
PARSERS = ParsePool()
# A publish reads at most READ_CAP_PER_ITEM × max_items + READ_CAP_BASE entries (12,000
# for the default 200 items): room for a busy source whose items an `include` mostly
# filters out (3,000 a day, 1 in 100 kept, must not push a quiet source's week out of the
# feed), and a bound on the work whatever the store holds (grouping is linear: ~0.3 s).
READ_CAP_PER_ITEM = 50
READ_CAP_BASE = 2000
OUTPUT_FILES = ("rss.xml", "atom.xml", "feed.json", "index.html", "sources.opml")


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
    outcome: str  # "updated", "unchanged", "not-modified" or "failed"
    new: int = 0
    updated: int = 0
    error: str | None = None
    warning: str | None = None

    def summary(self) -> str:
        if self.outcome == "failed":
            return f"error: {self.error}"
        if self.outcome in ("skipped", "disabled"):
            return f"{self.outcome}: {self.error}"
        if self.outcome == "not-modified":
            return "not modified"
        if self.outcome == "unchanged":
            return "no new items"
        changed = f", {self.updated} updated" if self.updated else ""
        return f"{self.new} new{changed}"


@dataclass(frozen=True)
class PublishReport:
    """What a publish wrote."""

    items: int
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class CycleReport:
    sources: tuple[SourceReport, ...]
    publish: PublishReport

    def tally(self) -> str:
        """ "9 ok, 1 failed, 2 skipped": how the cycle's sources fared."""
        counts: dict[str, int] = {}
        for source in self.sources:
            kind = (
                "ok"
                if source.outcome in ("updated", "unchanged", "not-modified")
                else source.outcome
            )
            counts[kind] = counts.get(kind, 0) + 1
        order = ("ok", "failed", "skipped", "disabled")
        return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) or "no sources"


async def poll_source(
    source: SourceConfig, fetcher: Fetcher, store: StoreAPI, config: Config, clock: Clock
) -> SourceReport:
    """Fetch, parse and store one source, record how it went, and schedule its next poll."""
    state = await in_store(store, store.source_state, source.name)
    if state is not None and state.disabled:
        return SourceReport(source.name, "disabled", error=state.disabled)
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
                    teaser_length=config.publish.teaser_length,
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
    """Store a successful poll's entries and record the poll: the store half of `_settle`."""
    report = SourceReport(source.name, "not-modified" if body_hash is None else "unchanged")
    if feed is not None:
        if feed.warning:
            log.warning("%s: %s", source.name, feed.warning)
        result = store.store_entries(source.name, feed.entries, now)
        kind = "updated" if result.new or result.updated else "unchanged"
        report = SourceReport(source.name, kind, result.new, result.updated, warning=feed.warning)
    store.record_success(
        source.name,
        outcome.validators,
        now,
        report.outcome,
        feed=feed,
        next_poll=later,
        url=source.url,
        moved_to=moved,
        body_hash=body_hash,
    )
    log.info("%s: %s", source.name, report.summary())
    return report


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
        store.disable(source.name, reason, now, url=source.url)
        log.error("%s: the feed is gone (HTTP 410); disabled until its url changes", source.name)
        return SourceReport(source.name, "disabled", error=reason)
    wait = retry_after(outcome.retry_after, now) if outcome.status in (429, 503) else None
    later = next_poll(source.name, source.interval, now, failures, ServerHints(retry_after=wait))
    error = outcome.error
    if wait is not None and wait > now:
        error += f"; not asked again before {later:%Y-%m-%d %H:%M:%S} UTC (Retry-After)"
    if state is not None and state.moved_to and failures >= MOVED_FAILURE_LIMIT:
        error += (
            f"; going back to {redact_url(source.url)} (the address it had moved to keeps failing)"
        )
        store.forget_move(source.name)
    store.record_failure(source.name, error, now, later, url=source.url, retry_after=wait)
    log.warning("%s: %s", source.name, error)
    return SourceReport(source.name, "failed", error=error)


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


def _reason_to_skip(
    store: StoreAPI, name: str, now: datetime, *, force: bool
) -> tuple[str, str] | None:
    """(outcome, why) for a source a cycle must not poll now; None to poll it."""
    state = store.source_state(name)
    if state is None:
        return None
    if state.disabled:
        return "disabled", state.disabled
    if state.retry_after is not None and state.retry_after > now:
        until = f"{state.retry_after:%Y-%m-%d %H:%M:%S}"
        return "skipped", f"the server asked us not to return before {until} UTC"
    if not force and state.failures and state.next_poll is not None and state.next_poll > now:
        return "skipped", (
            f"backing off after {state.failures} failure(s) until "
            f"{state.next_poll:%Y-%m-%d %H:%M:%S} UTC (--force polls it now)"
        )
    return None


def read_cap(max_items: int) -> int:
    """The most entries a publish reads (and the most earlier copies beside them)."""
    return READ_CAP_PER_ITEM * max_items + READ_CAP_BASE


def current_timeline(
    config: Config,
    store: StoreAPI,
    now: datetime,
    credits: Mapping[str, SourceCredit] | None = None,
) -> Timeline:
    """The timeline as it should be published now.

    Reads only what can be published: the newest entries, a few times `max_items` of them
    (filters and duplicates drop some), reading further only when that did not suffice, and
    never more than `read_cap` entries, nor as many earlier copies of them: a feed of
    thousands of copies of one story cannot make a publish read the whole store.
    """
    names = [s.name for s in config.sources]
    credits = credits if credits is not None else store.source_credits(config.sources)
    cap = read_cap(config.publish.max_items)
    limit = min(config.publish.max_items * 2 + 50, cap)
    oldest = now - config.publish.max_age
    while True:
        entries = store.recent_entries(names, oldest, limit)
        timeline = build_timeline(
            entries,
            credits,
            now=now,
            max_items=config.publish.max_items,
            max_age=config.publish.max_age,
            filters=config.publish.filters,
            source_filters={s.name: s.filters for s in config.sources},
            earlier=store.earlier_copies(names, entries, oldest, limit),
        )
        if len(timeline.items) >= config.publish.max_items or len(entries) < limit:
            break
        if limit >= cap:
            log.warning(
                "published %d items, fewer than max_items, after reading %d entries "
                "(the most a publish reads): most of the newest are copies or filtered out",
                len(timeline.items),
                limit,
            )
            break
        limit = min(limit * 4, cap)
    if timeline.updated is None:
        # Nothing to publish yet: a fixed, plausible date keeps the empty feeds' bytes stable.
        timeline = replace(timeline, updated=store.first_added() or now)
    return timeline


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
    store.record_failure(source.name, message, now, later, url=source.url)


def publish_timeline(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Render the current timeline, store it as the published snapshot, write what changed.

    Daemons sharing a PostgreSQL store each serve their own output/, yet must serve the
    same bytes (one ETag, whichever daemon a reader reaches). Rendering alone cannot promise
    that: each would render at its own moment from a database that keeps changing. So
    publishing runs under `store.publish_lock()` (one publisher at a time), stores what it
    rendered with the fingerprint of its input, and every daemon copies the newest snapshot
    into its output/ (`follow_published`). The snapshot written last was rendered from the
    newest data, since readers of the data take the same lock. On SQLite it is the same path.
    A snapshot with this very fingerprint is not rendered again, only copied if missing here.
    """
    output_dir = config.publish.output_dir
    with store.publish_lock():
        started = time.perf_counter()  # the work, not the wait for another daemon's turn
        credits = store.source_credits(config.sources)
        timeline = current_timeline(config, store, now, credits)
        # Rendering is a pure function of these (and of this version's code): the same input
        # renders the same bytes, so there is nothing to render again.
        fingerprint = hashlib.sha256(
            repr((__version__, config.site, timeline, sorted(credits.items()))).encode()
        ).hexdigest()
        if store.published_fingerprint() == fingerprint:
            written = follow_published(output_dir, store, fingerprint)
        else:
            files = _render(config, timeline, credits)
            store.save_published(fingerprint, files)
            written = publish_files(output_dir, files)
            remember_published(output_dir, fingerprint, OUTPUT_FILES)
    report = PublishReport(
        items=len(timeline.items),
        changed=tuple(n for n in OUTPUT_FILES if written.get(n)),
        unchanged=tuple(n for n in OUTPUT_FILES if not written.get(n)),
        seconds=time.perf_counter() - started,
    )
    if written:
        log.info(
            "published %d items (%s)", report.items, ", ".join(report.changed) or "no file changed"
        )
    return report


def _render(
    config: Config, timeline: Timeline, credits: Mapping[str, SourceCredit]
) -> dict[str, bytes]:
    # Imported here: a process that never renders (a cycle of 304s) never loads them.
    from aggregator.jsonfeed import render_json_feed
    from aggregator.opml import render_opml
    from aggregator.page import render_html
    from aggregator.render import render_atom, render_rss

    files = {
        "rss.xml": render_rss(timeline, config.site),
        "atom.xml": render_atom(timeline, config.site),
        "feed.json": render_json_feed(timeline, config.site),
        "index.html": render_html(timeline, config.site),
        "sources.opml": render_opml(list(credits.values()), config.site),
    }
    assert tuple(files) == OUTPUT_FILES
    return files


def follow_published(
    output_dir: Path, store: StoreAPI, fingerprint: str | None = None
) -> dict[str, bool]:
    """Copy the store's published snapshot into `output_dir` unless it is there already.

    `fingerprint`: the snapshot's, when the caller has just read it. Returns which files
    were rewritten ({} when the snapshot was already here, or there is none yet). Each file
    is replaced atomically and only when its bytes differ, so an unchanged file keeps its
    ETag.
    """
    fingerprint = fingerprint or store.published_fingerprint()
    if fingerprint is None or already_published(output_dir, fingerprint, OUTPUT_FILES):
        return {}
    snapshot = store.load_published()
    if snapshot is None:
        return {}
    fingerprint, files = snapshot
    written = publish_files(output_dir, files)
    remember_published(output_dir, fingerprint, OUTPUT_FILES)
    return written


def apply_retention(config: Config, store: StoreAPI, now: datetime) -> int:
    """Delete entries older than `[store] keep` (their ids stay as tombstones)."""
    deleted = store.prune(now - config.store.keep, now)
    if deleted:
        log.info("retention: deleted %d entries older than %s", deleted, config.store.keep)
    return deleted


async def run_cycle(
    config: Config,
    store: StoreAPI,
    *,
    clock: Clock = utc_now,
    on_source: Callable[[SourceReport], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    force: bool = False,
) -> CycleReport:
    """Poll every configured source once (bounded concurrency), then publish.

    Skipped, and said so: a source disabled by 410 Gone, one whose server asked us to wait
    (Retry-After), one backing off after errors unless `force` (which overrides only
    our own schedule, never a server's Retry-After), and one a daemon sharing the store is
    polling right now. Each source is claimed (`claim_due`) just before its poll, as the
    daemon does, and at most twice `concurrency` are held at once, so a claim never waits
    longer than its lease allows (see `config.default_lease`).
    """
    store.sync_sources(config.sources, clock())
    remove_stale_temp_files(config.publish.output_dir)
    owner = claim_owner()
    holding = asyncio.Semaphore(2 * config.poll.concurrency)

    async def claimed_poll(source: SourceConfig) -> SourceReport:
        async with holding:
            now = clock()
            lease = config.poll.lease
            claimed = await in_store(
                store, store.claim_due, [source.name], now, owner, lease, due_by=EVERY_SCHEDULE
            )
            if not claimed:
                return SourceReport(
                    source.name, "skipped", error="another daemon is polling it right now"
                )
            try:
                return await poll_source(source, fetcher, store, config, clock)
            except BaseException:
                # Recording the poll ends the claim; a crash or a cancel records nothing.
                await in_store(store, store.release, source.name, owner)
                raise

    async def guarded(source: SourceConfig) -> SourceReport:
        try:
            skip = await in_store(store, _reason_to_skip, store, source.name, clock(), force=force)
            if skip is not None:
                report = SourceReport(source.name, skip[0], error=skip[1])
                if on_source is not None:
                    on_source(report)
                return report
            report = await claimed_poll(source)
        except Exception as e:  # a bug, but one source must never stop the cycle
            log.exception("%s: unexpected error", source.name)
            message = record_crash(source, store, e, clock())
            report = SourceReport(source.name, "failed", error=message)
        if on_source is not None:
            on_source(report)
        return report

    async with Fetcher(
        timeout=config.poll.timeout.total_seconds(),
        concurrency=config.poll.concurrency,
        per_host=config.poll.per_host,
        max_bytes=config.poll.max_bytes,
        user_agent=config.poll.user_agent,
        transport=transport,
    ) as fetcher:
        reports = await asyncio.gather(*(guarded(s) for s in config.sources))
    publish = publish_timeline(config, store, clock())
    apply_retention(config, store, clock())
    return CycleReport(tuple(reports), publish)

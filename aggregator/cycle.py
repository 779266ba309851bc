"""`aggregator once`: poll every configured source, publish, apply retention.

The daemon runs the same poll (`aggregator.poll`) and publish (`aggregator.publish`) on its
own schedule; this is the one-shot cycle around them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from aggregator.fetch import Fetcher
from aggregator.output import remove_stale_temp_files
from aggregator.poll import (
    EVERY_SCHEDULE,
    Clock,
    SourceReport,
    claim_owner,
    in_store,
    poll_source,
    reason_to_skip,
    record_crash,
    sync_sources,
    utc_now,
)
from aggregator.publish import PublishReport, publish_timeline
from aggregator.settings import Config, SourceConfig
from aggregator.store import StoreAPI
from aggregator.store.records import PollOutcome

log = logging.getLogger("aggregator")


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
    sync_sources(store, config.sources, clock())
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
                    source.name, PollOutcome.SKIPPED, error="another daemon is polling it right now"
                )
            try:
                return await poll_source(source, fetcher, store, config, clock)
            except BaseException:
                # Recording the poll ends the claim; a crash or a cancel records nothing.
                await in_store(store, store.release, source.name, owner)
                raise

    async def guarded(source: SourceConfig) -> SourceReport:
        try:
            skip = await in_store(store, reason_to_skip, store, source.name, clock(), force=force)
            if skip is not None:
                report = SourceReport(source.name, skip[0], error=skip[1])
                if on_source is not None:
                    on_source(report)
                return report
            report = await claimed_poll(source)
        except Exception as e:  # a bug, but one source must never stop the cycle
            log.exception("%s: unexpected error", source.name)
            message = record_crash(source, store, e, clock())
            report = SourceReport(source.name, PollOutcome.FAILED, error=message)
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

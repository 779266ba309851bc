"""`aggregator once`: poll every configured source, publish, apply retention.

The daemon runs the same poll (`aggregator.poll`) and publish (`aggregator.publish`) on its
own schedule; this is the one-shot cycle around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from aggregator.fetch import Fetcher
from aggregator.output import remove_stale_temp_files
from aggregator.parse.pool import ParsePool
from aggregator.poll import (
    Claimed,
    Clock,
    Poller,
    SourceReport,
    claim_batch,
    claim_owner,
    poll_batched,
    sync_sources_in_steps,
    take_back_dead_claims,
    utc_now,
)
from aggregator.publish import PublishReport, publish_all
from aggregator.recording import RecordBatch
from aggregator.settings import Config, SourceConfig
from aggregator.store import StoreAPI
from aggregator.store.adapter import AsyncStore

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
    parsers: ParsePool | None = None,
) -> CycleReport:
    """Poll every configured source once (bounded concurrency), then publish.

    Sources are claimed in batches of `concurrency` (`poll.claim_batch`, which says why one
    is skipped: one state read and one claim per batch), each batch once there is room for
    it, so at most twice `concurrency` claims are held at once and a claim never waits
    longer than its lease allows (see `config.default_lease`). The parser pool is started
    here unless `parsers` is given, and closed at the end.
    """
    on_loop = AsyncStore(store)
    await sync_sources_in_steps(on_loop, config.sources, clock())
    await take_back_dead_claims(on_loop, clock())
    remove_stale_temp_files(config.publish.output_dir)
    pool = parsers or ParsePool()

    try:
        async with Fetcher(
            timeout=config.poll.timeout.total_seconds(),
            concurrency=config.poll.concurrency,
            per_host=config.poll.per_host,
            max_bytes=config.poll.max_bytes,
            user_agent=config.poll.user_agent,
            transport=transport,
        ) as fetcher:
            records = RecordBatch(on_loop)  # 304s' records, written together
            poller = Poller(config, on_loop, fetcher, pool, claim_owner(), clock, records)
            try:
                reports = await _poll_all(config.sources, poller, force, on_source)
            finally:  # a cancelled cycle too: its 304s must not leave their claims behind
                await records.flush()
    except BaseException:
        if parsers is None:
            pool.close(kill=True)  # a cancelled cycle must not wait for a runaway parse
        raise
    if parsers is None:
        pool.close()  # every parse has ended
    publish = await on_loop.run(lambda s: publish_all(config, s, clock()))
    await on_loop.run(lambda s: apply_retention(config, s, clock()))
    return CycleReport(tuple(reports), publish)


async def _poll_all(
    sources: Sequence[SourceConfig],
    poller: Poller,
    force: bool,
    on_source: Callable[[SourceReport], None] | None,
) -> list[SourceReport]:
    """Every source claimed a batch of `concurrency` at a time, each batch once there is
    room for it (at most twice `concurrency` claims held), and polled; the reports in the
    sources' order."""
    batch = poller.config.poll.concurrency
    holding = asyncio.Semaphore(2 * batch)

    async def poll(source: SourceConfig, claimed: Claimed) -> SourceReport:
        try:
            report = await poll_batched(source, poller, claimed)
        finally:
            holding.release()
        if on_source is not None:
            on_source(report)
        return report

    polls: list[asyncio.Task[SourceReport]] = []
    try:
        for start in range(0, len(sources), batch):
            some = sources[start : start + batch]
            for _ in some:
                await holding.acquire()
            claimed = await claim_batch(some, poller, force=force)
            polls += [asyncio.create_task(poll(s, claimed)) for s in some]
        return list(await asyncio.gather(*polls))
    except BaseException:
        # Cancelled (a stop), or a bug: the polls under way give their claims back as they
        # end; a poll cancelled before it began cannot, so every claim left is given back
        # here (the owner is this cycle's alone).
        for p in polls:
            p.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.shield(poller.store.release_all(poller.owner))
        raise

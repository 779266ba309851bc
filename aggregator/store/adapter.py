"""The store as coroutines, for the event loop: `AsyncStore` wraps any `StoreAPI`.

Callers on the loop (the poll path, the daemon) await these and never decide where a store
call runs. SQLite answers in microseconds from one connection, so its calls are made right
on the loop (a thread hop would cost more than the call). PostgreSQL's wait for a server,
perhaps on another machine, and made on the loop they would stall every fetch and every
reader's request meanwhile: they run in the loop's default executor, several at once (its
connection pool is shared by threads).

A cancelled caller still waits for its call to end, unless cancelled again (a stop that
cannot wait longer): a poll cancelled mid-write gives its claim back after the write, not
during it, and nothing of it keeps running unseen. The outcome of a call whose caller gave
up is taken here, so an error then is neither lost in a traceback nor reported as never
retrieved.

One short coroutine per `StoreAPI` method, in the interface's order, so the list is easy to
keep in line with it; the archive reads have none, since only a publish (in its thread, on
the store itself) makes them. `publish_lock` has none: a lock held across awaits would tie a
worker thread to the loop; publishing runs whole, lock included, as one `run`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from aggregator.settings import SourceConfig
from aggregator.store.api import StoreAPI
from aggregator.store.records import (
    EntryWrites,
    FeedMeta,
    KnownEntries,
    PollRecord,
    PublishedChange,
    PublishedFile,
    Reschedule,
    Schedule,
    SourceState,
    StoryKeys,
    Subscription,
)
from aggregator.types import ItemMemory, StoredEntry

log = logging.getLogger("aggregator")

T = TypeVar("T")
Params = ParamSpec("Params")


class AsyncStore:
    """`StoreAPI` as coroutines: on the loop for SQLite, in a worker thread for PostgreSQL."""

    def __init__(self, store: StoreAPI) -> None:
        self.sync = store  # the wrapped store, for `run` and for code off the loop
        self.remote = store.remote

    async def run(
        self,
        work: Callable[Concatenate[StoreAPI, Params], T],
        /,
        *args: Params.args,
        **kwargs: Params.kwargs,
    ) -> T:
        """`work(store, *args, **kwargs)`, where the store's calls belong (see the module).

        For a step of several calls that a cancel must not cut in two (two writes of one
        poll's record), and for the composite helpers of the poll path: one thread hop.
        """
        call = functools.partial(work, self.sync, *args, **kwargs)
        if not self.remote:
            return call()
        future = asyncio.get_running_loop().run_in_executor(None, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_outcome_unwanted)  # even if this caller stops waiting
            await asyncio.wait([future])
            raise

    def close(self) -> None:
        """Close the wrapped store (from the loop, once nothing uses it any more)."""
        self.sync.close()

    async def ping(self) -> None:
        await self.run(lambda s: s.ping())

    async def checkpoint(self) -> None:
        await self.run(lambda s: s.checkpoint())

    # -- sources ---------------------------------------------------------------------------

    async def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> list[Schedule]:
        return await self.run(lambda s: s.sync_sources(sources, now))

    async def reschedule(self, moves: Sequence[Reschedule]) -> None:
        await self.run(lambda s: s.reschedule(moves))

    async def source_state(self, name: str) -> SourceState | None:
        return await self.run(lambda s: s.source_state(name))

    async def source_states(self) -> list[SourceState]:
        return await self.run(lambda s: s.source_states())

    async def disabled_sources(self) -> set[str]:
        return await self.run(lambda s: s.disabled_sources())

    async def poll_states(self, names: Sequence[str]) -> dict[str, SourceState]:
        return await self.run(lambda s: s.poll_states(names))

    async def due_sources(self, names: Sequence[str], now: datetime) -> list[str]:
        return await self.run(lambda s: s.due_sources(names, now))

    async def record_poll(self, record: PollRecord) -> None:
        await self.run(lambda s: s.record_poll(record))

    async def remembered_items(self, name: str) -> ItemMemory | None:
        return await self.run(lambda s: s.remembered_items(name))

    async def record_polls(self, records: Sequence[PollRecord]) -> None:
        await self.run(lambda s: s.record_polls(records))

    async def feed_metas(self) -> dict[str, FeedMeta]:
        return await self.run(lambda s: s.feed_metas())

    async def first_added(self) -> datetime | None:
        return await self.run(lambda s: s.first_added())

    # -- entries ---------------------------------------------------------------------------

    async def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        return await self.run(lambda s: s.known_entries(source, ids))

    async def write_entries(self, source: str, writes: EntryWrites) -> None:
        await self.run(lambda s: s.write_entries(source, writes))

    async def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int
    ) -> list[StoredEntry]:
        return await self.run(lambda s: s.recent_entries(sources, since, limit))

    async def earlier_copies(
        self, sources: Iterable[str], keys: StoryKeys, before: datetime, limit: int
    ) -> list[StoredEntry]:
        return await self.run(lambda s: s.earlier_copies(sources, keys, before, limit))

    async def prune(self, before: datetime, now: datetime) -> int:
        return await self.run(lambda s: s.prune(before, now))

    # -- sharing the work ------------------------------------------------------------------

    async def claim_due(
        self,
        names: Sequence[str],
        now: datetime,
        owner: str,
        lease: timedelta,
        *,
        limit: int | None = None,
        due_by: datetime | None = None,
    ) -> list[str]:
        return await self.run(
            lambda s: s.claim_due(names, now, owner, lease, limit=limit, due_by=due_by)
        )

    async def release(self, name: str, owner: str) -> None:
        await self.run(lambda s: s.release(name, owner))

    async def claim_holders(self, now: datetime) -> list[str]:
        return await self.run(lambda s: s.claim_holders(now))

    async def release_all(self, owner: str) -> int:
        return await self.run(lambda s: s.release_all(owner))

    # -- the published snapshot ------------------------------------------------------------

    async def save_published(self, change: PublishedChange) -> None:
        await self.run(lambda s: s.save_published(change))

    async def published_fingerprints(self) -> dict[str, str]:
        return await self.run(lambda s: s.published_fingerprints())

    async def published_digests(self, publication: str) -> dict[str, str]:
        return await self.run(lambda s: s.published_digests(publication))

    async def load_published(self, names: Iterable[str]) -> list[PublishedFile]:
        return await self.run(lambda s: s.load_published(names))

    async def publication_state(self, publication: str) -> str | None:
        return await self.run(lambda s: s.publication_state(publication))

    # -- WebSub subscriptions --------------------------------------------------------------

    async def subscription(self, source: str) -> Subscription | None:
        return await self.run(lambda s: s.subscription(source))

    async def subscription_by_token(self, token: str) -> Subscription | None:
        return await self.run(lambda s: s.subscription_by_token(token))

    async def subscriptions(self) -> list[Subscription]:
        return await self.run(lambda s: s.subscriptions())

    async def save_subscription(self, sub: Subscription, was: Subscription | None) -> bool:
        return await self.run(lambda s: s.save_subscription(sub, was))

    async def delete_subscription(self, source: str, token: str) -> bool:
        return await self.run(lambda s: s.delete_subscription(source, token))


def _outcome_unwanted(call: asyncio.Future[Any]) -> None:
    """Take the outcome of a store call whose caller was cancelled: an error then is no news
    (the stop goes on) and must not be reported as never retrieved."""
    if not call.cancelled() and (error := call.exception()) is not None:
        log.debug("a store call ended after its caller was cancelled: %s", error)

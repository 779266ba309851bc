"""What a store offers, whichever database holds it; `open_store` opens the one a target names.

Two implementations stand behind it: `aggregator.store.sqlite.SqliteStore` (SQLite, the embedded
default: one file, one daemon) and `aggregator.store.postgres.PgStore` (PostgreSQL: one database
shared by several daemons). Contract tests (tests/test_store_contract.py) run one body of
tests against both. This module holds no SQL and no rules: the values that cross the
interface are in `records`, and what to write is decided by `aggregator.update`.

Sharing the work: a poller calls `claim_due`, which hands each due source to exactly one
caller until its lease runs out; recording the poll (`record_poll`) or `release` ends the
claim early. Publishing runs under `publish_lock`, so two
daemons never render at the same time, and stores what it rendered as the published
snapshot, which every daemon copies into its own output/ (see `publish.publish_timeline`).
What a publish must re-render of the archives it finds with `entry_marks` (what was stored
since its last change token) and the day reads below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from aggregator.settings import SourceConfig
from aggregator.store.hub import HubStore
from aggregator.store.records import (
    Backfills,
    EntryMarks,
    EntryWrites,
    FeedMeta,
    KnownEntries,
    PollRecord,
    PublishedChange,
    PublishedFile,
    Reschedule,
    Schedule,
    SourceState,
    StoreResult,
    StoryKeys,
    Subscription,
)
from aggregator.types import ItemMemory, StoredEntry

__all__ = ["SourceState", "StoreAPI", "StoreResult", "is_store_url", "open_store"]

_URL_SCHEMES = ("postgresql://", "postgres://")


class StoreAPI(HubStore, Protocol):
    """Sources' fetch state, entries and tombstones, claims on due sources, the publish lock.

    Every datetime going in or coming out is timezone-aware UTC. Entry dates are kept to
    the second, schedule times (next poll, Retry-After, leases) to the microsecond.
    """

    #: True when calls wait on a database server (PostgreSQL, possibly on another machine):
    #: the daemon then makes them from worker threads (`store.adapter.AsyncStore`), several at
    #: once, so its event loop goes on fetching and serving meanwhile. False for SQLite:
    #: one connection, calls of microseconds, made on the loop.
    remote: bool

    @property
    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise StorageError unless the store answers."""
        ...

    def checkpoint(self) -> None:
        """Housekeeping that keeps the store's files bounded (where the database needs it)."""
        ...

    # -- sources ---------------------------------------------------------------------------

    def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> list[Schedule]:
        """Know every configured source (a changed URL drops its fetch state); returns their
        schedules, from which `update.schedule_repairs` decides what `reschedule` moves."""
        ...

    def reschedule(self, moves: Sequence[Reschedule]) -> None:
        """Move next polls, each only if it is still the one the move was decided from."""
        ...

    def source_state(self, name: str) -> SourceState | None: ...

    def source_states(self) -> list[SourceState]: ...

    def disabled_sources(self) -> set[str]:
        """The names of the sources disabled (HTTP 410 Gone), without reading every state."""
        ...

    def poll_states(self, names: Sequence[str]) -> dict[str, SourceState]:
        """What polls of these sources need to know, by name, read at once: `source_state`'s
        fields without the count of entries (`entries` is None), with each one's WebSub
        subscription (`subscription`). Unknown names are left out."""
        ...

    def due_sources(self, names: Sequence[str], now: datetime) -> list[str]: ...

    def record_poll(self, record: PollRecord) -> None:
        """Write how a poll ended (and what its feed changed) in one transaction; the
        source's claim ends with it."""
        ...

    def remembered_items(self, name: str) -> ItemMemory | None:
        """The items of the source's last document parsed (`PollRecord.items`), for a
        partial parse of the next; None when none are kept."""

    def record_polls(self, records: Sequence[PollRecord]) -> None:
        """`record_poll` for each of `records`, all in one transaction."""
        ...

    def feed_metas(self) -> dict[str, FeedMeta]:
        """What each known source's feed said about itself when last parsed."""
        ...

    def first_added(self) -> datetime | None: ...

    # -- entries ---------------------------------------------------------------------------

    def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        """The signatures and tombstones the store holds of these entry ids of `source`."""
        ...

    def write_entries(self, source: str, writes: EntryWrites) -> None:
        """Write what a feed changed without recording a poll (`record_poll` does both)."""
        ...

    def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int, *, by_source: bool = False
    ) -> list[StoredEntry]:
        """The newest `limit` entries of `sources` placed since `since`, newest first (ties by
        source and entry id). `by_source`: a hint that these sources hold a small share of
        the recent entries (a channel's), so that reading source by source is cheaper than
        walking every entry by date; the answer is the same."""
        ...

    def entry_versions(self) -> dict[str, int]:
        """Each source's count of the writes that changed its entries (new or changed ones,
        retention's deletions): equal counts, the same entries."""
        ...

    def sources_placed_between(self, since: datetime, before: datetime) -> set[str]:
        """The sources with an entry whose `sort_date` is in [since, before)."""
        ...

    def earlier_copies(
        self, sources: Iterable[str], keys: StoryKeys, before: datetime, limit: int
    ) -> list[StoredEntry]: ...

    def prune(self, before: datetime, now: datetime) -> int: ...

    # -- archives: what changed since the last publish, and one day's entries ---------------

    def entry_marks(self, sources: Iterable[str], since: str | None, limit: int) -> EntryMarks:
        """The marks (place, story keys) of the entries of `sources` stored (new or changed)
        or deleted by retention after the change token `since`, or of all their (stored)
        entries when `since` is None; at
        most `limit` (`complete` says whether that was all), with the token as of now."""
        ...

    def story_dates(self, sources: Iterable[str], keys: StoryKeys, limit: int) -> list[datetime]:
        """The `sort_date`s of at most `limit` entries of `sources` with one of the `keys`."""
        ...

    def entries_between(
        self,
        sources: Iterable[str],
        start: datetime,
        end: datetime,
        limit: int,
        *,
        by_source: bool = False,
    ) -> list[StoredEntry]:
        """At most `limit` entries of `sources` placed in [start, end), the earliest first.
        `by_source`: a hint that these sources hold a small share of the entries (as for
        `recent_entries`)."""
        ...

    def copies_outside(
        self, sources: Iterable[str], start: datetime, end: datetime, limit: int
    ) -> list[StoredEntry]:
        """At most `limit` entries of `sources` placed outside [start, end) that share a
        story key with one placed inside, the first seen first."""
        ...

    def oldest_entry(self, sources: Iterable[str]) -> datetime | None: ...

    def latest_before(self, sources: Iterable[str], before: datetime) -> datetime | None: ...

    # -- sharing the work ------------------------------------------------------------------

    def claim_due(
        self,
        names: Sequence[str],
        now: datetime,
        owner: str,
        lease: timedelta,
        *,
        limit: int | None = None,
        due_by: datetime | None = None,
    ) -> list[str]:
        """Claim for `owner` the due sources that nobody holds (at most `limit`), in due order.

        Picking and marking (`claimed_by`, `claimed_until = now + lease`) happen in one
        transaction, so concurrent callers get disjoint sets; an expired lease is free again.
        Due means a next poll by `due_by` (default `now`): `once` passes a far future to
        poll every source, while leases still expire at `now`.
        """
        ...

    def release(self, name: str, owner: str) -> None:
        """End `owner`'s claim on `name`; a claim someone else has taken over stays."""
        ...

    def claim_holders(self, now: datetime) -> list[str]:
        """The owners holding a lease that has not run out at `now`, by name."""
        ...

    def release_all(self, owner: str) -> int:
        """End every claim of `owner` (known dead); returns how many there were."""
        ...

    def publish_lock(self) -> AbstractContextManager[None]:
        """Held while publishing; entering waits while another publisher holds it."""
        ...

    # -- the published snapshot: what every daemon serves ------------------------------------

    def save_published(self, change: PublishedChange) -> None:
        """Apply one publish's change to the stored snapshot, in one transaction (under
        `publish_lock`): files written and removed, publications' heads, publications
        dropped (channels no longer configured) with their files."""
        ...

    def published_fingerprints(self) -> dict[str, str]:
        """Each stored publication's fingerprint (of its files as they are), by its
        directory ("" for the root); {} before any publish."""
        ...

    def published_digests(self, publication: str) -> dict[str, str]:
        """The digest of every stored file of `publication`, by name (under output/)."""
        ...

    def load_published(self, names: Iterable[str]) -> list[PublishedFile]:
        """The stored files among `names`, by name."""
        ...

    def publication_state(self, publication: str) -> str | None:
        """What `publication` saved of its state with its last change; None before."""
        ...

    # -- WebSub subscriptions: any daemon may answer a hub --------------------------------

    def subscription(self, source: str) -> Subscription | None: ...

    def subscription_by_token(self, token: str) -> Subscription | None: ...

    def subscriptions(self) -> list[Subscription]: ...

    def save_subscription(self, sub: Subscription, was: Subscription | None) -> bool:
        """Store `sub` only if the source's row is still `was` (None: none); whether it did."""
        ...

    def delete_subscription(self, source: str, token: str) -> bool: ...


def is_store_url(target: str | Path) -> bool:
    """Whether `target` names a PostgreSQL database (a URL) rather than an SQLite file."""
    return isinstance(target, str) and target.startswith(_URL_SCHEMES)


def open_store(target: str | Path) -> StoreAPI:
    """Open and migrate the store `target` names: a `postgresql://` URL, else a file path."""
    # The back ends are imported only here, so that SQLite users never load libpq; the
    # story-key rule is handed to a store whose old entries it must key (not imported there).
    if is_store_url(target):
        from aggregator.store.postgres import PgStore  # noqa: PLC0415

        return PgStore.open(str(target), backfills=default_backfills())
    from aggregator.store.sqlite import SqliteStore  # noqa: PLC0415

    return SqliteStore.open(Path(target), backfills=default_backfills())


def default_backfills() -> Backfills:
    """The rules migrations need, from `text`; imported here, so the stores never import them."""
    from aggregator.text import entry_text, story_keys  # noqa: PLC0415

    return Backfills(story_keys=story_keys, entry_text=entry_text)

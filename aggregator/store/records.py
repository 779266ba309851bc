"""The values that cross the store interface, whichever back end answers.

They are named for the way they flow: the store hands out what it holds (`SourceState`,
`Schedule`, `KnownEntries`, `FeedMeta`), the update rules (`aggregator.update`) decide,
and the store is handed what to write (`PollRecord`, `EntryWrites`, `Reschedule`). No
value here carries a rule: the store writes what it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from aggregator.types import ItemMemory, ParsedEntry, Validators


class PollOutcome(StrEnum):
    """How a poll ended; the value is what `last_outcome` stores (and `status` prints)."""

    UPDATED = "updated"  # new or changed entries
    UNCHANGED = "unchanged"  # a body, and nothing in it new
    NOT_MODIFIED = "not-modified"  # a 304
    FAILED = "failed"
    DISABLED = "disabled"  # 410 Gone: not polled until the URL changes
    SKIPPED = "skipped"  # not polled this time (backing off); never stored


class PushState(StrEnum):
    """Where a WebSub subscription stands; the value is what the store keeps."""

    PENDING = "pending"  # asked for, the hub has not verified it yet
    ACTIVE = "active"  # verified: pushes come until `lease_expires`
    RENEWING = "renewing"  # active, and asked again before the lease ends
    UNSUBSCRIBING = "unsubscribing"  # asked to end (source removed, its URL changed)
    DENIED = "denied"  # the hub said no (hub.mode=denied)
    EXPIRED = "expired"  # the lease ended without a renewal
    FAILED = "failed"  # the hub could not be asked (refused, unreachable, private address)


# -- out of the store ------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """A source's WebSub subscription, as stored (in and out alike): one per source.

    `token` is the last part of the callback path (random, unguessable), `secret` the HMAC
    key the hub signs pushes with, both new for each new subscription and kept through its
    renewals. `source_url` is the source's configured URL when it was made: another one
    (the operator changed it) ends it.
    """

    source: str
    source_url: str
    hub: str
    topic: str
    token: str
    secret: str
    state: PushState
    requested: datetime  # when the last request went to the hub
    lease_seconds: int | None = None  # granted by the hub at its last verification
    lease_expires: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class SourceState:
    """A source as the store knows it, for conditional GET and for `status`."""

    name: str
    url: str
    title: str | None
    site_url: str | None
    validators: Validators
    last_polled: datetime | None
    last_success: datetime | None
    last_outcome: PollOutcome | None
    last_error: str | None
    failures: int
    entries: int | None  # stored entries; None where not counted (`poll_states`: a poll needs none)
    next_poll: datetime | None
    retry_after: datetime | None = None  # a server asked us not to come back before this
    moved_to: str | None = None  # where a 301/308 chain led; polled instead of `url`
    disabled: str | None = None  # why polling stopped (410 Gone) until the operator acts
    body_hash: str | None = None  # of the last body parsed: the same body is not parsed again
    lifetime: timedelta | None = None  # the feed's own <ttl> / sy:updatePeriod, in force on 304s
    # Whether the items of its last parse are remembered (`remembered_items` reads them only
    # when a changed body is to be parsed, and only then).
    remembers: bool = False
    # Its WebSub subscription, read with the state for a poll (`poll_states`); else None.
    subscription: Subscription | None = None

    @property
    def fetch_url(self) -> str:
        return self.moved_to or self.url


@dataclass(frozen=True)
class Schedule:
    """A source's schedule as stored, for the next-poll repair after the config changed."""

    name: str
    last_polled: datetime | None
    next_poll: datetime | None
    failures: int
    retry_after: datetime | None
    lifetime: timedelta | None


@dataclass(frozen=True)
class Signature:
    """What tells a stored entry changed: its content and its dates, to the second."""

    content_hash: str
    published: datetime | None
    updated: datetime | None


@dataclass(frozen=True)
class KnownEntries:
    """What the store holds of some entry ids of one source: live ones and buried ones."""

    signatures: Mapping[str, Signature] = field(default_factory=dict)
    buried: frozenset[str] = frozenset()  # deleted by retention (tombstones)


@dataclass(frozen=True)
class FeedMeta:
    """What a feed says about itself: stored at each parse, read back for credits."""

    title: str | None
    site_url: str | None
    feed_id: str | None
    lifetime: timedelta | None = None  # its <ttl> / sy:updatePeriod


@dataclass(frozen=True)
class StoryKeys:
    """Normalized links and titles (`text.story_keys`) to look earlier copies up by."""

    links: frozenset[str] = frozenset()
    titles: frozenset[str] = frozenset()


# -- into the store --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reschedule:
    """Move a source's next poll from `was` to `to`; nothing if it is no longer `was`."""

    name: str
    was: datetime
    to: datetime


@dataclass(frozen=True)
class EntryWrite:
    """One entry to insert or update, with its dates as they are to be stored."""

    entry: ParsedEntry
    updated: datetime | None  # the entry's own, or None while it lies in the future
    sort_date: datetime | None = None  # for a new entry: its place in the timeline


@dataclass(frozen=True)
class EntryWrites:
    """What one parsed feed changes among its source's entries."""

    seen: datetime  # first_seen of new entries, last_seen of buried ones still in the feed
    new: tuple[EntryWrite, ...] = ()
    changed: tuple[EntryWrite, ...] = ()
    still_buried: tuple[str, ...] = ()  # tombstoned ids still in the feed

    @property
    def writes_anything(self) -> bool:
        return bool(self.new or self.changed or self.still_buried)


@dataclass(frozen=True)
class PollRecord:
    """How one poll of a source ended, written in one transaction; its claim ends with it.

    With `url`, nothing is written if the source's URL changed meanwhile (a reload while the
    poll ran): the old URL's validators must not be used for the new one.
    """

    name: str
    at: datetime
    outcome: PollOutcome
    url: str | None = None
    next_poll: datetime | None = None
    validators: Validators = field(default_factory=Validators)  # a success's, kept for next time
    error: str | None = None  # a failure's message, or why the source is disabled
    retry_after: datetime | None = None  # a failure's: not before this
    moved_to: str | None = None  # a success's permanent redirect: polled there from now on
    forget_move: bool = False  # a failure's: poll the configured URL again
    body_hash: str | None = None  # of the body parsed
    feed: FeedMeta | None = None  # of the feed parsed
    items: ItemMemory | None = None  # of the feed parsed, for the next parse (None: forget)
    entries: EntryWrites | None = None  # what the feed parsed changes
    keep_tombstones: bool = False  # the feed was not read: its buried ids are still there

    @property
    def succeeded(self) -> bool:
        return self.outcome in (
            PollOutcome.UPDATED,
            PollOutcome.UNCHANGED,
            PollOutcome.NOT_MODIFIED,
        )


@dataclass(frozen=True)
class StoreResult:
    """What one source's parsed feed changed in the store."""

    new: int
    updated: int


# How a story is keyed (`text.story_keys`): handed to a store that must key old entries.
StoryKeyRule = Callable[[str | None, str], tuple[str | None, str | None]]


@dataclass(frozen=True)
class Backfills:
    """The rules a migration applies to rows stored before a column existed or changed its
    meaning. Handed in by `open_store` (from `text`): a store keeps values, it does not know
    how they are made."""

    story_keys: StoryKeyRule  # (link, title) → the story keys (schema 6 / PostgreSQL 1)
    entry_text: Callable[[str], str]  # summary HTML → the text teasers are cut from (9 / 3)


@dataclass(frozen=True)
class EntryMark:
    """Where a stored entry sits (`sort_date`) and its story keys: what says which archive
    days an entry stored, changed or credited anew touches."""

    sort_date: datetime
    link_key: str | None
    title_key: str | None


@dataclass(frozen=True)
class EntryMarks:
    """Entries stored since a change token, and the token to ask from next time.

    The token is the store's own (a write counter, a database snapshot): opaque to callers,
    who keep it and hand it back. `complete` is False when more entries than asked for
    changed: the caller then treats everything as changed.
    """

    token: str
    marks: tuple[EntryMark, ...] = ()
    complete: bool = True


@dataclass(frozen=True)
class PublishedFile:
    """One published file: its path under output/ (`news/atom.xml` for a channel's), the
    digest of its bytes, the bytes, and the publication it belongs to (its directory: ""
    for the root, "<channel>/" for a channel)."""

    name: str
    digest: str
    data: bytes
    publication: str = ""


@dataclass(frozen=True)
class PublicationHead:
    """A publication as stored beside its files: `fingerprint` names its files as they are
    (a daemon whose copy has it has nothing to copy; it changes whenever one of them does),
    `state` is what its next publish needs (opaque to the store: the main files' render
    input, `archive.ArchiveState`)."""

    fingerprint: str
    state: str


@dataclass(frozen=True)
class PublishedChange:
    """What one publish changed in the published snapshot, written in one transaction.

    The snapshot is what every daemon sharing a store copies into its own output/, so all
    serve the same bytes (`publish.follow_published`): one row per file, so that a publish
    that changed three archive days writes three files, not thousands. `files` are written,
    `removed` (names) deleted; `heads` are the publications' fingerprints and states after
    the change; `dropped` publications (channels no longer configured) lose their files and
    head.
    """

    files: tuple[PublishedFile, ...] = ()
    removed: frozenset[str] = frozenset()
    heads: Mapping[str, PublicationHead] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()

"""The frozen values that flow one way between the stages.

fetch → `FetchOutcome` → parse → `ParsedFeed` → store → `StoredEntry` → timeline → `Timeline`
→ render.
Every datetime here is timezone-aware UTC; constructors check it so a naive one never travels far.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def require_utc(value: datetime | None, what: str) -> None:
    """Fail loudly (a bug) when a naive or non-UTC datetime is about to be stored."""
    if value is not None and value.utcoffset() != UTC.utcoffset(None):
        raise ValueError(f"{what} must be an aware UTC datetime, got {value!r}")


@dataclass(frozen=True)
class Validators:
    """What a server gave us for conditional GET next time."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A source answered with a body."""

    url: str
    final_url: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    validators: Validators
    permanent_redirect: str | None = None


@dataclass(frozen=True)
class NotModified:
    """A source answered 304, or a local file did not change."""

    url: str
    validators: Validators
    headers: Mapping[str, str] = field(default_factory=dict)
    permanent_redirect: str | None = None


@dataclass(frozen=True)
class Failed:
    """A source could not be fetched; `error` is one line for the operator."""

    url: str
    error: str
    status: int | None = None
    retry_after: str | None = None  # the raw Retry-After header of a 429 or 503


FetchOutcome = Fetched | NotModified | Failed


@dataclass(frozen=True)
class ParsedEntry:
    """One entry, normalized once at the parse boundary.

    `teaser` is the entry's plain text, uncut (`text.teaser_text`): the teaser is cut from it
    when publishing, with the `teaser_length` configured then.
    """

    entry_id: str
    title: str
    link: str | None
    summary_html: str
    teaser: str
    author: str | None
    categories: tuple[str, ...]
    published: datetime | None
    updated: datetime | None
    content_hash: str
    # Its story keys (text.story_keys), computed where the entry is made: in a parser
    # worker, not in the process that stores it, which coordinates every source.
    story_link: str | None = field(init=False, repr=False, compare=False)
    story_title: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        require_utc(self.published, "published")
        require_utc(self.updated, "updated")
        # Imported here, where an entry is made (a parser), so that importing these types
        # (the stores do) does not load the text rules.
        from aggregator.text import story_keys  # noqa: PLC0415

        link, title = story_keys(self.link, self.title)
        object.__setattr__(self, "story_link", link)
        object.__setattr__(self, "story_title", title)


@dataclass(frozen=True)
class ItemMemory:
    """The items of the document a source's last parse read, for its next parse to skip the
    unchanged ones (`parse.partial`).

    `frame` is a digest of what every item is read within (the XML declaration, the root and
    channel start tags, the response's media type, the URL, the time zone, the parser's
    version); `feed` one of what the parse said that items depend on (format, the feed's own
    link). `items` holds, in document order, each item's digest and the id of the entry it
    gave (None: it gave none). Stored with the source; never shown.
    """

    frame: str
    feed: str
    items: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class ParsedFeed:
    """A source's document, with its entries in document order.

    After a partial parse (`parse.partial`), `entries` are those of the items that changed
    since the last parse, and `reused` the ids of the entries of the unchanged ones, which
    the store already holds as they are.
    """

    title: str | None
    link: str | None
    feed_id: str | None
    entries: tuple[ParsedEntry, ...]
    warning: str | None = None
    lifetime: timedelta | None = None  # the feed's own <ttl> / sy:updatePeriod hint
    # WebSub discovery (`websub.discovery`): the hub the document names, and its own URL.
    hub: str | None = None
    self_url: str | None = None
    reused: tuple[str, ...] = ()  # entry ids of the items not parsed again
    memory: ItemMemory | None = None  # what the next parse may skip; None: nothing
    items_parsed: int = 0  # items feedparser read (all of them, but for a partial parse)
    items_reused: int = 0  # items a partial parse did not read (unchanged since the last)


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the store keeps it; `sort_date` is fixed when first seen.

    `teaser` is the stored plain text until the timeline cuts it (`build_timeline`).
    """

    source: str
    entry_id: str
    title: str
    link: str | None
    summary_html: str
    teaser: str
    author: str | None
    categories: tuple[str, ...]
    published: datetime | None
    updated: datetime | None
    first_seen: datetime
    sort_date: datetime
    # Its story keys (link, title) as the store holds them (`text.story_keys`, computed when
    # it was written): grouping stories needs no URL parsing per publish. None: not read
    # with it, computed when needed (`story_keys_of_entry`).
    story_keys: tuple[str | None, str | None] | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("published", "updated", "first_seen", "sort_date"):
            require_utc(getattr(self, name), name)


@dataclass(frozen=True)
class SourceCredit:
    """Who carried an entry, for `<source>` in the published feeds."""

    name: str
    title: str
    feed_url: str
    site_url: str | None = None
    feed_id: str | None = None


@dataclass(frozen=True)
class ChannelLink:
    """A channel as another publication's page lists it: its name, title, description and
    the address of its page (`<base_url><name>/`)."""

    name: str
    title: str
    description: str
    href: str


@dataclass(frozen=True)
class TimelineItem:
    """One published item: the entry, its source, its permanent public id and its dates.

    The entry's `teaser` here is the teaser as published, cut to `teaser_length`.
    """

    uid: str
    entry: StoredEntry
    source: SourceCredit
    published: datetime
    updated: datetime
    also: tuple[SourceCredit, ...] = ()  # other sources that carried the same story

    @property
    def sources(self) -> tuple[SourceCredit, ...]:
        """Every source that carried this story, the one whose copy is published first."""
        return (self.source, *self.also)

    def __post_init__(self) -> None:
        require_utc(self.published, "published")
        require_utc(self.updated, "updated")


@dataclass(frozen=True)
class Timeline:
    """The merged timeline, newest first; `updated` is the newest date in it (None when empty)."""

    items: tuple[TimelineItem, ...] = field(default_factory=tuple)
    updated: datetime | None = None

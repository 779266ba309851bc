"""Rows into records and records into rows, shared by the back ends: SQL-free.

Both back ends select the same columns in the same order (the `*_COLUMNS` lists below) and
differ only in how a time or a list of categories is held, which the caller passes in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from aggregator.store.records import (
    EntryMark,
    EntryWrite,
    FeedMeta,
    PollOutcome,
    PushState,
    Schedule,
    Signature,
    SourceState,
    Subscription,
)
from aggregator.types import ItemMemory, StoredEntry, Validators

When = Callable[[Any], datetime | None]

STATE_COLUMNS = """
    name, url, title, site_url, etag, last_modified, last_polled, last_success,
    last_outcome, last_error, failures,
    (SELECT count(*) FROM entries WHERE entries.source = sources.name), next_poll,
    retry_after, moved_to, disabled, body_hash, lifetime,
    EXISTS (SELECT 1 FROM source_items WHERE source_items.name = sources.name)
"""
# What a poll reads: the same, without counting the source's entries (a scan of them all).
POLL_STATE_COLUMNS = STATE_COLUMNS.replace(
    "(SELECT count(*) FROM entries WHERE entries.source = sources.name)", "NULL"
)
# Its columns one by one (no expression in it holds a comma), and how many there are: where
# a `poll_state_query` row's subscription begins.
_POLL_STATE_LIST = tuple(c.strip() for c in POLL_STATE_COLUMNS.split(","))
_STATE_WIDTH = len(_POLL_STATE_LIST)


def poll_state_query(where: str) -> str:
    """`POLL_STATE_COLUMNS` and the `SUBSCRIPTION_COLUMNS` of the sources `where` picks,
    the source's WebSub subscription beside it (NULLs for none), so that a poll reads both
    at once (`poll_state_from_row` reads a row)."""
    return _POLL_STATE_SELECT + where


ENTRY_COLUMNS = """
    source, entry_id, title, link, summary_html, teaser, author, categories,
    published, updated, first_seen, sort_date, link_key, title_key
"""
# What says which archive days a stored entry touches (`records.EntryMark`).
MARK_COLUMNS = "sort_date, link_key, title_key"
SCHEDULE_COLUMNS = "name, last_polled, next_poll, failures, retry_after, lifetime"
FEED_COLUMNS = "name, title, site_url, feed_id, lifetime"
SUBSCRIPTION_COLUMNS = (
    "source, source_url, hub, topic, token, secret, state, requested, lease_seconds, "
    "lease_expires, last_error"
)
# `poll_state_query` without its condition: made once, a claim reads states every tick.
_POLL_STATE_SELECT = (
    "SELECT "
    + ", ".join(f"sources.{c}" if c.isidentifier() and c != "NULL" else c for c in _POLL_STATE_LIST)
    + ", "
    + ", ".join(f"pushed.{c.strip()}" for c in SUBSCRIPTION_COLUMNS.split(","))
    + " FROM sources LEFT JOIN websub_subscriptions AS pushed"
    + " ON pushed.source = sources.name WHERE "
)
# The columns an entry write sets, in `entry_values`' order.
WRITTEN_COLUMNS = (
    "title",
    "link",
    "summary_html",
    "teaser",
    "author",
    "categories",
    "published",
    "updated",
    "content_hash",
    "link_key",
    "title_key",
)


def upsert_clause(distinct: str) -> str:
    """What an entry insert does when another writer inserted the entry meanwhile (two polls
    of one source racing, a lease that ran out mid-poll): it takes this write's content if
    the signature differs, as when a poll read and wrote in one transaction, the last
    writer's edit kept (and its `stored_in`: the entry changed); `first_seen` and
    `sort_date` stay the first writer's. `distinct`
    is the database's null-safe "differs" (`IS NOT`, `IS DISTINCT FROM`)."""
    changed = " OR ".join(
        f"entries.{c} {distinct} excluded.{c}" for c in ("content_hash", "published", "updated")
    )
    return (
        "ON CONFLICT (source, entry_id) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*WRITTEN_COLUMNS, "stored_in"))
        + f" WHERE {changed}"
    )


def _lifetime(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None


def _required(when: When, value: Any) -> datetime:
    moment = when(value)
    assert moment is not None  # a NOT NULL column
    return moment


def state_from_row(row: Sequence[Any], when: When) -> SourceState:
    """A source's state from a `STATE_COLUMNS` row; `when` reads this database's times."""
    return SourceState(
        name=row[0],
        url=row[1],
        title=row[2],
        site_url=row[3],
        validators=Validators(row[4], row[5]),
        last_polled=when(row[6]),
        last_success=when(row[7]),
        last_outcome=PollOutcome(row[8]) if row[8] is not None else None,
        last_error=row[9],
        failures=row[10],
        entries=row[11],
        next_poll=when(row[12]),
        retry_after=when(row[13]),
        moved_to=row[14],
        disabled=row[15],
        body_hash=row[16],
        lifetime=_lifetime(row[17]),
        remembers=bool(row[18]),
    )


def poll_state_from_row(row: Sequence[Any], when: When) -> SourceState:
    """A `poll_state_query` row: the source's state with its subscription, if any."""
    state = state_from_row(row, when)
    if row[_STATE_WIDTH] is None:
        return state
    return replace(state, subscription=subscription_from_row(row[_STATE_WIDTH:], when))


def entry_from_row(
    row: Sequence[Any], when: When, categories: Callable[[Any], tuple[str, ...]]
) -> StoredEntry:
    """A stored entry from an `ENTRY_COLUMNS` row."""
    return StoredEntry(
        source=row[0],
        entry_id=row[1],
        title=row[2],
        link=row[3],
        summary_html=row[4],
        teaser=row[5],
        author=row[6],
        categories=categories(row[7]),
        published=when(row[8]),
        updated=when(row[9]),
        first_seen=_required(when, row[10]),
        sort_date=_required(when, row[11]),
        story_keys=(row[12], row[13]),
    )


def schedule_from_row(row: Sequence[Any], when: When) -> Schedule:
    """A source's schedule from a `SCHEDULE_COLUMNS` row."""
    return Schedule(row[0], when(row[1]), when(row[2]), row[3], when(row[4]), _lifetime(row[5]))


def mark_from_row(row: Sequence[Any], when: When) -> EntryMark:
    """An entry's place and story keys from a `MARK_COLUMNS` row."""
    return EntryMark(_required(when, row[0]), row[1], row[2])


def feed_from_row(row: Sequence[Any]) -> tuple[str, FeedMeta]:
    """(source name, what its feed said about itself) from a `FEED_COLUMNS` row."""
    return row[0], FeedMeta(row[1], row[2], row[3], _lifetime(row[4]))


def signature_from_row(row: Sequence[Any], when: When) -> tuple[str, Signature]:
    """(entry id, signature) from an (entry_id, content_hash, published, updated) row."""
    return row[0], Signature(row[1], when(row[2]), when(row[3]))


def entry_values(
    write: EntryWrite, stamp: Callable[[datetime | None], Any], categories: Callable[..., Any]
) -> tuple[Any, ...]:
    """The `WRITTEN_COLUMNS` values of an entry write; `stamp` holds a date as this database
    does, cut to the second."""
    e = write.entry
    return (
        e.title, e.link, e.summary_html, e.teaser, e.author, categories(e.categories),
        stamp(e.published), stamp(write.updated), e.content_hash, e.story_link, e.story_title,
    )  # fmt: skip


def items_text(memory: ItemMemory | None) -> str | None:
    """The `items` column's value: JSON, or NULL for nothing remembered."""
    if memory is None:
        return None
    return json.dumps(
        {"frame": memory.frame, "feed": memory.feed, "items": memory.items},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def items_from_text(value: str | None) -> ItemMemory | None:
    """An `items` column's value back; anything unreadable is nothing remembered."""
    if value is None:
        return None
    try:
        data = json.loads(value)
        return ItemMemory(
            str(data["frame"]),
            str(data["feed"]),
            tuple((str(digest), None if entry_id is None else str(entry_id))
                  for digest, entry_id in data["items"]),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return None


def lifetime_seconds(feed: FeedMeta) -> float | None:
    return feed.lifetime.total_seconds() if feed.lifetime else None


def subscription_from_row(row: Sequence[Any], when: When) -> Subscription:
    """A WebSub subscription from a `SUBSCRIPTION_COLUMNS` row."""
    return Subscription(
        source=row[0],
        source_url=row[1],
        hub=row[2],
        topic=row[3],
        token=row[4],
        secret=row[5],
        state=PushState(row[6]),
        requested=_required(when, row[7]),
        lease_seconds=row[8],
        lease_expires=when(row[9]),
        last_error=row[10],
    )


def subscription_values(sub: Subscription, stamp: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The `SUBSCRIPTION_COLUMNS` values of `sub`; `stamp` holds a time as this database does."""
    return (
        sub.source, sub.source_url, sub.hub, sub.topic, sub.token, sub.secret, str(sub.state),
        stamp(sub.requested), sub.lease_seconds,
        None if sub.lease_expires is None else stamp(sub.lease_expires), sub.last_error,
    )  # fmt: skip

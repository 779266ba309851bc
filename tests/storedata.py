"""Sources and entries for the store tests, and the moment they happen at."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.errors import StorageError
from aggregator.settings import SourceConfig
from aggregator.store import StoreAPI
from aggregator.store.postgres import PgStore
from aggregator.store.records import PollOutcome, PollRecord
from aggregator.store.sqlite import SqliteStore
from aggregator.types import ItemMemory, ParsedEntry, ParsedFeed, Validators
from aggregator.update import feed_meta

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)


def source(
    name: str, url: str | None = None, title: str | None = None, timezone: str = "UTC"
) -> SourceConfig:
    return SourceConfig(
        name=name,
        url=url or f"https://{name}.example.org/feed.xml",
        title=title,
        interval=timedelta(minutes=15),
        timezone=timezone,
        tags=(),
    )


def entry(
    entry_id: str,
    title: str = "Title",
    *,
    published: datetime | None = None,
    updated: datetime | None = None,
    summary_html: str = "<p>Summary</p>",
    categories: tuple[str, ...] = (),
) -> ParsedEntry:
    link = f"https://example.org/{entry_id}"
    digest = hashlib.sha256(
        "\x00".join((title, link, summary_html, *categories)).encode()
    ).hexdigest()[:32]
    return ParsedEntry(
        entry_id=entry_id,
        title=title,
        link=link,
        summary_html=summary_html,
        teaser=summary_html.replace("<p>", "").replace("</p>", ""),
        author=None,
        categories=categories,
        published=published,
        updated=updated,
        content_hash=digest,
    )


def remembered(n: int, items: int = 50) -> ItemMemory:
    """What a partial parse of a feed of `items` items remembers (~4 KB for 50)."""
    return ItemMemory(
        "f" * 32,
        "d" * 32,
        tuple((f"{i:032x}", f"tag:example.org,2025:{n}/{i}") for i in range(items)),
    )


def count_entries(store: StoreAPI, source: str | None = None) -> int:
    """Entries stored (of `source`), counted in SQL: the interface keeps no test-only count."""
    sql = "SELECT count(*) FROM entries" + ("" if source is None else " WHERE source = ?")
    args: tuple[str, ...] = () if source is None else (source,)
    if isinstance(store, SqliteStore):
        return int(store._db.execute(sql, args).fetchone()[0])
    assert isinstance(store, PgStore)
    with store._connection() as conn:
        row = conn.execute(sql.replace("?", "%s"), args).fetchone()
    assert row is not None
    return int(row[0])


def succeeded(
    store: StoreAPI,
    name: str,
    validators: Validators,
    now: datetime,
    outcome: str,
    *,
    feed: ParsedFeed | None = None,
    next_poll: datetime | None = None,
    url: str | None = None,
    moved_to: str | None = None,
    body_hash: str | None = None,
) -> None:
    """Record a 200 or 304 as the poll path does (an unparsed one keeps tombstones alive)."""
    store.record_poll(
        PollRecord(
            name, now, PollOutcome(outcome), url=url, next_poll=next_poll, validators=validators,
            moved_to=moved_to, body_hash=body_hash,
            feed=feed_meta(feed) if feed is not None else None, keep_tombstones=feed is None,
        )
    )  # fmt: skip


def failed(
    store: StoreAPI,
    name: str,
    error: str,
    now: datetime,
    next_poll: datetime | None = None,
    *,
    url: str | None = None,
    retry_after: datetime | None = None,
) -> None:
    """Record a failed poll."""
    store.record_poll(
        PollRecord(
            name, now, PollOutcome.FAILED, url=url, next_poll=next_poll, error=error,
            retry_after=retry_after,
        )
    )  # fmt: skip


def disabled(
    store: StoreAPI, name: str, reason: str, now: datetime, *, url: str | None = None
) -> None:
    """Record a 410 Gone: the source is not polled until its URL changes."""
    store.record_poll(PollRecord(name, now, PollOutcome.DISABLED, url=url, error=reason))


@dataclass
class EntryRefusal:
    """A SQLite store that, while `refusing`, refuses every poll record carrying entries
    (a database rejecting one source's rows); a failure record is still written.
    `attempts`: the sources whose records were refused."""

    message: str
    refusing: bool = True
    attempts: list[str] = field(default_factory=list)


def refuse_entry_writes(monkeypatch: pytest.MonkeyPatch, message: str) -> EntryRefusal:
    """Make `SqliteStore.record_poll` refuse the records that carry a feed's entries."""
    refusal = EntryRefusal(message)
    original = SqliteStore.record_poll

    def record_poll(self: SqliteStore, record: PollRecord) -> None:
        if refusal.refusing and record.entries is not None:
            refusal.attempts.append(record.name)
            raise StorageError(refusal.message)
        original(self, record)

    monkeypatch.setattr(SqliteStore, "record_poll", record_poll)
    return refusal


_CREATED = re.compile(r"CREATE\s+(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_ADDED = re.compile(r"ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.I)
_RENAMED = re.compile(r"ALTER\s+TABLE\s+(\w+)\s+RENAME\s+COLUMN\s+(\w+)\s+TO\s+(\w+)", re.I)


def undo_migrations(migrations: Sequence[str]) -> list[str]:
    """Statements that take back what `migrations` created (tables, indexes, added columns)
    or renamed (columns), newest first: a store set back to an older version, as a store
    that old would be, so a test can run a migration again without the later ones failing
    on what already exists."""
    undo: list[str] = []
    for sql in migrations:
        found = [
            (m.start(), f"DROP {m[1].upper()} IF EXISTS {m[2]}") for m in _CREATED.finditer(sql)
        ]
        found += [
            (m.start(), f"ALTER TABLE {m[1]} DROP COLUMN {m[2]}") for m in _ADDED.finditer(sql)
        ]
        found += [
            (m.start(), f"ALTER TABLE {m[1]} RENAME COLUMN {m[3]} TO {m[2]}")
            for m in _RENAMED.finditer(sql)
        ]
        undo = [statement for _, statement in sorted(found, reverse=True)] + undo
    return undo

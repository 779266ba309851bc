"""Merge stored entries into the published timeline: ordered, windowed, with stable ids.

Pure: a function of the entries, the sources and `now`. The order key (`sort_date`) is
decided once, when an entry is first seen (`order_date`), so a later edit cannot move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

# A date this far ahead of our clock is the publisher's clock or time zone being wrong.
CLOCK_SKEW = timedelta(minutes=10)
# Fixed forever: changing it would give every published item a new id.
_ID_NAMESPACE = uuid.UUID("6f1d3c1e-6c55-4a8e-9d0b-2f4f7f6a9a10")


def order_date(
    published: datetime | None, updated: datetime | None, first_seen: datetime
) -> datetime:
    """Where an entry sits in the timeline: its own date, but never in the future."""
    own = published or updated or first_seen
    return first_seen if own > first_seen + CLOCK_SKEW else own


def public_id(source: str, entry_id: str) -> str:
    """The id readers see: the same for the same (source, entry id), in every run."""
    return uuid.uuid5(_ID_NAMESPACE, f"{source}\x00{entry_id}").urn


def source_id(source: str) -> str:
    """A permanent URN for a source that has no public feed URL (a local file)."""
    return uuid.uuid5(_ID_NAMESPACE, f"source\x00{source}").urn


def _newest_first(entry: StoredEntry) -> tuple[float, str, str]:
    return (-entry.sort_date.timestamp(), entry.source, entry.entry_id)


def build_timeline(
    entries: Iterable[StoredEntry],
    sources: Mapping[str, SourceCredit],
    *,
    now: datetime,
    max_items: int,
    max_age: timedelta,
) -> Timeline:
    """Newest first, only configured sources, nothing older than `max_age`, at most `max_items`.

    Ties are broken by source and entry id so the order, and so the published bytes, never
    depend on the order the store returned rows in.
    """
    oldest = now - max_age
    kept = sorted(
        (e for e in entries if e.source in sources and e.sort_date >= oldest),
        key=_newest_first,
    )
    unique: dict[tuple[str, str], StoredEntry] = {}
    for entry in kept:
        unique.setdefault((entry.source, entry.entry_id), entry)
        if len(unique) == max_items:
            break
    items = tuple(
        TimelineItem(
            uid=public_id(e.source, e.entry_id),
            entry=e,
            source=sources[e.source],
            published=e.sort_date,
            updated=max(e.sort_date, e.updated or e.sort_date),
        )
        for e in unique.values()
    )
    updated = max((item.updated for item in items), default=None)
    return Timeline(items=items, updated=updated)

"""Merge stored entries into the published timeline: ordered, windowed, with stable ids.

Pure: a function of the entries, the sources and `now`. The order key (`sort_date`) is
decided once, when an entry is first seen (`order_date`), so a later edit cannot move it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from aggregator.filters import Filters
from aggregator.text import link_key, title_key
from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

# A date this far ahead of our clock is the publisher's clock or time zone being wrong.
CLOCK_SKEW = timedelta(minutes=10)
# Two sources' items with the same (long enough) title this close together are one story.
SAME_TITLE_WINDOW = timedelta(days=1)
MIN_TITLE_KEY = 20
NO_FILTERS = Filters()
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
    filters: Filters = NO_FILTERS,
    source_filters: Mapping[str, Filters] | None = None,
    earlier: Iterable[StoredEntry] = (),
) -> Timeline:
    """Newest first, only configured sources, nothing older than `max_age`, at most `max_items`,
    each story once.

    The same story carried by several copies (same link once normalized, or the same title
    within a day from another source) is one item crediting every source; the copy seen first
    is the one published, so its id never changes when another source picks the story up.
    A story whose first copy cannot be published (past `max_age`: pass its `earlier` copies;
    or filtered out) is not published at all, rather than again under a later copy's id.
    Ties are broken by source and entry id, so neither the order nor the published bytes
    depend on the order the store returned rows in.
    """
    oldest = now - max_age
    per_source = source_filters or {}
    known: dict[tuple[str, str], StoredEntry] = {}
    for e in (*entries, *earlier):
        seen = known.get((e.source, e.entry_id))
        if e.source in sources and (seen is None or e.sort_date > seen.sort_date):
            known[(e.source, e.entry_id)] = e

    def publishable(e: StoredEntry) -> bool:
        return (
            e.sort_date >= oldest
            and filters.allows(e.title, e.teaser)
            and per_source.get(e.source, NO_FILTERS).allows(e.title, e.teaser)
        )

    stories = [
        [copy for copy in story if publishable(copy)]
        for story in _group_stories(known.values())
        if publishable(story[0])
    ]
    stories.sort(key=lambda story: _newest_first(story[0]))
    items = tuple(_item(story, sources) for story in stories[:max_items])
    updated = max((item.updated for item in items), default=None)
    return Timeline(items=items, updated=updated)


def _group_stories(entries: Iterable[StoredEntry]) -> list[list[StoredEntry]]:
    """Entries grouped into stories; each group's first entry is the copy seen first."""
    stories: list[list[StoredEntry]] = []
    by_link: dict[str, list[int]] = {}
    by_title: dict[str, list[int]] = {}
    for entry in sorted(entries, key=lambda e: (e.first_seen, e.sort_date, e.source, e.entry_id)):
        link = link_key(entry.link) if entry.link else None
        title = title_key(entry.title)
        if len(title) < MIN_TITLE_KEY:
            title = ""  # too short to be sure two sources mean the same story
        found = None
        if link is not None:
            # The same link is the same story across sources. Within one source it takes the
            # same title as well: a feed that changed its guids must not publish everything
            # twice, but one whose items all link to its home page must not collapse.
            found = next(
                (
                    i
                    for i in by_link.get(link, ())
                    if all(
                        e.source != entry.source or title_key(e.title) == title_key(entry.title)
                        for e in stories[i]
                    )
                ),
                None,
            )
        if found is None and title:
            # The same headline is only taken for the same story across sources: one source
            # may well repeat a title ("Morning briefing") for different stories.
            found = next(
                (
                    i
                    for i in by_title.get(title, ())
                    if abs(stories[i][0].sort_date - entry.sort_date) <= SAME_TITLE_WINDOW
                    and all(e.source != entry.source for e in stories[i])
                ),
                None,
            )
        if found is not None:
            stories[found].append(entry)
        else:
            found = len(stories)
            stories.append([entry])
        if link is not None and found not in by_link.setdefault(link, []):
            by_link[link].append(found)
        if title and found not in by_title.setdefault(title, []):
            by_title[title].append(found)
    return stories


def _item(story: list[StoredEntry], sources: Mapping[str, SourceCredit]) -> TimelineItem:
    first = story[0]
    return TimelineItem(
        uid=public_id(first.source, first.entry_id),
        entry=first,
        source=sources[first.source],
        published=first.sort_date,
        updated=max(first.sort_date, first.updated or first.sort_date),
        also=tuple(
            sources[name]
            for name in dict.fromkeys(e.source for e in story[1:])
            if name != first.source
        ),
    )

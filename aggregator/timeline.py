"""Merge stored entries into the published timeline: ordered, windowed, with stable ids.

Pure: a function of the entries, the sources and `now`. The order key (`sort_date`) is
decided once, when an entry is first seen (`order_date`), so a later edit cannot move it.
"""

from __future__ import annotations

import collections
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from aggregator.filters import Filters
from aggregator.text import link_key, make_teaser, title_key
from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

# A date this far ahead of our clock is the publisher's clock or time zone being wrong.
CLOCK_SKEW = timedelta(minutes=10)
# Two sources' items with the same (long enough) title this close together are one story.
SAME_TITLE_WINDOW = timedelta(days=1)
MIN_TITLE_KEY = 20
# A headline is compared with at most the latest this many stories bearing it.
MAX_STORIES_PER_HEADLINE = 32
NO_FILTERS = Filters()
# `[publish] teaser_length`'s default: a teaser of this many grapheme clusters.
DEFAULT_TEASER_LENGTH = 200
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


@dataclass(frozen=True)
class Selection:
    """What a timeline publishes: at most `max_items` stories of the last `max_age`, kept by
    `filters` (all sources), `source_filters` (by source name) and `channel_filters` (a
    channel's own), with teasers cut to `teaser_length`. From `[publish]`, each source's
    filters and the channel's (`publications.publications_of`)."""

    max_items: int
    max_age: timedelta
    filters: Filters = NO_FILTERS
    source_filters: Mapping[str, Filters] = field(default_factory=dict)
    teaser_length: int = DEFAULT_TEASER_LENGTH
    channel_filters: Filters = NO_FILTERS


def _newest_first(entry: StoredEntry) -> tuple[float, str, str]:
    return (-entry.sort_date.timestamp(), entry.source, entry.entry_id)


def build_timeline(
    entries: Iterable[StoredEntry],
    sources: Mapping[str, SourceCredit],
    *,
    now: datetime,
    selection: Selection,
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

    The store keeps each entry's text uncut; here it becomes the teaser, cut to the
    selection's `teaser_length`, so a changed length applies at the next publish, and filters
    and every output see the same teaser. Only what needs it is cut: the published items, and the
    entries of sources with filters.
    """
    oldest = now - selection.max_age
    filters = selection.filters
    per_source = selection.source_filters
    channel = selection.channel_filters
    known: dict[tuple[str, str], StoredEntry] = {}
    for e in (*entries, *earlier):
        seen = known.get((e.source, e.entry_id))
        if e.source in sources and (seen is None or e.sort_date > seen.sort_date):
            known[(e.source, e.entry_id)] = e

    teaser = _teasers(selection.teaser_length)

    def publishable(e: StoredEntry) -> bool:
        if e.sort_date < oldest:
            return False
        own = per_source.get(e.source, NO_FILTERS)
        if own == NO_FILTERS and filters == NO_FILTERS and channel == NO_FILTERS:
            return True
        return all(f.allows(e.title, teaser(e)) for f in (filters, own, channel))

    stories = [
        [copy for copy in story if publishable(copy)]
        for story in _group_stories(known.values())
        if publishable(story[0])
    ]
    stories.sort(key=lambda story: _newest_first(story[0]))
    items = tuple(_item(story, sources, teaser) for story in stories[: selection.max_items])
    updated = max((item.updated for item in items), default=None)
    return Timeline(items=items, updated=updated)


class _Story:
    """A story being grouped: its copies, and what the matching needs to know of them."""

    __slots__ = ("copies", "links", "titles")

    def __init__(self, first: StoredEntry, title: str) -> None:
        self.copies = [first]
        # source → the title key of its copies here. One key per source, always: a source's
        # copy joins by link only with the same title, and by title only where it has none.
        self.titles = {first.source: title}
        self.links: dict[str, int] = {}  # link key → this story's place in that link's list


class _LinkStories:
    """The stories carrying one link, in the order they took it, indexed so that finding
    the first one a (source, title) may join costs no scan over the others.

    A copy may join a story where its source has no copy yet, or has copies with the same
    title. `free[source]` only moves forward (a story never loses a source) and
    `titled[(source, title)]` is the first place whose copies of that source bear that title:
    a feed whose thousands of items share one link is then as cheap as any other.
    """

    __slots__ = ("free", "stories", "titled")

    def __init__(self) -> None:
        self.stories: list[int] = []
        self.free: dict[str, int] = {}
        self.titled: dict[tuple[str, str], int] = {}

    def first_joinable(self, stories: list[_Story], source: str, title: str) -> int | None:
        place = self.free.get(source, 0)
        while place < len(self.stories) and source in stories[self.stories[place]].titles:
            place += 1
        self.free[source] = place
        places = [p for p in (place, self.titled.get((source, title))) if p is not None]
        best = min(places)
        return self.stories[best] if best < len(self.stories) else None

    def note(self, place: int, source: str, title: str) -> None:
        """The story at `place` has (now) copies of `source` titled `title`."""
        if place < self.titled.get((source, title), place + 1):
            self.titled[(source, title)] = place


def _group_stories(entries: Iterable[StoredEntry]) -> list[list[StoredEntry]]:
    """Entries grouped into stories; each group's first entry is the copy seen first.

    Linear in the entries (each one's keys computed once, each match a dict look-up), so a
    feed of thousands of copies of one story costs what thousands of stories cost.
    """
    grouping = _Grouping()
    for entry in sorted(entries, key=lambda e: (e.first_seen, e.sort_date, e.source, e.entry_id)):
        grouping.place(entry)
    return [story.copies for story in grouping.stories]


class _Grouping:
    """Stories so far, indexed by their links and headlines; entries come in the order they
    were first seen."""

    def __init__(self) -> None:
        self.stories: list[_Story] = []
        self.by_link: dict[str, _LinkStories] = {}
        self.by_title: dict[str, collections.deque[int]] = {}

    def place(self, entry: StoredEntry) -> None:
        """Add `entry` to the story it is a copy of, or as a story of its own."""
        if entry.story_keys is not None:  # as stored: no URL parsing per publish
            link, title = entry.story_keys[0], entry.story_keys[1] or ""
        else:
            link = link_key(entry.link) if entry.link else None
            title = title_key(entry.title)
        # too short to be sure two sources mean the same story
        headline = title if len(title) >= MIN_TITLE_KEY else ""
        found = self._by_link(link, entry.source, title)
        if found is None and headline:
            found = self._by_headline(headline, entry)
        found = self._join(found, entry, title)
        if link is not None and link not in self.stories[found].links:
            self._index_link(found, link)
        if headline:
            candidates = self.by_title.setdefault(
                headline, collections.deque(maxlen=MAX_STORIES_PER_HEADLINE)
            )
            if found not in candidates:
                candidates.append(found)  # the oldest candidate makes room

    def _by_link(self, link: str | None, source: str, title: str) -> int | None:
        """The same link is the same story across sources. Within one source it takes the
        same title as well: a feed that changed its guids must not publish everything twice,
        but one whose items all link to its home page must not collapse."""
        if link is None or link not in self.by_link:
            return None
        return self.by_link[link].first_joinable(self.stories, source, title)

    def _by_headline(self, headline: str, entry: StoredEntry) -> int | None:
        """The same headline is only taken for the same story across sources: one source
        may well repeat a title ("Morning briefing") for different stories. Only the latest
        few stories of a headline are candidates (entries come in the order they were first
        seen, so a daily column's day-40 copy still finds day 40): looking through all of a
        headline's stories would be quadratic."""
        return next(
            (
                i
                for i in self.by_title.get(headline, ())
                if abs(self.stories[i].copies[0].sort_date - entry.sort_date) <= SAME_TITLE_WINDOW
                and entry.source not in self.stories[i].titles
            ),
            None,
        )

    def _join(self, found: int | None, entry: StoredEntry, title: str) -> int:
        """Add `entry` to story `found`, or start a story with it; the story's place."""
        if found is None:
            self.stories.append(_Story(entry, title))
            return len(self.stories) - 1
        story = self.stories[found]
        story.copies.append(entry)
        if entry.source not in story.titles:
            story.titles[entry.source] = title
            for other, place in story.links.items():
                self.by_link[other].note(place, entry.source, title)
        return found

    def _index_link(self, found: int, link: str) -> None:
        """Story `found` carries `link` from now on."""
        story = self.stories[found]
        index = self.by_link.setdefault(link, _LinkStories())
        story.links[link] = place = len(index.stories)
        index.stories.append(found)
        for source, its_title in story.titles.items():
            index.note(place, source, its_title)


def _teasers(length: int) -> Callable[[StoredEntry], str]:
    """The teaser of an entry, cut from its stored text once however often it is asked for."""
    cut: dict[tuple[str, str], str] = {}

    def teaser(entry: StoredEntry) -> str:
        key = (entry.source, entry.entry_id)
        if key not in cut:
            cut[key] = cut_teaser(entry.teaser, length)
        return cut[key]

    return teaser


# Teasers cut by earlier publishes, by (digest of the text, length). A daemon publishes the
# same items again and again, and one cut costs up to a third of a millisecond (grapheme
# segmentation of non-Latin text): 200 items made a publish 30-50 ms slower. The digest,
# not the text, is kept; the cache holds at most this many teasers and this many code points
# in all (a teaser_length of 2,000 makes teasers of up to 8,000 code points each).
_CUT_CACHE_SIZE = 4096
_CUT_CACHE_CODE_POINTS = 2_000_000
_cuts: dict[tuple[bytes, int], str] = {}
_cut_code_points = [0]  # in `_cuts`, all told


def cut_teaser(text: str, length: int) -> str:
    """`make_teaser(text, length)`, remembered: the same text and length, the same teaser."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    teaser = _cuts.get((digest, length))
    if teaser is None:
        teaser = make_teaser(text, length)
        if (
            len(_cuts) >= _CUT_CACHE_SIZE
            or _cut_code_points[0] + len(teaser) > _CUT_CACHE_CODE_POINTS
        ):
            _cuts.clear()  # simpler than an LRU, and a publish refills what it needs
            _cut_code_points[0] = 0
        _cuts[(digest, length)] = teaser
        _cut_code_points[0] += len(teaser)
    return teaser


def _item(
    story: list[StoredEntry],
    sources: Mapping[str, SourceCredit],
    teaser: Callable[[StoredEntry], str],
) -> TimelineItem:
    first = story[0]
    return TimelineItem(
        uid=public_id(first.source, first.entry_id),
        entry=replace(first, teaser=teaser(first)),
        source=sources[first.source],
        published=first.sort_date,
        updated=max(first.sort_date, first.updated or first.sort_date),
        also=tuple(
            sources[name]
            for name in dict.fromkeys(e.source for e in story[1:])
            if name != first.source
        ),
    )

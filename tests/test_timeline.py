"""aggregator.timeline: merge order, windowing, de-duplication and permanent public ids."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.filters import FilterPattern, Filters
from aggregator.text import link_key, title_key
from aggregator.timeline import (
    CLOCK_SKEW,
    MIN_TITLE_KEY,
    Selection,
    build_timeline,
    order_date,
    public_id,
    source_id,
)
from aggregator.types import SourceCredit, StoredEntry, Timeline

NOW = datetime(2025, 7, 12, 10, 0, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=30)

SOURCES = {
    name: SourceCredit(name=name, title=f"Source {name}", feed_url=f"https://{name}.example/feed")
    for name in ("alpha", "beta", "gamma")
}
# "delta" has entries in the store but is no longer configured.
SOURCE_NAMES = (*SOURCES, "delta")

FAST = settings(max_examples=200, deadline=None)

_EARLIEST = datetime(2025, 5, 1, tzinfo=UTC)
# Aware UTC dates from ~70 days before NOW to a day after it, to the second; a few fixed
# ones come up often so equal dates (ties) are common.
dates = st.one_of(
    st.integers(min_value=0, max_value=73 * 86400).map(lambda s: _EARLIEST + timedelta(seconds=s)),
    st.sampled_from([NOW, NOW - MAX_AGE, NOW - timedelta(hours=1), NOW + timedelta(hours=2)]),
)
entry_ids = st.one_of(
    st.sampled_from(["1", "2", "3", "https://x.example/post/1", "tag:x.example,2025:1"]),
    st.text(min_size=1, max_size=4),
)


@st.composite
def stored_entries(draw: st.DrawFn) -> StoredEntry:
    sort_date = draw(dates)
    published = draw(st.none() | dates)
    updated = draw(st.none() | dates)
    return StoredEntry(
        source=draw(st.sampled_from(SOURCE_NAMES)),
        entry_id=draw(entry_ids),
        title=draw(st.sampled_from(["", "t", "Title"])),
        link=None,
        summary_html="",
        teaser="",
        author=None,
        categories=(),
        published=published,
        updated=updated,
        first_seen=sort_date,
        sort_date=sort_date,
    )


def key(entry: StoredEntry) -> tuple[str, str]:
    return (entry.source, entry.entry_id)


# Any rows, duplicates of (source, entry id) included.
entry_lists = st.lists(stored_entries(), max_size=30)
# What the store returns: (source, entry id) is its primary key.
store_rows = st.lists(stored_entries(), max_size=30, unique_by=key)
max_items = st.integers(min_value=1, max_value=30)


def build(entries, limit, *, now=NOW, max_age=MAX_AGE, sources=None) -> Timeline:
    return build_timeline(
        entries,
        SOURCES if sources is None else sources,
        now=now,
        selection=Selection(max_items=limit, max_age=max_age),
    )


@FAST
@given(entry_lists, max_items)
def test_newest_first_by_sort_date(entries, limit):
    items = build(entries, limit).items
    published = [item.published for item in items]
    assert published == sorted(published, reverse=True)
    assert all(item.published == item.entry.sort_date for item in items)


@FAST
@given(entry_lists, max_items)
def test_source_and_entry_id_unique_and_uid_is_public_id(entries, limit):
    items = build(entries, limit).items
    keys = [key(item.entry) for item in items]
    assert len(keys) == len(set(keys))
    for item in items:
        assert item.uid == public_id(item.entry.source, item.entry.entry_id)
    assert len({item.uid for item in items}) == len(items)
    # Stable: the same entries give the same ids on every build.
    assert [item.uid for item in build(entries, limit).items] == [item.uid for item in items]


@FAST
@given(entry_lists, max_items)
def test_at_most_max_items(entries, limit):
    assert len(build(entries, limit).items) <= limit


@FAST
@given(entry_lists, max_items, st.integers(min_value=0, max_value=60))
def test_nothing_older_than_max_age(entries, limit, days):
    age = timedelta(days=days)
    for item in build(entries, limit, max_age=age).items:
        assert item.published >= NOW - age


@FAST
@given(entry_lists, max_items, st.sets(st.sampled_from(SOURCE_NAMES)))
def test_only_configured_sources(entries, limit, configured):
    sources = {name: SourceCredit(name, name, f"https://{name}.example/") for name in configured}
    for item in build(entries, limit, sources=sources).items:
        assert item.entry.source in configured
        assert item.source == sources[item.entry.source]


@FAST
@given(entry_lists, max_items)
def test_matches_reference_model(entries, limit):
    """The timeline is the `limit` newest eligible entries, newest occurrence of each key."""
    oldest = NOW - MAX_AGE
    newest: dict[tuple[str, str], datetime] = {}
    for e in entries:
        if e.source in SOURCES and e.sort_date >= oldest:
            newest[key(e)] = max(newest.get(key(e), e.sort_date), e.sort_date)
    expected = sorted(newest.items(), key=lambda kv: (-kv[1].timestamp(), kv[0]))[:limit]
    got = [(key(item.entry), item.published) for item in build(entries, limit).items]
    assert got == expected


@FAST
@given(store_rows, max_items, st.randoms(use_true_random=False))
def test_order_insensitive(entries, limit, rnd):
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert build(shuffled, limit) == build(entries, limit)
    assert build(reversed(entries), limit) == build(entries, limit)  # any iterable will do


@FAST
@given(entry_lists, max_items)
def test_rebuilding_from_own_entries_is_identity(entries, limit):
    timeline = build(entries, limit)
    again = build([item.entry for item in timeline.items], limit)
    assert again == timeline


@FAST
@given(entry_lists, max_items)
def test_timeline_updated_is_max_item_updated(entries, limit):
    timeline = build(entries, limit)
    if not timeline.items:
        assert timeline.updated is None
    else:
        assert timeline.updated == max(item.updated for item in timeline.items)
    for item in timeline.items:
        # The entry's own updated date, but never before the item's place in the timeline.
        # (A future `updated` never reaches the timeline: the store drops it.)
        assert item.updated == max(item.published, item.entry.updated or item.published)


# Concrete cases


def _entry(source: str, entry_id: str, sort_date: datetime, **changes) -> StoredEntry:
    entry = StoredEntry(
        source=source,
        entry_id=entry_id,
        title=entry_id,
        link=None,
        summary_html="",
        teaser="",
        author=None,
        categories=(),
        published=sort_date,
        updated=None,
        first_seen=sort_date,
        sort_date=sort_date,
    )
    return replace(entry, **changes)


def test_empty_timeline():
    timeline = build([], 10)
    assert timeline == Timeline()
    assert timeline.items == ()
    assert timeline.updated is None


def test_ties_broken_by_source_then_entry_id():
    when = NOW - timedelta(hours=1)
    rows = [_entry("gamma", "1", when), _entry("alpha", "2", when), _entry("alpha", "1", when)]
    keys = [key(item.entry) for item in build(rows, 10).items]
    assert keys == [("alpha", "1"), ("alpha", "2"), ("gamma", "1")]


def test_max_items_keeps_the_newest():
    rows = [_entry("alpha", str(i), NOW - timedelta(hours=i)) for i in range(10)]
    random.Random(3).shuffle(rows)
    ids = [item.entry.entry_id for item in build(rows, 3).items]
    assert ids == ["0", "1", "2"]


def test_max_age_boundary_is_inclusive():
    rows = [
        _entry("alpha", "edge", NOW - MAX_AGE),
        _entry("alpha", "old", NOW - MAX_AGE - timedelta(seconds=1)),
    ]
    assert [item.entry.entry_id for item in build(rows, 10).items] == ["edge"]


def test_item_updated_floored_at_published():
    published = NOW - timedelta(days=1)
    old_edit = _entry("alpha", "o", published, updated=published - timedelta(days=2))
    edited = _entry("alpha", "e", published, updated=NOW - timedelta(hours=1))
    items = {i.entry.entry_id: i for i in build([old_edit, edited], 10).items}
    assert items["o"].updated == published
    assert items["e"].updated == NOW - timedelta(hours=1)
    assert build([old_edit, edited], 10).updated == NOW - timedelta(hours=1)


# order_date

FIRST_SEEN = datetime(2025, 7, 12, 9, 0, tzinfo=UTC)


def test_order_date_published_wins():
    published = FIRST_SEEN - timedelta(days=2)
    updated = FIRST_SEEN - timedelta(days=1)
    assert order_date(published, updated, FIRST_SEEN) == published


def test_order_date_updated_when_no_published():
    updated = FIRST_SEEN - timedelta(days=1)
    assert order_date(None, updated, FIRST_SEEN) == updated


def test_order_date_first_seen_when_no_dates():
    assert order_date(None, None, FIRST_SEEN) == FIRST_SEEN


@pytest.mark.parametrize(
    "ahead",
    [CLOCK_SKEW + timedelta(seconds=1), timedelta(hours=5, minutes=30), timedelta(days=400)],
)
def test_order_date_future_beyond_skew_is_first_seen(ahead):
    assert order_date(FIRST_SEEN + ahead, None, FIRST_SEEN) == FIRST_SEEN
    assert order_date(None, FIRST_SEEN + ahead, FIRST_SEEN) == FIRST_SEEN


@pytest.mark.parametrize("ahead", [timedelta(0), timedelta(minutes=1), timedelta(minutes=9)])
def test_order_date_future_within_skew_is_kept(ahead):
    assert order_date(FIRST_SEEN + ahead, None, FIRST_SEEN) == FIRST_SEEN + ahead
    assert order_date(None, FIRST_SEEN + ahead, FIRST_SEEN) == FIRST_SEEN + ahead


def test_order_date_exactly_at_skew_is_kept():
    assert order_date(FIRST_SEEN + CLOCK_SKEW, None, FIRST_SEEN) == FIRST_SEEN + CLOCK_SKEW


def test_order_date_old_dates_kept():
    old = FIRST_SEEN - timedelta(days=3650)
    assert order_date(old, None, FIRST_SEEN) == old


@FAST
@given(st.none() | dates, st.none() | dates, dates)
def test_order_date_never_beyond_skew(published, updated, first_seen):
    result = order_date(published, updated, first_seen)
    assert result <= first_seen + CLOCK_SKEW
    assert result in {published, updated, first_seen}


# public_id / source_id


def _uuid_of(urn: str) -> uuid.UUID:
    assert urn.startswith("urn:uuid:")
    value = uuid.UUID(urn.removeprefix("urn:uuid:"))
    assert str(value) == urn.removeprefix("urn:uuid:")
    return value


def test_public_id_is_urn_uuid5():
    value = _uuid_of(public_id("alpha", "https://x.example/post/1"))
    assert value.version == 5
    assert value.variant == uuid.RFC_4122


def test_public_id_is_stable_forever():
    # Pinned: a change here gives every published item a new id in every reader.
    assert public_id("alpha", "1") == "urn:uuid:2e690a04-ecc5-51b7-b47e-336323f9f4ab"
    assert (
        public_id("alpha", "https://x.example/post/1")
        == "urn:uuid:3075115e-9c1b-5cbd-a337-102187ff15d4"
    )
    assert source_id("alpha") == "urn:uuid:fead179d-ce6f-5fe5-a96d-efe8b031f095"


def test_public_id_differs_between_sources():
    assert public_id("alpha", "1") != public_id("beta", "1")
    assert public_id("alpha", "1") != public_id("alpha", "2")


@FAST
@given(st.sampled_from(SOURCE_NAMES), st.sampled_from(SOURCE_NAMES), st.text(min_size=1), st.text())
def test_public_id_properties(source_a, source_b, entry_id, other_id):
    urn = public_id(source_a, entry_id)
    _uuid_of(urn)
    assert public_id(source_a, entry_id) == urn
    if source_a != source_b:
        assert public_id(source_b, entry_id) != urn
    if other_id != entry_id:
        assert public_id(source_a, other_id) != urn


def test_source_id_is_urn_uuid_and_not_a_public_id():
    value = _uuid_of(source_id("alpha"))
    assert value.version == 5
    assert source_id("alpha") == source_id("alpha")
    assert source_id("alpha") != source_id("beta")
    assert source_id("alpha") != public_id("alpha", "")


# Cross-source duplicates: links from a small pool, so stories repeat across sources.

LINKS = (
    "https://news.example.org/a",
    "http://NEWS.example.org/a/?utm_source=x",
    "https://news.example.org/b",
    "https://news.example.org/b?fbclid=1",
    "https://other.example.org/c",
)


@st.composite
def story_entries(draw: st.DrawFn) -> StoredEntry:
    first_seen = draw(dates)
    return StoredEntry(
        source=draw(st.sampled_from(SOURCE_NAMES)),
        entry_id=draw(entry_ids),
        title=draw(
            st.sampled_from(["A long enough headline here", "Another long headline, yes", "x"])
        ),
        link=draw(st.sampled_from(LINKS) | st.none()),
        summary_html="",
        teaser="",
        author=None,
        categories=(),
        published=None,
        updated=None,
        first_seen=first_seen,
        sort_date=draw(st.sampled_from([first_seen, first_seen - timedelta(hours=3)])),
    )


story_rows = st.lists(story_entries(), max_size=30, unique_by=key)


def _source_items_would_merge(entries: list[StoredEntry]) -> bool:
    """Whether the entries that share a link (or a long headline, across sources) chain
    two items of one source with different headlines together."""
    parent = list(range(len(entries)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, a in enumerate(entries):
        for j in range(i):
            b = entries[j]
            same_link = a.link and b.link and link_key(a.link) == link_key(b.link)
            same_title = (
                a.source != b.source
                and len(title_key(a.title)) >= MIN_TITLE_KEY
                and title_key(a.title) == title_key(b.title)
            )
            if same_link or same_title:
                parent[root(i)] = root(j)
    seen: dict[tuple[int, str], str] = {}
    for i, e in enumerate(entries):
        if seen.setdefault((root(i), e.source), title_key(e.title)) != title_key(e.title):
            return True
    return False


@FAST
@given(story_rows, max_items, st.randoms(use_true_random=False))
def test_each_story_once_whatever_the_order(entries, limit, rnd):
    timeline = build(entries, limit)
    # One item per normalized link, unless merging would have to put two of one source's
    # items, under different headlines, into one story: a source's own items are never
    # merged (losing one is worse than two items on one link).
    if not _source_items_would_merge(entries):
        links = [link_key(i.entry.link) for i in timeline.items if i.entry.link]
        assert len(links) == len(set(links))
    for item in timeline.items:
        names = [s.name for s in item.sources]
        assert len(names) == len(set(names))  # each source credited once
        assert item.published == item.entry.sort_date
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert build(shuffled, limit) == timeline
    published = [i.published for i in timeline.items]
    assert published == sorted(published, reverse=True)


@FAST
@given(story_rows)
def test_the_copy_seen_first_keeps_its_id_when_others_arrive(entries):
    """Adding later-seen copies of stories never changes an already published id."""
    if not entries:
        return
    cutoff = sorted(e.first_seen for e in entries)[len(entries) // 2]
    early = [e for e in entries if e.first_seen <= cutoff]
    before = {i.uid for i in build(early, 100).items}
    after = {i.uid for i in build(entries, 100).items}
    assert before <= after


def _copy(
    source: str, entry_id: str, day: int, link: str = "https://n.example/story"
) -> StoredEntry:
    moment = NOW - timedelta(days=40) + timedelta(days=day)
    return StoredEntry(
        source=source,
        entry_id=entry_id,
        title=f"The same story told by {source}",
        link=link,
        summary_html="",
        teaser="",
        author=None,
        categories=(),
        published=moment,
        updated=None,
        first_seen=moment,
        sort_date=moment,
    )


def test_a_story_is_not_republished_under_a_later_copy_when_its_first_leaves_the_window():
    first, repost = _copy("alpha", "a1", day=0), _copy("beta", "b1", day=2)
    # Day 5: both in the window: alpha's copy, crediting beta.
    early = build_timeline(
        [first, repost],
        SOURCES,
        now=first.sort_date + timedelta(days=5),
        selection=Selection(max_items=10, max_age=timedelta(days=30)),
    )
    assert [(i.entry.source, [s.name for s in i.also]) for i in early.items] == [
        ("alpha", ["beta"])
    ]
    # Day 31: alpha's copy has aged out; beta's is still in the window but is not a new item.
    late_now = first.sort_date + timedelta(days=31)
    late = build_timeline(
        [repost],
        SOURCES,
        now=late_now,
        earlier=[first],
        selection=Selection(max_items=10, max_age=timedelta(days=30)),
    )
    assert late.items == ()


def test_a_filtered_first_copy_keeps_the_story_out():
    first, repost = _copy("alpha", "a1", day=0), _copy("beta", "b1", day=2)
    only_beta = {"alpha": Filters(exclude=(FilterPattern("story"),))}
    timeline = build_timeline(
        [first, repost],
        SOURCES,
        now=first.sort_date + timedelta(days=5),
        selection=Selection(max_items=10, max_age=timedelta(days=30), source_filters=only_beta),
    )
    assert timeline.items == ()


def test_one_sources_items_sharing_its_home_page_link_stay_distinct():
    items = [
        replace(_copy("alpha", f"a{n}", day=n, link="https://n.example/"), title=f"Story {n} x" * 3)
        for n in range(5)
    ]
    timeline = build_timeline(
        items, SOURCES, now=NOW, selection=Selection(max_items=10, max_age=timedelta(days=60))
    )
    assert len(timeline.items) == 5


def test_a_sources_own_items_are_never_merged_into_one_story():
    """Two of beta's items, under different headlines, stay two items, though one shares
    alpha's headline and the other alpha's link (the case the property above excludes)."""
    one, two = "A long enough headline here", "Another long headline, yes"
    link = "https://news.example.org/a"
    entries = [
        _entry("alpha", "1", NOW - timedelta(hours=2), title=two, link=link),
        _entry("beta", "1", NOW - timedelta(hours=1), title=two),
        _entry("beta", "2", NOW, title=one, link=link),
    ]
    timeline = build(entries, 10)
    assert [(i.entry.source, i.entry.entry_id) for i in timeline.items] == [
        ("beta", "2"),
        ("alpha", "1"),
    ]
    assert [s.name for s in timeline.items[1].also] == ["beta"]  # beta's copy by headline


def test_an_item_on_a_link_another_source_took_by_headline_stays_its_own():
    """alpha's second item shares only a link with beta's copy of alpha's first story:
    alpha published two stories, and the timeline keeps both."""
    entries = [
        _entry("alpha", "x", NOW - timedelta(hours=2), title="An important headline, x",
               link="https://alpha.example.org/x"),
        _entry("beta", "x", NOW - timedelta(hours=1), title="An important headline, x",
               link="https://beta.example.org/y"),
        _entry("alpha", "y", NOW, title="Quite another story, y",
               link="https://beta.example.org/y"),
    ]  # fmt: skip
    timeline = build(entries, 10)
    assert [(i.entry.source, i.entry.entry_id) for i in timeline.items] == [
        ("alpha", "y"),
        ("alpha", "x"),
    ]


def test_a_daily_headline_still_merges_across_sources_after_many_days():
    """More days of one source's column than a headline keeps candidates for: its latest
    copy is still the same story as another source's copy that day."""
    headline = "Daily market wrap and analysis"
    days = 40
    rows = [
        _entry("alpha", f"a{day}", NOW - timedelta(days=days - day), title=headline)
        for day in range(days)
    ]
    last = NOW - timedelta(days=1)
    rows.append(_entry("beta", "b-last", last + timedelta(minutes=5), title=headline))
    timeline = build_timeline(
        rows, SOURCES, now=NOW, selection=Selection(max_items=100, max_age=timedelta(days=60))
    )
    [latest] = [item for item in timeline.items if item.entry.entry_id == f"a{days - 1}"]
    assert [credit.name for credit in latest.also] == ["beta"]
    assert all(item.entry.entry_id != "b-last" for item in timeline.items)

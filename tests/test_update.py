"""The update rules (`aggregator.update`), pure: properties over generated feeds and stores."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aggregator import update
from aggregator.store.records import FeedMeta, KnownEntries, PollOutcome, Schedule, StoreResult
from aggregator.text import story_keys
from aggregator.timeline import CLOCK_SKEW
from aggregator.types import ItemMemory, ParsedEntry, ParsedFeed, StoredEntry
from tests.storedata import NOW, entry, source

DATES = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2040, 1, 1),
        timezones=st.just(UTC),
    ),
)


@st.composite
def feeds(draw: st.DrawFn) -> list[ParsedEntry]:
    """Entries with distinct ids, any dates (past, future, none) and a few titles."""
    ids = draw(st.lists(st.text("abcdef", min_size=1, max_size=4), unique=True, max_size=12))
    return [
        entry(
            i,
            draw(st.sampled_from(["Title", "Another title of some length", "x"])),
            published=draw(DATES),
            updated=draw(DATES),
        )
        for i in ids
    ]


def stored_as(entries: list[ParsedEntry], now: datetime) -> KnownEntries:
    """What a store holds after writing these entries at `now`."""
    return KnownEntries({e.entry_id: update.signature(e, now) for e in entries})


@given(feeds())
def test_a_fresh_source_gets_every_entry_as_new_in_place(entries: list[ParsedEntry]) -> None:
    writes = update.entry_writes(entries, KnownEntries(), NOW)
    assert [w.entry for w in writes.new] == entries
    assert writes.changed == () and writes.still_buried == ()
    for w in writes.new:
        assert w.sort_date is not None and w.sort_date <= NOW + CLOCK_SKEW
        # The future clamp: an `updated` beyond the clock skew is no date at all.
        if w.entry.updated is not None and w.entry.updated > NOW + CLOCK_SKEW:
            assert w.updated is None
        else:
            assert w.updated == w.entry.updated
    assert update.outcome_of(update.result_of(writes)) is (
        PollOutcome.UPDATED if entries else PollOutcome.UNCHANGED
    )


@given(feeds(), st.integers(min_value=0, max_value=3 * 86400))
def test_the_same_feed_again_writes_nothing(entries: list[ParsedEntry], later: int) -> None:
    """Unchanged entries are not written, whenever they are seen again (once a future
    `updated` has come, it is a change: the date is now real)."""
    now = NOW + timedelta(seconds=later)
    known = stored_as(entries, NOW)
    writes = update.entry_writes(entries, known, now)
    assert writes.new == ()
    became_dated = {
        e.entry_id
        for e in entries
        if e.updated is not None and NOW + CLOCK_SKEW < e.updated <= now + CLOCK_SKEW
    }
    assert {w.entry.entry_id for w in writes.changed} == became_dated


@given(feeds(), st.data())
def test_buried_entries_are_never_new_and_stay_buried(
    entries: list[ParsedEntry], data: st.DataObject
) -> None:
    buried = frozenset(data.draw(st.sets(st.sampled_from([e.entry_id for e in entries] or ["z"]))))
    writes = update.entry_writes(entries, KnownEntries(buried=buried), NOW)
    ids = {e.entry_id for e in entries}
    assert set(writes.still_buried) == buried & ids
    assert not {w.entry.entry_id for w in writes.new} & buried


@given(feeds(), st.data())
def test_an_edit_is_a_change_not_a_new_entry(
    entries: list[ParsedEntry], data: st.DataObject
) -> None:
    known = stored_as(entries, NOW)
    edited = {e.entry_id for e in entries if data.draw(st.booleans())}
    again = [
        entry(
            e.entry_id, e.title, published=e.published, updated=e.updated, summary_html="<p>!</p>"
        )
        if e.entry_id in edited
        else e
        for e in entries
    ]
    writes = update.entry_writes(again, known, NOW)
    assert writes.new == ()
    assert {w.entry.entry_id for w in writes.changed} == edited
    result = update.result_of(writes)
    assert result == StoreResult(0, len(edited))


@given(st.integers(min_value=1, max_value=20))
def test_undated_entries_keep_document_order_a_second_apart(count: int) -> None:
    entries = [entry(f"u{n}") for n in range(count)]
    writes = update.entry_writes(entries, KnownEntries(), NOW)
    dates = [w.sort_date for w in writes.new]
    assert dates == [NOW - timedelta(seconds=n) for n in range(count)]


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.sampled_from(["https://e.org/a", "https://E.org/b/"])),
                  st.sampled_from(["A title long enough to key", "short"])),
        max_size=6,
    )
)  # fmt: skip
def test_story_keys_of_entries_are_their_own_keys(pairs: list[tuple[str | None, str]]) -> None:
    stored = [
        StoredEntry("a", str(n), title, link, "", "", None, (), None, None, NOW, NOW)
        for n, (link, title) in enumerate(pairs)
    ]
    keys = update.story_keys_of(stored)
    expected = [story_keys(link, title) for link, title in pairs]
    assert keys.links == {k for k, _ in expected if k}
    assert keys.titles == {t for _, t in expected if t}


def test_credits_prefer_the_operator_then_the_feed_then_the_name() -> None:
    configured = source("configured", title="Operator's title")
    from_feed, bare, unknown = source("from-feed"), source("bare"), source("unknown")
    feeds = {
        "configured": FeedMeta("Feed title", "https://c.example/", "id-c"),
        "from-feed": FeedMeta("Feed title", None, None),
        "bare": FeedMeta(None, None, None),
    }
    credits = update.source_credits([configured, from_feed, bare, unknown], feeds)
    assert [c.title for c in credits.values()] == [
        "Operator's title",
        "Feed title",
        "bare",
        "unknown",
    ]
    assert credits["configured"].site_url == "https://c.example/"
    assert credits["configured"].feed_id == "id-c"
    assert credits["unknown"].feed_url == unknown.url


@given(
    st.integers(min_value=1, max_value=48 * 60),
    st.integers(min_value=0, max_value=5),
    st.one_of(st.none(), st.integers(min_value=1, max_value=12)),  # under policy's cap
)
def test_schedule_repairs_only_bring_polls_forward(
    minutes_ahead: int, failures: int, retry_hours: int | None
) -> None:
    """A next poll later than the (15-minute) interval allows moves up; none moves later,
    a Retry-After still holds, and a source never polled is left alone."""
    scheduled = NOW + timedelta(minutes=minutes_ahead)
    wait = NOW + timedelta(hours=retry_hours) if retry_hours else None
    held = [
        Schedule("a", NOW, scheduled, failures, wait, None),
        Schedule("new", None, None, 0, None, None),
    ]
    repairs = update.schedule_repairs([source("a"), source("new")], held)
    assert all(r.name == "a" and r.was == scheduled and r.to < scheduled for r in repairs)
    for r in repairs:
        if wait is not None:
            assert r.to >= wait
    if failures == 0 and wait is None and minutes_ahead > 60:
        assert len(repairs) == 1


def test_outcomes_keep_their_stored_words() -> None:
    assert [str(o) for o in PollOutcome] == [
        "updated",
        "unchanged",
        "not-modified",
        "failed",
        "disabled",
        "skipped",
    ]
    assert update.outcome_of(None) is PollOutcome.NOT_MODIFIED


# -- a partial parse's reused entries (`parse.partial`) -----------------------------------------


@given(feeds(), st.data())
def test_reused_entries_write_what_a_whole_parse_of_the_same_feed_writes(
    entries: list[ParsedEntry], data: st.DataObject
) -> None:
    """Whichever unchanged entries a partial parse left unread (`reused`), the writes are
    those of the whole feed: the same new and changed entries, the same buried ones."""
    stored = data.draw(st.lists(st.sampled_from(entries), unique=True) if entries else st.just([]))
    buried = data.draw(
        st.sets(st.sampled_from([e.entry_id for e in entries])) if entries else st.just(set())
    )
    known = KnownEntries(
        {e.entry_id: update.signature(e, NOW) for e in stored if e.entry_id not in buried},
        frozenset(buried),
    )
    unchanged = {e.entry_id for e in stored} | buried
    reused = [e.entry_id for e in entries if e.entry_id in unchanged and data.draw(st.booleans())]
    parsed = [e for e in entries if e.entry_id not in reused]
    assert update.reuse_holds(reused, known)
    assert update.entry_writes(parsed, known, NOW, reused) == update.entry_writes(
        entries, known, NOW
    )


def test_a_reused_entry_the_store_lacks_does_not_hold() -> None:
    known = KnownEntries({"a": update.signature(entry("a"), NOW)}, frozenset({"b"}))
    assert update.reuse_holds(["a", "b"], known)
    assert not update.reuse_holds(["a", "c"], known)


def test_items_whose_entry_is_dated_in_the_future_are_not_remembered() -> None:
    soon, later = NOW + CLOCK_SKEW / 2, NOW + CLOCK_SKEW * 2
    feed = ParsedFeed(
        "F", None, None,
        (entry("a", updated=soon), entry("b", updated=later), entry("c")),
        memory=ItemMemory("f", "d", (("1", "a"), ("2", "b"), ("3", "c"), ("4", None))),
    )  # fmt: skip
    memory = update.items_to_remember(feed, NOW)
    assert memory is not None and memory.items == (("1", "a"), ("3", "c"), ("4", None))
    assert update.items_to_remember(feed, later) == feed.memory
    assert update.items_to_remember(replace(feed, memory=None), NOW) is None

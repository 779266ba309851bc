"""One body of store tests, run against every implementation of `StoreAPI`.

Each test takes `store` (a fresh, empty store) and, where it needs more connections to the
same data, `open_again()`; the `backend` parameter says which database holds them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from aggregator.errors import StorageError
from aggregator.poll import store_entries, sync_sources
from aggregator.settings import SourceConfig
from aggregator.store import StoreAPI, open_store
from aggregator.store import postgres as store_pg
from aggregator.store import sqlite as sqlite_store
from aggregator.store.records import (
    FeedMeta,
    KnownEntries,
    PollOutcome,
    PollRecord,
    PublicationHead,
    PublishedChange,
    PublishedFile,
    PushState,
    Subscription,
)
from aggregator.types import ItemMemory, ParsedFeed, SourceCredit, Validators
from aggregator.update import entry_writes, source_credits, story_keys_of
from tests.storedata import (
    NOW,
    count_entries,
    disabled,
    entry,
    failed,
    source,
    succeeded,
)

LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Backend:
    """A database for one test: how to open (another) store on it, and its schema's version."""

    name: str
    open: Callable[[], StoreAPI]
    latest: int  # the schema version this aggregator migrates to
    force_version: Callable[[int], None]  # write a schema version behind the store's back


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "state" / "aggregator.sqlite3"

        def sqlite_version(version: int) -> None:
            with closing(sqlite3.connect(path)) as db:
                db.execute(f"PRAGMA user_version = {version}")

        return Backend(
            "sqlite", lambda: open_store(path), sqlite_store.SCHEMA_VERSION, sqlite_version
        )
    # Asked for only here, so that without a server only the PostgreSQL cases skip.
    url: str = request.getfixturevalue("pg_url")

    def pg_version(version: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    return Backend("postgresql", lambda: open_store(url), store_pg.SCHEMA_VERSION, pg_version)


@pytest.fixture
def open_again(backend: Backend) -> Iterator[Callable[[], StoreAPI]]:
    """Open more stores on the test's database (as other daemons would); closed at the end."""
    opened: list[StoreAPI] = []

    def open_one() -> StoreAPI:
        opened.append(backend.open())
        return opened[-1]

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def store(open_again: Callable[[], StoreAPI]) -> StoreAPI:
    return open_again()


def source_credits_of(store: StoreAPI, sources: list[SourceConfig]) -> dict[str, SourceCredit]:
    """Credits as publishing makes them: the update rule over what the store holds."""
    return source_credits(sources, store.feed_metas())


# -- opening and schema --------------------------------------------------------------------


def test_a_new_store_is_at_the_latest_schema_and_empty(store: StoreAPI, backend: Backend) -> None:
    assert store.schema_version == backend.latest
    assert count_entries(store) == 0
    assert store.source_states() == []
    assert store.first_added() is None
    store.ping()
    store.checkpoint()


def test_reopening_migrates_nothing(backend: Backend) -> None:
    first = backend.open()
    sync_sources(first, [source("a")], NOW)
    first.close()
    second = backend.open()
    try:
        assert second.schema_version == backend.latest
        assert [s.name for s in second.source_states()] == ["a"]
    finally:
        second.close()


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    backend.force_version(backend.latest + 1)
    with pytest.raises(StorageError, match="newer than this aggregator knows"):
        backend.open()


def test_stores_opened_at_once_migrate_once(backend: Backend) -> None:
    """Daemons starting together on an empty database: one migrates, the others wait."""
    opened: list[StoreAPI] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def open_one() -> None:
        try:
            start.wait()
            opened.append(backend.open())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors
        assert [s.schema_version for s in opened] == [backend.latest] * 3
    finally:
        for s in opened:
            s.close()


def test_reopening_keeps_data(backend: Backend) -> None:
    first = backend.open()
    try:
        sync_sources(first, [source("a")], NOW)
        store_entries(first, "a", [entry("1", published=NOW - timedelta(hours=1))], NOW)
        succeeded(first, "a", Validators('"v1"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "updated")
    finally:
        first.close()
    second = backend.open()
    try:
        assert second.schema_version == backend.latest
        assert count_entries(second) == 1
        assert count_entries(second, "a") == 1
        (stored,) = second.recent_entries(["a"], NOW - timedelta(days=1), 10)
        assert stored.entry_id == "1"
        assert stored.published == NOW - timedelta(hours=1)
        state = second.source_state("a")
        assert state is not None
        assert state.validators == Validators('"v1"', "Sun, 13 Jul 2025 09:46:40 GMT")
        assert state.entries == 1
    finally:
        second.close()


# -- entries -------------------------------------------------------------------------------


def test_store_entries_counts_new_then_nothing(store: StoreAPI) -> None:
    entries = [entry(str(n), f"Story {n}", published=NOW - timedelta(hours=n)) for n in range(5)]
    first = store_entries(store, "a", entries, NOW)
    assert (first.new, first.updated) == (5, 0)
    again = store_entries(store, "a", entries, NOW + timedelta(minutes=15))
    assert (again.new, again.updated) == (0, 0)
    assert count_entries(store, "a") == 5


def test_store_no_entries(store: StoreAPI) -> None:
    result = store_entries(store, "a", [], NOW)
    assert (result.new, result.updated) == (0, 0)


def test_changed_title_is_an_update_that_keeps_first_seen_and_sort_date(store: StoreAPI) -> None:
    published = NOW - timedelta(hours=3)
    original = [entry("1", "Old title", published=published), entry("2", published=published)]
    store_entries(store, "a", original, NOW)
    (before,) = [
        e for e in store.recent_entries(["a"], NOW - timedelta(days=1), 10) if e.entry_id == "1"
    ]

    later = NOW + timedelta(hours=2)
    edited = [entry("1", "New title", published=published), original[1]]
    result = store_entries(store, "a", edited, later)
    assert (result.new, result.updated) == (0, 1)

    (after,) = [
        e for e in store.recent_entries(["a"], NOW - timedelta(days=1), 10) if e.entry_id == "1"
    ]
    assert after.title == "New title"
    assert after.first_seen == before.first_seen == NOW
    assert after.sort_date == before.sort_date == published


def test_changed_date_is_an_update_but_not_a_move(store: StoreAPI) -> None:
    published = NOW - timedelta(hours=3)
    store_entries(store, "a", [entry("1", published=published)], NOW)
    moved = entry("1", published=NOW - timedelta(minutes=5), updated=NOW)
    result = store_entries(store, "a", [moved], NOW + timedelta(hours=1))
    assert (result.new, result.updated) == (0, 1)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published == NOW - timedelta(minutes=5)
    assert stored.updated == NOW
    assert stored.sort_date == published
    assert stored.first_seen == NOW


def test_recent_entries_newest_first_since_limit_and_sources(store: StoreAPI) -> None:
    a = [entry(f"a{n}", published=NOW - timedelta(hours=n)) for n in range(6)]
    b = [entry(f"b{n}", published=NOW - timedelta(hours=n, minutes=30)) for n in range(6)]
    store_entries(store, "a", a, NOW)
    store_entries(store, "b", b, NOW)
    store_entries(store, "c", [entry("c0", published=NOW)], NOW)

    everything = store.recent_entries(["a", "b"], NOW - timedelta(days=1), 100)
    assert [e.entry_id for e in everything] == [
        "a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4", "a5", "b5",
    ]  # fmt: skip
    dates = [e.sort_date for e in everything]
    assert dates == sorted(dates, reverse=True)

    since = store.recent_entries(["a", "b"], NOW - timedelta(hours=2), 100)
    assert [e.entry_id for e in since] == ["a0", "b0", "a1", "b1", "a2"]  # a2 is exactly at since

    assert [e.entry_id for e in store.recent_entries(["a", "b"], NOW - timedelta(days=1), 3)] == [
        "a0",
        "b0",
        "a1",
    ]
    only_b = store.recent_entries(["b"], NOW - timedelta(days=1), 100)
    assert {e.source for e in only_b} == {"b"}
    assert len(only_b) == 6
    assert store.recent_entries([], NOW - timedelta(days=1), 100) == []
    assert store.recent_entries(["unknown"], NOW - timedelta(days=1), 100) == []


def test_recent_entries_round_trip_every_field(store: StoreAPI) -> None:
    original = replace(
        entry(
            "x",
            "शीर्षक “quoted” & <b>",
            published=NOW - timedelta(hours=1),
            updated=NOW - timedelta(minutes=1),
            summary_html="<p>सारांश</p>",
            categories=("देश", "world"),
        ),
        author="संवाददाता",
    )
    store_entries(store, "a", [original], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.source == "a"
    assert stored.entry_id == original.entry_id
    assert stored.title == original.title
    assert stored.link == original.link
    assert stored.summary_html == original.summary_html
    assert stored.teaser == original.teaser
    assert stored.author == original.author
    assert stored.categories == original.categories
    assert stored.published == original.published
    assert stored.updated == original.updated
    assert stored.first_seen == NOW
    for value in (stored.published, stored.updated, stored.first_seen, stored.sort_date):
        assert value is not None and value.utcoffset() == timedelta(0)


def test_same_entry_id_in_two_sources_is_two_entries(store: StoreAPI) -> None:
    assert store_entries(store, "a", [entry("same", published=NOW)], NOW).new == 1
    assert store_entries(store, "b", [entry("same", published=NOW)], NOW).new == 1
    assert count_entries(store) == 2


# -- sort date -----------------------------------------------------------------------------


def test_future_dated_entry_sorts_at_first_sight(store: StoreAPI) -> None:
    store_entries(store, "a", [entry("future", published=NOW + timedelta(days=3))], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published == NOW + timedelta(days=3)
    assert stored.sort_date == NOW
    # It stays there when seen again later, even once its date has passed.
    store_entries(
        store, "a", [entry("future", published=NOW + timedelta(days=3))], NOW + timedelta(days=4)
    )
    (again,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert again.sort_date == NOW


def test_future_updated_is_no_date_until_it_has_come(store: StoreAPI) -> None:
    """A future `updated` is dropped, so repeated polls neither count an update nor change it."""
    published = NOW - timedelta(hours=1)
    future = entry("e", published=published, updated=NOW + timedelta(days=2))
    assert store_entries(store, "a", [future], NOW).new == 1
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.updated is None
    assert stored.sort_date == published
    again = store_entries(store, "a", [future], NOW + timedelta(hours=1))
    assert (again.new, again.updated) == (0, 0)
    # Once that time has come, the date is real: one update, and the place stays.
    later = store_entries(store, "a", [future], NOW + timedelta(days=3))
    assert (later.new, later.updated) == (0, 1)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.updated == NOW + timedelta(days=2)
    assert stored.sort_date == published


def test_past_dated_entry_keeps_its_date(store: StoreAPI) -> None:
    published = NOW - timedelta(days=2, hours=5)
    store_entries(store, "a", [entry("past", published=published)], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=7), 10)
    assert stored.sort_date == published
    assert stored.first_seen == NOW


def test_undated_entry_sorts_at_first_sight(store: StoreAPI) -> None:
    store_entries(store, "a", [entry("undated")], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published is None and stored.updated is None
    assert stored.sort_date == NOW


def test_updated_only_entry_sorts_by_updated(store: StoreAPI) -> None:
    store_entries(store, "a", [entry("u", updated=NOW - timedelta(hours=6))], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.sort_date == NOW - timedelta(hours=6)


# -- sources -------------------------------------------------------------------------------


def test_failures_count_up_and_reset_on_success(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 0
    assert state.validators == Validators()
    assert state.last_polled is None

    failed(store, "a", "HTTP 500 Internal Server Error", NOW)
    failed(store, "a", "connection refused by a.example.org", NOW + timedelta(minutes=15))
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 2
    assert state.last_outcome == "failed"
    assert state.last_error == "connection refused by a.example.org"
    assert state.last_polled == NOW + timedelta(minutes=15)
    assert state.last_success is None

    later = NOW + timedelta(minutes=30)
    succeeded(store, "a", Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT"), later, "updated")
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 0
    assert state.last_error is None
    assert state.last_outcome == "updated"
    assert state.last_success == later
    assert state.last_polled == later
    assert state.validators == Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT")

    failed(store, "a", "timed out waiting for the server", later + timedelta(minutes=15))
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 1
    assert state.last_success == later
    # A failure keeps the validators for the next conditional request.
    assert state.validators == Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_not_modified_saves_validators(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    succeeded(store, "a", Validators('"e1"', None), NOW, "updated")
    succeeded(store, "a", Validators('"e2"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "not-modified")
    state = store.source_state("a")
    assert state is not None
    assert state.last_outcome == "not-modified"
    assert state.validators == Validators('"e2"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_record_success_saves_feed_metadata(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    feed = ParsedFeed(
        title="समाचार", link="https://a.example.org/", feed_id="tag:a,2025:feed", entries=()
    )
    succeeded(store, "a", Validators(), NOW, "updated", feed=feed)
    state = store.source_state("a")
    assert state is not None
    assert state.title == "समाचार"
    assert state.site_url == "https://a.example.org/"


def test_the_items_of_the_last_parse_are_kept_until_the_next_parse_or_a_new_url(
    store: StoreAPI,
) -> None:
    """`PollRecord.items` (the partial parse's memory): written with a parsed feed (None
    forgets it), kept through a 304 or a failure, forgotten when the source's URL changes."""
    sync_sources(store, [source("a"), source("b")], NOW)
    feed = FeedMeta("A", None, None)
    memory = ItemMemory("f" * 32, "d" * 32, (("1" * 32, "tag:a,1"), ("2" * 32, None)))
    assert store.remembered_items("a") is None
    store.record_poll(PollRecord("a", NOW, PollOutcome.UPDATED, feed=feed, items=memory))
    store.record_poll(PollRecord("b", NOW, PollOutcome.UPDATED, feed=feed, items=memory))
    assert store.remembered_items("a") == memory
    later = NOW + timedelta(hours=1)
    store.record_poll(PollRecord("a", later, PollOutcome.NOT_MODIFIED, keep_tombstones=True))
    failed(store, "a", "HTTP 500", later)
    assert store.remembered_items("a") == memory
    store.record_poll(PollRecord("a", later, PollOutcome.UNCHANGED, feed=feed, items=None))
    assert store.remembered_items("a") is None
    sync_sources(store, [source("b", url="https://new.example.org/b.xml")], later)
    assert store.remembered_items("b") is None
    assert store.remembered_items("nobody") is None


def test_unknown_source_state_is_none(store: StoreAPI) -> None:
    assert store.source_state("nobody") is None


def test_sync_sources_with_changed_url_clears_validators(store: StoreAPI) -> None:
    sync_sources(store, [source("a"), source("b")], NOW)
    for name in ("a", "b"):
        succeeded(store, name, Validators('"e"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "updated")

    later = NOW + timedelta(days=1)
    sync_sources(store, [source("a", url="https://new.example.org/a.xml"), source("b")], later)

    a = store.source_state("a")
    assert a is not None
    assert a.url == "https://new.example.org/a.xml"
    assert a.validators == Validators()
    b = store.source_state("b")
    assert b is not None
    assert b.url == "https://b.example.org/feed.xml"
    assert b.validators == Validators('"e"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_sync_sources_keeps_unconfigured_sources_and_their_entries(store: StoreAPI) -> None:
    sync_sources(store, [source("a"), source("b")], NOW)
    store_entries(store, "b", [entry("1", published=NOW)], NOW)
    sync_sources(store, [source("a")], NOW + timedelta(hours=1))
    assert store.source_state("b") is not None
    assert count_entries(store, "b") == 1


def test_source_credits_title_precedence(store: StoreAPI) -> None:
    configured = source("configured", title="Operator's Title")
    from_feed = source("from-feed")
    bare = source("bare")
    never_synced = source("never-synced")
    sync_sources(store, [configured, from_feed, bare], NOW)
    feed = ParsedFeed(
        title="Feed's Own Title", link="https://f.example.org/", feed_id="urn:f", entries=()
    )
    succeeded(store, "configured", Validators(), NOW, "updated", feed=feed)
    succeeded(store, "from-feed", Validators(), NOW, "updated", feed=feed)
    succeeded(store, "bare", Validators(), NOW, "updated", feed=replace(feed, title=None))

    credits = source_credits_of(store, [configured, from_feed, bare, never_synced])
    assert credits["configured"].title == "Operator's Title"
    assert credits["from-feed"].title == "Feed's Own Title"
    assert credits["bare"].title == "bare"
    assert credits["never-synced"].title == "never-synced"
    assert credits["from-feed"].feed_url == from_feed.url
    assert credits["from-feed"].site_url == "https://f.example.org/"
    assert credits["from-feed"].feed_id == "urn:f"
    assert credits["never-synced"].site_url is None


def test_a_shortened_interval_reschedules_at_once(store: StoreAPI) -> None:
    hourly = replace(source("a"), interval=timedelta(hours=1))
    sync_sources(store, [hourly], NOW)
    succeeded(store, "a", Validators(), NOW, "not-modified", next_poll=NOW + timedelta(hours=1))
    sync_sources(store, [hourly], NOW + timedelta(seconds=5))  # unchanged: schedule kept
    state = store.source_state("a")
    assert state is not None and state.next_poll == NOW + timedelta(hours=1)
    sync_sources(
        store, [replace(hourly, interval=timedelta(seconds=30))], NOW + timedelta(seconds=5)
    )
    state = store.source_state("a")
    assert state is not None and state.next_poll is not None
    assert NOW + timedelta(seconds=27) <= state.next_poll <= NOW + timedelta(seconds=33)
    assert store.due_sources(["a"], NOW + timedelta(seconds=34)) == ["a"]


def test_due_sources_never_polled_first_then_oldest_schedule_first(store: StoreAPI) -> None:
    names = ["a", "b", "c", "d", "e"]
    sync_sources(store, [source(n) for n in names], NOW)
    succeeded(store, "b", Validators(), NOW, "updated", next_poll=NOW - timedelta(hours=1))
    failed(store, "c", "HTTP 500", NOW, NOW - timedelta(hours=2))
    succeeded(store, "d", Validators(), NOW, "updated", next_poll=NOW + timedelta(microseconds=1))
    disabled(store, "e", "HTTP 410 Gone", NOW)
    assert store.due_sources([*names, "unknown"], NOW) == ["a", "c", "b"]
    assert store.due_sources(names, NOW + timedelta(microseconds=1)) == ["a", "c", "b", "d"]
    assert store.due_sources(["b", "d"], NOW) == ["b"]
    assert store.due_sources([], NOW) == []


def test_schedule_times_keep_microseconds_and_entry_dates_whole_seconds(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    precise = NOW + timedelta(minutes=30, microseconds=123456)
    failed(store, "a", "HTTP 429", NOW, precise, retry_after=precise)
    state = store.source_state("a")
    assert state is not None
    assert state.next_poll == precise
    assert state.retry_after == precise
    store_entries(store, "a", [entry("e", published=NOW + timedelta(microseconds=999999))], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published == NOW
    assert stored.sort_date == NOW


def test_names_order_by_code_point_whatever_the_locale(store: StoreAPI) -> None:
    names = ["b", "é", "B", "a", "Z"]
    sync_sources(store, [source(n) for n in names], NOW)
    assert [s.name for s in store.source_states()] == ["B", "Z", "a", "b", "é"]
    for name in names:
        store_entries(store, name, [entry("same-time", published=NOW)], NOW)
    recent = store.recent_entries(names, NOW - timedelta(days=1), 10)
    assert [e.source for e in recent] == ["B", "Z", "a", "b", "é"]
    assert store.due_sources(names, NOW) == ["B", "Z", "a", "b", "é"]


def test_politeness_state_round_trips(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    feed = ParsedFeed(title="A", link=None, feed_id=None, entries=(), lifetime=timedelta(hours=2))
    moved = "https://new.example.org/feed.xml"
    succeeded(
        store,
        "a",
        Validators('"e"', None),
        NOW,
        "updated",
        feed=feed,
        moved_to=moved,
        body_hash="h1",
    )
    state = store.source_state("a")
    assert state is not None
    assert (state.moved_to, state.fetch_url, state.body_hash) == (moved, moved, "h1")
    assert state.lifetime == timedelta(hours=2)
    # A 304 keeps what it does not say: where the feed moved, the last body's hash.
    succeeded(store, "a", Validators('"e"', None), NOW + timedelta(hours=1), "not-modified")
    state = store.source_state("a")
    assert state is not None
    assert (state.moved_to, state.body_hash, state.lifetime) == (moved, "h1", timedelta(hours=2))

    # Failing too often where it moved: back to the configured URL, without its validators.
    store.record_poll(
        PollRecord("a", NOW + timedelta(hours=1), PollOutcome.FAILED, error="x", forget_move=True)
    )
    state = store.source_state("a")
    assert state is not None
    assert state.moved_to is None and state.fetch_url == source("a").url
    assert state.validators == Validators()

    gone = NOW + timedelta(hours=2)
    disabled(store, "a", "HTTP 410 Gone", gone)
    state = store.source_state("a")
    assert state is not None
    assert (state.disabled, state.last_outcome, state.last_error) == (
        "HTTP 410 Gone",
        "disabled",
        "HTTP 410 Gone",
    )
    assert state.last_polled == gone and state.next_poll is None
    assert store.due_sources(["a"], gone + timedelta(days=1)) == []
    sync_sources(store, [source("a")], gone)  # the same URL: still disabled
    assert store.due_sources(["a"], gone) == []
    assert store.disabled_sources() == {"a"}  # the names alone, every state not read
    sync_sources(store, [source("a", url="https://a.example.org/new.xml")], gone)
    assert store.due_sources(["a"], gone) == ["a"]
    assert store.disabled_sources() == set()


def test_a_poll_of_a_replaced_url_writes_nothing(store: StoreAPI) -> None:
    """A reload changed the URL while the old one was being polled."""
    old_url, new_url = source("a").url, "https://a.example.org/new.xml"
    sync_sources(store, [source("a")], NOW)
    sync_sources(store, [source("a", url=new_url)], NOW)
    succeeded(store, "a", Validators('"old"', None), NOW, "updated", url=old_url)
    failed(store, "a", "HTTP 500", NOW, url=old_url)
    disabled(store, "a", "HTTP 410 Gone", NOW, url=old_url)
    state = store.source_state("a")
    assert state is not None
    assert (state.validators, state.failures, state.last_polled, state.disabled) == (
        Validators(),
        0,
        None,
        None,
    )
    succeeded(store, "a", Validators('"new"', None), NOW, "updated", url=new_url)
    state = store.source_state("a")
    assert state is not None and state.validators == Validators('"new"', None)


def test_a_new_url_ends_the_claim_on_the_old_one(store: StoreAPI) -> None:
    """A reload changed the URL while the old one was claimed (its poll under way, whose
    record will not be written): the new URL is due at once, not when the lease runs out."""
    sync_sources(store, [source("a")], NOW)
    assert store.claim_due(["a"], NOW, "one", timedelta(minutes=5)) == ["a"]
    sync_sources(store, [source("a")], NOW)  # the same URL: the claim holds
    assert store.claim_holders(NOW) == ["one"]
    sync_sources(store, [source("a", url="https://a.example.org/new.xml")], NOW)
    assert store.claim_holders(NOW) == []
    assert store.claim_due(["a"], NOW, "two", timedelta(minutes=5)) == ["a"]


def test_first_added_is_the_oldest_source(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    sync_sources(store, [source("a"), source("b")], NOW + timedelta(days=1))
    assert store.first_added() == NOW


# -- retention and tombstones ------------------------------------------------------------


KEEP = timedelta(days=30)


def test_prune_deletes_old_entries_and_buries_their_ids(store: StoreAPI) -> None:
    old = [entry(f"old{n}", published=NOW - timedelta(days=40 + n)) for n in range(3)]
    fresh = entry("fresh", published=NOW - timedelta(days=1))
    at_cutoff = entry("at-cutoff", published=NOW - KEEP)
    assert store_entries(store, "a", [*old, fresh, at_cutoff], NOW).new == 5
    assert store.prune(NOW - KEEP, NOW) == 3
    assert count_entries(store, "a") == 2
    # Still in the feed: neither new nor stored again.
    again = store_entries(store, "a", [*old, fresh, at_cutoff], NOW + timedelta(hours=1))
    assert (again.new, again.updated) == (0, 0)
    assert count_entries(store, "a") == 2
    assert store.prune(NOW - KEEP, NOW + timedelta(hours=1)) == 0


def test_a_tombstone_lasts_while_its_entry_stays_in_the_feed(store: StoreAPI) -> None:
    kept, dropped = (entry(n, published=NOW - timedelta(days=40)) for n in ("kept", "dropped"))
    store_entries(store, "a", [kept, dropped], NOW)
    store.prune(NOW - KEEP, NOW)
    # Twenty days on the feed still holds `kept` only.
    assert store_entries(store, "a", [kept], NOW + timedelta(days=20)).new == 0
    later = NOW + timedelta(days=40)
    assert store.prune(later - KEEP, later) == 0
    # `dropped` was absent from the feed for longer than entries are kept: it is new again.
    result = store_entries(store, "a", [kept, dropped], later)
    assert (result.new, result.updated) == (1, 0)
    assert [e.entry_id for e in store.recent_entries(["a"], NOW - timedelta(days=50), 10)] == [
        "dropped"
    ]


def test_an_unchanged_feed_keeps_its_tombstones_alive(store: StoreAPI) -> None:
    """A 304 (or an unchanged body) means the feed still holds what it held."""
    old = entry("old", published=NOW - timedelta(days=40))
    sync_sources(store, [source("a")], NOW)
    store_entries(store, "a", [old], NOW)
    store.prune(NOW - KEEP, NOW)
    succeeded(store, "a", Validators('"e"', None), NOW + timedelta(days=20), "not-modified")
    later = NOW + timedelta(days=40)
    store.prune(later - KEEP, later)
    assert store_entries(store, "a", [old], later).new == 0


# -- stories across sources ----------------------------------------------------------------


def test_earlier_copies_find_older_copies_of_a_story_by_link_or_title(store: StoreAPI) -> None:
    title = "A story title long enough"
    by_title = entry("t-old", title, published=NOW - timedelta(days=3))
    by_link = replace(
        entry("l-old", "Told in other words entirely", published=NOW - timedelta(days=2)),
        link="https://news.example/story?utm_source=feed",
    )
    unrelated = entry("u-old", "Nothing to do with it at all", published=NOW - timedelta(days=2))
    in_window = entry("t-new", title, published=NOW - timedelta(hours=2))
    store_entries(store, "a", [by_title, unrelated, in_window], NOW)
    store_entries(store, "b", [by_link], NOW)
    store_entries(
        store,
        "c",
        [replace(entry("new", title.title(), published=NOW), link="https://NEWS.example/story")],
        NOW,
    )
    of = store.recent_entries(["c"], NOW - timedelta(days=1), 10)
    before = NOW - timedelta(days=1)
    copies = store.earlier_copies(["a", "b", "c"], story_keys_of(of), before, 10)
    assert sorted(e.entry_id for e in copies) == ["l-old", "t-old"]
    assert [e.entry_id for e in store.earlier_copies(["a"], story_keys_of(of), before, 10)] == [
        "t-old"
    ]
    assert store.earlier_copies(["a", "b"], story_keys_of([]), before, 10) == []


def test_earlier_copies_are_at_most_limit_the_first_seen(store: StoreAPI) -> None:
    """Thousands of old copies of one story must not all be read at every publish."""
    title = "A story title long enough"
    for day in (5, 4, 3, 2):
        old = entry(f"old-{day}", title, published=NOW - timedelta(days=day))
        store_entries(store, "a", [old], NOW - timedelta(days=day))  # first seen that day
    store_entries(store, "b", [entry("new", title, published=NOW)], NOW)
    of = store.recent_entries(["b"], NOW - timedelta(days=1), 10)
    copies = store.earlier_copies(["a", "b"], story_keys_of(of), NOW - timedelta(days=1), 2)
    assert [e.entry_id for e in copies] == ["old-5", "old-4"]


# -- claims --------------------------------------------------------------------------------


def test_claim_takes_due_sources_in_due_order(store: StoreAPI) -> None:
    names = ["never", "early", "late", "future", "gone"]
    sync_sources(store, [source(n) for n in names], NOW)
    succeeded(store, "early", Validators(), NOW, "updated", next_poll=NOW - timedelta(hours=2))
    succeeded(store, "late", Validators(), NOW, "updated", next_poll=NOW - timedelta(hours=1))
    succeeded(store, "future", Validators(), NOW, "updated", next_poll=NOW + timedelta(hours=1))
    disabled(store, "gone", "HTTP 410 Gone", NOW)

    assert store.claim_due(names, NOW, "daemon-1", LEASE) == ["never", "early", "late"]
    assert store.claim_due(names, NOW, "daemon-2", LEASE) == []
    # The claimer itself does not get them twice either: a slow tick must not overlap the next.
    assert store.claim_due(names, NOW, "daemon-1", LEASE) == []


def test_claim_only_among_the_names_given_and_up_to_the_limit(store: StoreAPI) -> None:
    sync_sources(store, [source(n) for n in "abcde"], NOW)
    assert store.claim_due(["e", "a", "c", "zz"], NOW, "one", LEASE, limit=2) == ["a", "c"]
    assert store.claim_due(list("abcde"), NOW, "two", LEASE, limit=2) == ["b", "d"]
    assert store.claim_due(list("abcde"), NOW, "three", LEASE) == ["e"]
    assert store.claim_due([], NOW, "four", LEASE) == []


def test_claim_due_by_a_later_time_takes_scheduled_sources_but_not_held_ones(
    store: StoreAPI,
) -> None:
    """What `once` does: every source, whenever it is scheduled, unless someone polls it."""
    names = ["held", "soon", "gone"]
    sync_sources(store, [source(n) for n in names], NOW)
    succeeded(store, "soon", Validators(), NOW, "updated", next_poll=NOW + timedelta(days=1))
    disabled(store, "gone", "HTTP 410 Gone", NOW)
    assert store.claim_due(["held"], NOW, "daemon", LEASE) == ["held"]
    far = NOW + timedelta(days=3650)
    assert store.claim_due(names, NOW, "once", LEASE, due_by=far) == ["soon"]


def test_claim_among_many_names_keeps_the_due_order_the_names_and_the_limit(
    store: StoreAPI,
) -> None:
    """A daemon passes every configured source (SQLite then reads the due ones from its
    index): the same sources, order and limit as for a few names."""
    configured = [f"s{n:03}" for n in range(100)]
    others = [f"t{n:03}" for n in range(20)]  # known to the store, not asked for
    sync_sources(store, [source(n) for n in configured + others], NOW)
    for n, name in enumerate(others + configured[:60]):
        # Due first the others (never to be claimed), then s000-s049; s050-s059 not yet.
        later = NOW + timedelta(minutes=n - 70, seconds=1)
        succeeded(store, name, Validators(), NOW, "updated", next_poll=later)
    assert store.claim_due(configured[10:12], NOW, "held", LEASE) == ["s010", "s011"]
    disabled(store, "s020", "HTTP 410 Gone", NOW)
    wanted = [n for n in configured if n != "s030"]
    never = configured[60:]  # never polled: first, by name
    due = [f"s{n:03}" for n in range(50) if n not in (10, 11, 20, 30)]
    assert store.claim_due(wanted, NOW, "one", LEASE, limit=45) == never + due[:5]
    assert store.claim_due(wanted, NOW, "two", LEASE) == due[5:]
    assert store.claim_due(wanted, NOW, "three", LEASE) == []


def test_poll_states_read_several_sources_at_once_without_counting(store: StoreAPI) -> None:
    sync_sources(store, [source(n) for n in "abc"], NOW)
    store_entries(store, "a", [entry("a-1"), entry("a-2")], NOW)
    succeeded(store, "a", Validators('"e1"', None), NOW, "updated", next_poll=NOW)
    states = store.poll_states(["a", "b", "nobody"])
    assert sorted(states) == ["a", "b"]
    counted = store.source_state("a")
    assert counted is not None and counted.entries == 2
    assert states["a"] == replace(counted, entries=None)
    assert states["b"] == replace(store.source_state("b"), entries=None)  # type: ignore[type-var]
    assert store.poll_states([]) == {}


def test_poll_states_say_what_is_remembered_and_carry_the_subscription(store: StoreAPI) -> None:
    """A poll reads whether the last parse's items are remembered (it reads them only for a
    changed body) and the source's WebSub subscription with its state: one read for all."""
    sync_sources(store, [source("a"), source("b")], NOW)
    memory = ItemMemory("f" * 32, "d" * 32, (("1" * 32, "tag:a,1"),))
    feed = FeedMeta("A", None, None)
    store.record_poll(PollRecord("a", NOW, PollOutcome.UPDATED, feed=feed, items=memory))
    sub = _subscription(source="a")
    assert store.save_subscription(sub, None)
    states = store.poll_states(["a", "b"])
    assert states["a"].remembers and not states["b"].remembers
    assert states["a"].subscription == sub
    assert states["b"].subscription is None
    assert store.poll_states(["a"])["a"] == states["a"]  # one name, the same read
    assert store.source_state("a").subscription is None  # type: ignore[union-attr]


def test_polls_recorded_together_end_their_claims_like_one_by_one(store: StoreAPI) -> None:
    names = [f"s{n}" for n in range(5)]
    sync_sources(store, [source(n) for n in names], NOW)
    assert store.claim_due(names, NOW, "one", LEASE) == names
    later = NOW + timedelta(seconds=3)
    store.record_polls(
        [
            PollRecord(name, later, PollOutcome.NOT_MODIFIED, next_poll=later,
                       validators=Validators(f'"{name}"', None), keep_tombstones=True)
            for name in names[:4]
        ]
        + [PollRecord("s4", later, PollOutcome.FAILED, next_poll=later, error="HTTP 500")]
    )  # fmt: skip
    for name in names[:4]:
        state = store.source_state(name)
        assert state is not None
        assert (state.last_outcome, state.validators.etag, state.next_poll) == (
            "not-modified", f'"{name}"', later
        )  # fmt: skip
    failure = store.source_state("s4")
    assert failure is not None and (failure.failures, failure.last_error) == (1, "HTTP 500")
    assert store.claim_holders(NOW) == []
    assert store.claim_due(names, later, "two", LEASE) == names


def test_the_claims_of_an_owner_known_dead_are_released_at_once(store: StoreAPI) -> None:
    sync_sources(store, [source(n) for n in "abc"], NOW)
    assert store.claim_due(["a", "b"], NOW, "dead", LEASE) == ["a", "b"]
    assert store.claim_due(["c"], NOW, "alive", LEASE) == ["c"]
    assert store.claim_holders(NOW) == ["alive", "dead"]
    assert store.claim_holders(NOW + LEASE) == []
    assert store.release_all("dead") == 2
    assert store.claim_holders(NOW) == ["alive"]
    assert store.claim_due(list("abc"), NOW, "heir", LEASE) == ["a", "b"]


def test_an_expired_lease_can_be_claimed_by_another_owner(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    assert store.claim_due(["a"], NOW, "dead-daemon", LEASE) == ["a"]
    assert store.claim_due(["a"], NOW + LEASE - timedelta(microseconds=1), "other", LEASE) == []
    assert store.claim_due(["a"], NOW + LEASE, "other", LEASE) == ["a"]
    # The new lease runs from the new claim.
    assert store.claim_due(["a"], NOW + LEASE + timedelta(minutes=1), "third", LEASE) == []


def test_release_frees_only_the_owners_claim(store: StoreAPI) -> None:
    sync_sources(store, [source("a")], NOW)
    assert store.claim_due(["a"], NOW, "one", LEASE) == ["a"]
    store.release("a", "two")  # not its claim: nothing happens
    assert store.claim_due(["a"], NOW, "two", LEASE) == []
    store.release("a", "one")
    assert store.claim_due(["a"], NOW, "two", LEASE) == ["a"]
    store.release("nobody-knows-me", "two")


@pytest.mark.parametrize("outcome", ["success", "failure", "disable"])
def test_recording_the_poll_releases_the_claim(store: StoreAPI, outcome: str) -> None:
    sync_sources(store, [source("a")], NOW)
    assert store.claim_due(["a"], NOW, "one", LEASE) == ["a"]
    later = NOW + timedelta(seconds=3)
    if outcome == "success":
        succeeded(store, "a", Validators(), later, "updated", next_poll=later)
    elif outcome == "failure":
        failed(store, "a", "HTTP 500", later, later)
    else:
        disabled(store, "a", "HTTP 410 Gone", later)
        assert store.claim_due(["a"], later, "two", LEASE) == []  # disabled: never due
        sync_sources(store, [source("a", url="https://b.example.org/")], later)  # fixed
    assert store.claim_due(["a"], later, "two", LEASE) == ["a"]


def test_concurrent_claimers_get_disjoint_sets_covering_all_due_sources(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    names = [f"s{n:03}" for n in range(60)]
    sync_sources(store, [source(n) for n in names], NOW)
    claimers = [open_again() for _ in range(3)]
    start = threading.Barrier(len(claimers))
    got: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def claim_until_none_left(owner: str, s: StoreAPI) -> None:
        try:
            start.wait()
            mine: list[str] = []
            while batch := s.claim_due(names, NOW, owner, LEASE, limit=4):
                mine.extend(batch)
            got[owner] = mine
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=claim_until_none_left, args=(f"daemon-{n}", s))
        for n, s in enumerate(claimers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    claimed = [name for batch in got.values() for name in batch]
    assert sorted(claimed) == names  # every due source once, none twice
    assert store.claim_due(names, NOW, "late-comer", LEASE) == []


# -- publishing ----------------------------------------------------------------------------


def test_publish_lock_lets_one_publisher_in_at_a_time(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    other = open_again()
    events: list[str] = []
    first_inside = threading.Event()

    def publish(who: str, s: StoreAPI, hold: float) -> None:
        with s.publish_lock():
            events.append(f"{who} in")
            first_inside.set()
            time.sleep(hold)
            events.append(f"{who} out")

    first = threading.Thread(target=publish, args=("first", store, 0.5))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=publish, args=("second", other, 0))
    second.start()
    first.join(10)
    second.join(10)
    assert events == ["first in", "first out", "second in", "second out"]
    # And it is free again afterwards, for either.
    with store.publish_lock():
        pass


# -- the published snapshot ------------------------------------------------------------------


def _file(name: str, data: bytes, publication: str = "") -> PublishedFile:
    return PublishedFile(name, hashlib.sha256(data).hexdigest(), data, publication)


def _heads(**fingerprints: str) -> dict[str, PublicationHead]:
    """Heads by directory ("root" for ""), each its fingerprint with a state naming it."""
    return {
        ("" if name == "root" else f"{name}/"): PublicationHead(f, f'{{"main": "{f}"}}')
        for name, f in fingerprints.items()
    }


def test_the_published_snapshot_changes_file_by_file(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    assert store.published_fingerprints() == {}
    assert store.published_digests("") == {}
    assert store.publication_state("") is None
    atom, rss, day = (
        _file("atom.xml", b"<feed/>"),
        _file("rss.xml", b"\x00\xff binary-safe"),
        _file("archive/2025/07/12.atom", b"<feed>12</feed>"),
    )
    store.save_published(PublishedChange((atom, rss, day), heads=_heads(root="f1")))
    # The second change writes one file, removes one, keeps the third as it was.
    atom2 = _file("atom.xml", b"<feed>2</feed>")
    store.save_published(
        PublishedChange((atom2,), frozenset({"archive/2025/07/12.atom"}), _heads(root="f2"))
    )
    other = open_again()  # what another daemon sees
    assert other.published_fingerprints() == {"": "f2"}
    assert other.published_digests("") == {"atom.xml": atom2.digest, "rss.xml": rss.digest}
    assert other.load_published(["rss.xml", "atom.xml", "gone.xml"]) == [atom2, rss]
    assert other.load_published([]) == []
    assert other.publication_state("") == '{"main": "f2"}'
    # A change of the head alone keeps the files.
    other.save_published(PublishedChange(heads={"": PublicationHead("f2", "{}")}))
    assert store.publication_state("") == "{}"
    assert store.load_published(["atom.xml"]) == [atom2]


def test_each_publication_has_its_files_and_head_and_is_dropped_whole(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    """The root and each channel: files of their own and a head (fingerprint, state) each;
    changing one leaves the others; a channel dropped loses its files (archives too) and
    its head in the same transaction."""
    root = _file("atom.xml", b"root")
    news = _file("news/atom.xml", b"news", "news/")
    news_day = _file("news/archive/2025/07/13.atom", b"a", "news/")
    sport = _file("sport/atom.xml", b"sport", "sport/")
    sport_day = _file("sport/archive/2025/07/13.atom", b"b", "sport/")
    store.save_published(
        PublishedChange(
            (root, news, news_day, sport, sport_day), heads=_heads(root="r1", news="n1", sport="s1")
        )
    )
    root2 = _file("atom.xml", b"root 2")
    store.save_published(
        PublishedChange((root2,), heads=_heads(root="r2"), dropped=frozenset({"sport/"}))
    )
    other = open_again()
    assert other.published_fingerprints() == {"": "r2", "news/": "n1"}
    assert other.published_digests("") == {"atom.xml": root2.digest}
    assert other.published_digests("news/") == {
        news.name: news.digest,
        news_day.name: news_day.digest,
    }
    assert other.published_digests("sport/") == {}
    assert other.load_published([sport.name, sport_day.name, news_day.name]) == [news_day]
    assert other.publication_state("sport/") is None


def test_loading_many_published_files_at_once(store: StoreAPI) -> None:
    files = tuple(_file(f"archive/2025/{n:04d}.atom", str(n).encode()) for n in range(1200))
    store.save_published(PublishedChange(files))
    assert store.load_published(f.name for f in files) == sorted(files, key=lambda f: f.name)


# -- archives: what changed, one day's entries -----------------------------------------------


def test_entry_marks_say_what_was_stored_since_a_token(store: StoreAPI) -> None:
    day = NOW - timedelta(days=3)
    store_entries(store, "a", [entry("1", "One", published=day), entry("2", published=day)], NOW)
    store_entries(store, "b", [entry("3", published=NOW - timedelta(days=1))], NOW)
    everything = store.entry_marks(["a"], None, 10)
    assert sorted(m.sort_date for m in everything.marks) == [day, day]
    assert everything.complete
    token = everything.token
    assert store.entry_marks(["a", "b"], token, 10).marks == ()
    # Stored since: a new entry, an edited one; the same content again is no change.
    store_entries(
        store,
        "a",
        [entry("1", "One, edited", published=day), entry("2", published=day)],
        NOW + timedelta(hours=1),
    )
    store_entries(store, "b", [entry("4", published=NOW)], NOW + timedelta(hours=1))
    since = store.entry_marks(["a", "b"], token, 10)
    assert sorted((m.sort_date, m.title_key) for m in since.marks) == [
        (day, "one edited"),
        (NOW, "title"),
    ]
    assert since.marks[0].link_key is not None
    assert [m.sort_date for m in store.entry_marks(["b"], token, 10).marks] == [NOW]
    assert store.entry_marks(["a", "b"], since.token, 10).marks == ()
    # More than asked for: incomplete. A token that is not this store's: incomplete.
    assert not store.entry_marks(["a", "b"], token, 1).complete
    assert not store.entry_marks(["a"], "not a token", 10).complete


def test_entries_retention_deleted_are_marks_since_the_token(store: StoreAPI) -> None:
    """A day loses items to retention: the publish after must know where they were (and
    their story keys: a later copy of theirs now stands alone)."""
    old, kept = NOW - timedelta(days=40), NOW - timedelta(days=1)
    store_entries(store, "a", [entry("old", "Old one", published=old)], NOW)
    store_entries(store, "a", [entry("kept", published=kept)], NOW)
    token = store.entry_marks(["a"], None, 10).token
    assert store.prune(NOW - timedelta(days=30), NOW) == 1
    (mark,) = store.entry_marks(["a"], token, 10).marks
    assert (mark.sort_date, mark.title_key) == (old, "old one")
    assert mark.link_key is not None
    after = store.entry_marks(["a"], token, 10).token
    assert store.entry_marks(["a"], after, 10).marks == ()
    assert store.prune(NOW - timedelta(days=30), NOW) == 0
    assert store.entry_marks(["a"], after, 10).marks == ()
    # Every stored entry (since=None) does not count the deleted ones.
    assert [m.sort_date for m in store.entry_marks(["a"], None, 10).marks] == [kept]


def test_a_write_committed_after_a_token_was_taken_is_seen_next_time(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    """A transaction under way when a publish takes its token commits after the publish
    read: the next publish must see it (a clock or a sequence read too early would not)."""
    writer = open_again()
    writes = entry_writes([entry("late", published=NOW)], KnownEntries(), NOW)
    before = store.entry_marks(["a"], None, 10).token
    with writer._transaction() as tx:  # type: ignore[attr-defined]
        writer._write_entries(tx, "a", writes)  # type: ignore[attr-defined]
        during = store.entry_marks(["a"], before, 10)
        assert during.marks == ()
    assert [m.sort_date for m in store.entry_marks(["a"], during.token, 10).marks] == [NOW]


def test_day_reads_take_a_range_sources_and_a_limit(store: StoreAPI) -> None:
    start, end = NOW - timedelta(days=1), NOW
    store_entries(
        store,
        "a",
        [
            entry("before", published=start - timedelta(seconds=1)),
            entry("first", published=start),
            entry("second", published=start + timedelta(hours=1)),
            entry("at-end", published=end),
        ],
        NOW,
    )
    store_entries(store, "b", [entry("other", published=start + timedelta(hours=2))], NOW)
    between = store.entries_between(["a", "b"], start, end, 10)
    assert [e.entry_id for e in between] == ["first", "second", "other"]
    assert [e.entry_id for e in store.entries_between(["a"], start, end, 1)] == ["first"]
    assert store.oldest_entry(["a", "b"]) == start - timedelta(seconds=1)
    assert store.oldest_entry(["b"]) == start + timedelta(hours=2)
    assert store.oldest_entry(["nobody"]) is None
    assert store.latest_before(["a"], end) == start + timedelta(hours=1)
    assert store.latest_before(["a", "b"], end) == start + timedelta(hours=2)
    assert store.latest_before(["a"], start - timedelta(seconds=1)) is None


def test_copies_outside_a_day_and_the_dates_of_a_storys_copies(store: StoreAPI) -> None:
    title = "A story title long enough"
    start, end = NOW - timedelta(days=1), NOW
    store_entries(store, "a", [entry("inside", title, published=start + timedelta(hours=3))], NOW)
    store_entries(store, "b", [entry("earlier", title, published=start - timedelta(days=3))], NOW)
    later = end + timedelta(hours=1)
    store_entries(store, "c", [entry("later", title, published=later)], later)
    store_entries(store, "c", [entry("unrelated", "Another matter entirely")], NOW)
    keys = story_keys_of(store.entries_between(["a"], start, end, 10))
    outside = store.copies_outside(["a", "b", "c"], start, end, 10)
    assert sorted(e.entry_id for e in outside) == ["earlier", "later"]
    # The first seen first, then the earliest placed: they decide a story's first copy.
    first = store.copies_outside(["a", "b", "c"], start, end, 1)
    assert [e.entry_id for e in first] == ["earlier"]
    assert store.copies_outside(["a"], start, end, 10) == []  # no other source: no copy
    assert store.copies_outside(["b", "c"], start, end, 10) == []  # nothing inside of theirs
    assert sorted(store.story_dates(["a", "b", "c"], keys, 10)) == [
        start - timedelta(days=3),
        start + timedelta(hours=3),
        end + timedelta(hours=1),
    ]
    assert len(store.story_dates(["a", "b", "c"], keys, 2)) == 2
    assert store.story_dates(["a"], story_keys_of([]), 10) == []
    # A copy sharing both the link and the title is one copy, not two.
    store_entries(store, "b", [entry("inside", title, published=start - timedelta(days=2))], NOW)
    twice = store.copies_outside(["a", "b", "c"], start, end, 10)
    assert sorted(e.entry_id for e in twice) == ["earlier", "inside", "later"]


def test_entry_versions_count_the_writes_that_change_a_sources_entries(
    store: StoreAPI,
) -> None:
    """What lets a publish skip a channel none of whose sources changed: new or changed
    entries and retention's deletions count; a poll that changes no entry does not."""
    sync_sources(store, [source("a"), source("b")], NOW)
    assert store.entry_versions() == {"a": 0, "b": 0}
    store_entries(store, "a", [entry("1", published=NOW)], NOW)
    assert store.entry_versions() == {"a": 1, "b": 0}
    store_entries(store, "a", [entry("1", published=NOW)], NOW)  # the same again: no write
    succeeded(store, "a", Validators(etag='"e"'), NOW, "not-modified")
    assert store.entry_versions() == {"a": 1, "b": 0}
    store_entries(store, "a", [entry("1", "Edited", published=NOW)], NOW)
    assert store.entry_versions()["a"] == 2
    feed = ParsedFeed("B", None, None, (entry("2", published=NOW - timedelta(days=9)),))
    writes = entry_writes(feed.entries, store.known_entries("b", ["2"]), NOW)
    store.record_poll(
        PollRecord("b", NOW, PollOutcome.UPDATED, validators=Validators(), entries=writes)
    )
    assert store.entry_versions() == {"a": 2, "b": 1}
    store.prune(NOW - timedelta(days=5), NOW)  # deletes b's entry only
    assert store.entry_versions() == {"a": 2, "b": 2}


def test_sources_placed_between(store: StoreAPI) -> None:
    sync_sources(store, [source("a"), source("b")], NOW)
    store_entries(store, "a", [entry("a1", published=NOW - timedelta(hours=2))], NOW)
    store_entries(store, "b", [entry("b1", published=NOW - timedelta(hours=1))], NOW)
    hour = timedelta(hours=1)
    assert store.sources_placed_between(NOW - 3 * hour, NOW) == {"a", "b"}
    assert store.sources_placed_between(NOW - 2 * hour, NOW - hour) == {"a"}  # [since, before)
    assert store.sources_placed_between(NOW - hour, NOW) == {"b"}
    assert store.sources_placed_between(NOW - 90 * timedelta(minutes=1), NOW - hour) == set()


def test_two_writers_of_one_entry_the_last_ones_content_wins_and_its_place_stays(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    """Two polls of one source racing (a lease that ran out mid-poll): both read the entry
    as new, the first inserts it, the second's edit must not be dropped. As when one write
    transaction read and wrote (bc165e6): the last writer's content is stored, and the
    entry keeps the place and first sighting the first writer gave it."""
    other = open_again()
    published = NOW - timedelta(hours=3)
    first = entry("1", "First title", published=published)
    second = entry("1", "Edited title", published=published)
    # The second writer decides before the first has written: it too sees no entry "1".
    late = NOW + timedelta(minutes=5)
    decided = entry_writes([second], other.known_entries("a", ["1"]), late)
    store_entries(store, "a", [first], NOW)
    other.write_entries("a", decided)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.title == "Edited title"
    assert (stored.first_seen, stored.sort_date) == (NOW, published)
    # And the next poll of the edited feed finds nothing to change.
    assert store_entries(store, "a", [second], late + timedelta(minutes=15)).updated == 0


# -- WebSub subscriptions ---------------------------------------------------------------------


def _subscription(**changes: object) -> Subscription:
    base = Subscription(
        source="a",
        source_url="https://a.example/feed",
        hub="https://hub.example/",
        topic="https://a.example/feed",
        token="tok-" + "x" * 40,
        secret="s3cret",
        state=PushState.PENDING,
        requested=datetime(2025, 7, 13, 12, 0, 0, 123456, tzinfo=UTC),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_subscription_round_trips_by_source_and_by_token(store: StoreAPI) -> None:
    sub = _subscription()
    assert store.subscription("a") is None
    assert store.save_subscription(sub, None)
    assert store.subscription("a") == sub
    assert store.subscription_by_token(sub.token) == sub
    assert store.subscription_by_token("tok-other") is None
    active = replace(
        sub,
        state=PushState.ACTIVE,
        lease_seconds=864000,
        lease_expires=sub.requested + timedelta(days=10),
    )
    assert store.save_subscription(active, sub)
    assert store.subscriptions() == [active]
    assert store.delete_subscription("a", sub.token)
    assert store.subscriptions() == []


def test_only_one_of_two_deciders_writes_a_subscription(
    open_again: Callable[[], StoreAPI],
) -> None:
    """Two daemons that read the same row (or none) and decide at once: one write wins."""
    one, two = open_again(), open_again()
    first = _subscription()
    assert one.save_subscription(first, None)
    assert not two.save_subscription(_subscription(token="tok-" + "y" * 40), None)
    renewing = replace(first, state=PushState.RENEWING, requested=first.requested + LEASE)
    assert one.save_subscription(renewing, first)
    assert not two.save_subscription(replace(first, state=PushState.EXPIRED), first)
    assert not two.delete_subscription("a", "tok-" + "y" * 40)
    assert two.subscription("a") == renewing


def test_copies_first_seen_within_one_second_keep_their_order(store: StoreAPI) -> None:
    """The copy of a story seen first is the one published, so its id never changes. With
    `first_seen` cut to the second, a copy seen half a second later tied with it, the tie
    went to the source name ("aa" before "zz"), and the published id changed."""
    title = "A story title long enough"
    placed = NOW - timedelta(hours=1)
    seen = NOW.replace(microsecond=0) - timedelta(minutes=5) + timedelta(milliseconds=100)
    store_entries(store, "zz", [entry("z1", title, published=placed)], seen)
    later = seen + timedelta(milliseconds=500)
    store_entries(store, "aa", [entry("a1", title, published=placed)], later)
    entries = store.recent_entries(["aa", "zz"], NOW - timedelta(days=1), 10)
    assert {e.entry_id: e.first_seen for e in entries} == {"z1": seen, "a1": later}
    # The timeline's order of a story's copies (`timeline._group_stories`).
    first = min(entries, key=lambda e: (e.first_seen, e.sort_date, e.source, e.entry_id))
    assert first.entry_id == "z1"

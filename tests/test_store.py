"""`aggregator.store.Store` on a real SQLite file in a temporary directory."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aggregator.store as store_module
from aggregator.config import SourceConfig
from aggregator.errors import StorageError
from aggregator.store import SCHEMA_VERSION, Store
from aggregator.types import ParsedEntry, ParsedFeed, Validators

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested" / "aggregator.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path)
    try:
        yield s
    finally:
        s.close()


# -- opening -------------------------------------------------------------------------------


def test_open_creates_directories_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    s = Store.open(db_path)
    try:
        assert db_path.is_file()
        assert s.schema_version == SCHEMA_VERSION
        assert s.count_entries() == 0
    finally:
        s.close()


def test_store_uses_wal(store: Store, db_path: Path) -> None:
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        other.close()


def test_reopening_keeps_data(db_path: Path) -> None:
    first = Store.open(db_path)
    try:
        first.sync_sources([source("a")], NOW)
        first.store_entries("a", [entry("1", published=NOW - timedelta(hours=1))], NOW)
        first.record_success("a", Validators('"v1"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "x")
    finally:
        first.close()
    second = Store.open(db_path)
    try:
        assert second.schema_version == SCHEMA_VERSION
        assert second.count_entries() == 1
        assert second.count_entries("a") == 1
        (stored,) = second.recent_entries(["a"], NOW - timedelta(days=1), 10)
        assert stored.entry_id == "1"
        assert stored.published == NOW - timedelta(hours=1)
        state = second.source_state("a")
        assert state is not None
        assert state.validators == Validators('"v1"', "Sun, 13 Jul 2025 09:46:40 GMT")
        assert state.entries == 1
    finally:
        second.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw = sqlite3.connect(db_path)
    try:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.commit()
    finally:
        raw.close()
    with pytest.raises(StorageError, match="newer"):
        Store.open(db_path)


def test_unreadable_file_is_a_storage_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StorageError):
        Store.open(db_path)


# -- entries -------------------------------------------------------------------------------


def test_store_entries_counts_new_then_nothing(store: Store) -> None:
    entries = [entry(str(n), f"Story {n}", published=NOW - timedelta(hours=n)) for n in range(5)]
    first = store.store_entries("a", entries, NOW)
    assert (first.new, first.updated) == (5, 0)
    again = store.store_entries("a", entries, NOW + timedelta(minutes=15))
    assert (again.new, again.updated) == (0, 0)
    assert store.count_entries("a") == 5


def test_store_no_entries(store: Store) -> None:
    result = store.store_entries("a", [], NOW)
    assert (result.new, result.updated) == (0, 0)


def test_changed_title_is_an_update_that_keeps_first_seen_and_sort_date(store: Store) -> None:
    published = NOW - timedelta(hours=3)
    original = [entry("1", "Old title", published=published), entry("2", published=published)]
    store.store_entries("a", original, NOW)
    (before,) = [
        e for e in store.recent_entries(["a"], NOW - timedelta(days=1), 10) if e.entry_id == "1"
    ]

    later = NOW + timedelta(hours=2)
    edited = [entry("1", "New title", published=published), original[1]]
    result = store.store_entries("a", edited, later)
    assert (result.new, result.updated) == (0, 1)

    (after,) = [
        e for e in store.recent_entries(["a"], NOW - timedelta(days=1), 10) if e.entry_id == "1"
    ]
    assert after.title == "New title"
    assert after.first_seen == before.first_seen == NOW
    assert after.sort_date == before.sort_date == published


def test_changed_date_is_an_update_but_not_a_move(store: Store) -> None:
    published = NOW - timedelta(hours=3)
    store.store_entries("a", [entry("1", published=published)], NOW)
    moved = entry("1", published=NOW - timedelta(minutes=5), updated=NOW)
    result = store.store_entries("a", [moved], NOW + timedelta(hours=1))
    assert (result.new, result.updated) == (0, 1)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published == NOW - timedelta(minutes=5)
    assert stored.updated == NOW
    assert stored.sort_date == published
    assert stored.first_seen == NOW


def test_recent_entries_newest_first_since_limit_and_sources(store: Store) -> None:
    a = [entry(f"a{n}", published=NOW - timedelta(hours=n)) for n in range(6)]
    b = [entry(f"b{n}", published=NOW - timedelta(hours=n, minutes=30)) for n in range(6)]
    store.store_entries("a", a, NOW)
    store.store_entries("b", b, NOW)
    store.store_entries("c", [entry("c0", published=NOW)], NOW)

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


def test_recent_entries_round_trip_every_field(store: Store) -> None:
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
    store.store_entries("a", [original], NOW)
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


def test_same_entry_id_in_two_sources_is_two_entries(store: Store) -> None:
    assert store.store_entries("a", [entry("same", published=NOW)], NOW).new == 1
    assert store.store_entries("b", [entry("same", published=NOW)], NOW).new == 1
    assert store.count_entries() == 2


# -- sort date -----------------------------------------------------------------------------


def test_future_dated_entry_sorts_at_first_sight(store: Store) -> None:
    store.store_entries("a", [entry("future", published=NOW + timedelta(days=3))], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published == NOW + timedelta(days=3)
    assert stored.sort_date == NOW
    # It stays there when seen again later, even once its date has passed.
    store.store_entries(
        "a", [entry("future", published=NOW + timedelta(days=3))], NOW + timedelta(days=4)
    )
    (again,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert again.sort_date == NOW


def test_future_updated_is_no_date_until_it_has_come(store: Store) -> None:
    """A future `updated` is dropped, so repeated polls neither count an update nor change it."""
    published = NOW - timedelta(hours=1)
    future = entry("e", published=published, updated=NOW + timedelta(days=2))
    assert store.store_entries("a", [future], NOW).new == 1
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.updated is None
    assert stored.sort_date == published
    again = store.store_entries("a", [future], NOW + timedelta(hours=1))
    assert (again.new, again.updated) == (0, 0)
    # Once that time has come, the date is real: one update, and the place stays.
    later = store.store_entries("a", [future], NOW + timedelta(days=3))
    assert (later.new, later.updated) == (0, 1)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.updated == NOW + timedelta(days=2)
    assert stored.sort_date == published


def test_past_dated_entry_keeps_its_date(store: Store) -> None:
    published = NOW - timedelta(days=2, hours=5)
    store.store_entries("a", [entry("past", published=published)], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=7), 10)
    assert stored.sort_date == published
    assert stored.first_seen == NOW


def test_undated_entry_sorts_at_first_sight(store: Store) -> None:
    store.store_entries("a", [entry("undated")], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.published is None and stored.updated is None
    assert stored.sort_date == NOW


def test_updated_only_entry_sorts_by_updated(store: Store) -> None:
    store.store_entries("a", [entry("u", updated=NOW - timedelta(hours=6))], NOW)
    (stored,) = store.recent_entries(["a"], NOW - timedelta(days=1), 10)
    assert stored.sort_date == NOW - timedelta(hours=6)


# -- sources -------------------------------------------------------------------------------


def test_failures_count_up_and_reset_on_success(store: Store) -> None:
    store.sync_sources([source("a")], NOW)
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 0
    assert state.validators == Validators()
    assert state.last_polled is None

    store.record_failure("a", "HTTP 500 Internal Server Error", NOW)
    store.record_failure("a", "connection refused by a.example.org", NOW + timedelta(minutes=15))
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 2
    assert state.last_outcome == "failed"
    assert state.last_error == "connection refused by a.example.org"
    assert state.last_polled == NOW + timedelta(minutes=15)
    assert state.last_success is None

    later = NOW + timedelta(minutes=30)
    store.record_success("a", Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT"), later, "updated")
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 0
    assert state.last_error is None
    assert state.last_outcome == "updated"
    assert state.last_success == later
    assert state.last_polled == later
    assert state.validators == Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT")

    store.record_failure("a", "timed out waiting for the server", later + timedelta(minutes=15))
    state = store.source_state("a")
    assert state is not None
    assert state.failures == 1
    assert state.last_success == later
    # A failure keeps the validators for the next conditional request.
    assert state.validators == Validators('"e1"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_not_modified_saves_validators(store: Store) -> None:
    store.sync_sources([source("a")], NOW)
    store.record_success("a", Validators('"e1"', None), NOW, "updated")
    store.record_success(
        "a", Validators('"e2"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "not-modified"
    )
    state = store.source_state("a")
    assert state is not None
    assert state.last_outcome == "not-modified"
    assert state.validators == Validators('"e2"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_record_success_saves_feed_metadata(store: Store) -> None:
    store.sync_sources([source("a")], NOW)
    feed = ParsedFeed(
        title="समाचार", link="https://a.example.org/", feed_id="tag:a,2025:feed", entries=()
    )
    store.record_success("a", Validators(), NOW, "updated", feed=feed)
    state = store.source_state("a")
    assert state is not None
    assert state.title == "समाचार"
    assert state.site_url == "https://a.example.org/"


def test_unknown_source_state_is_none(store: Store) -> None:
    assert store.source_state("nobody") is None


def test_sync_sources_with_changed_url_clears_validators(store: Store) -> None:
    store.sync_sources([source("a"), source("b")], NOW)
    for name in ("a", "b"):
        store.record_success(name, Validators('"e"', "Sun, 13 Jul 2025 09:46:40 GMT"), NOW, "x")

    later = NOW + timedelta(days=1)
    store.sync_sources([source("a", url="https://new.example.org/a.xml"), source("b")], later)

    a = store.source_state("a")
    assert a is not None
    assert a.url == "https://new.example.org/a.xml"
    assert a.validators == Validators()
    b = store.source_state("b")
    assert b is not None
    assert b.url == "https://b.example.org/feed.xml"
    assert b.validators == Validators('"e"', "Sun, 13 Jul 2025 09:46:40 GMT")


def test_sync_sources_keeps_unconfigured_sources_and_their_entries(store: Store) -> None:
    store.sync_sources([source("a"), source("b")], NOW)
    store.store_entries("b", [entry("1", published=NOW)], NOW)
    store.sync_sources([source("a")], NOW + timedelta(hours=1))
    assert store.source_state("b") is not None
    assert store.count_entries("b") == 1


def test_source_credits_title_precedence(store: Store) -> None:
    configured = source("configured", title="Operator's Title")
    from_feed = source("from-feed")
    bare = source("bare")
    never_synced = source("never-synced")
    store.sync_sources([configured, from_feed, bare], NOW)
    feed = ParsedFeed(
        title="Feed's Own Title", link="https://f.example.org/", feed_id="urn:f", entries=()
    )
    store.record_success("configured", Validators(), NOW, "updated", feed=feed)
    store.record_success("from-feed", Validators(), NOW, "updated", feed=feed)
    store.record_success("bare", Validators(), NOW, "updated", feed=replace(feed, title=None))

    credits = store.source_credits([configured, from_feed, bare, never_synced])
    assert credits["configured"].title == "Operator's Title"
    assert credits["from-feed"].title == "Feed's Own Title"
    assert credits["bare"].title == "bare"
    assert credits["never-synced"].title == "never-synced"
    assert credits["from-feed"].feed_url == from_feed.url
    assert credits["from-feed"].site_url == "https://f.example.org/"
    assert credits["from-feed"].feed_id == "urn:f"
    assert credits["never-synced"].site_url is None


def test_a_shortened_interval_reschedules_at_once(store: Store) -> None:
    hourly = replace(source("a"), interval=timedelta(hours=1))
    store.sync_sources([hourly], NOW)
    store.record_success("a", Validators(), NOW, "not-modified", next_poll=NOW + timedelta(hours=1))
    store.sync_sources([hourly], NOW + timedelta(seconds=5))  # unchanged: schedule kept
    state = store.source_state("a")
    assert state is not None and state.next_poll == NOW + timedelta(hours=1)
    store.sync_sources(
        [replace(hourly, interval=timedelta(seconds=30))], NOW + timedelta(seconds=5)
    )
    state = store.source_state("a")
    assert state is not None and state.next_poll is not None
    assert NOW + timedelta(seconds=27) <= state.next_poll <= NOW + timedelta(seconds=33)
    assert store.due_sources(["a"], NOW + timedelta(seconds=34)) == ["a"]


def test_upgrading_an_older_store_keeps_its_data_and_fills_story_keys(db_path: Path) -> None:
    """A store left at schema 3 (before politeness and story keys) opens at the current one."""
    db_path.parent.mkdir(parents=True)
    old = Store.__new__(Store)
    old._db = sqlite3.connect(db_path, isolation_level=None)
    saved = store_module._MIGRATIONS
    try:
        store_module._MIGRATIONS = saved[:3]
        store_module.SCHEMA_VERSION = 3
        Store._migrate(old)
        old._db.execute(
            "INSERT INTO sources (name, url, added) VALUES ('a', 'https://a.example/f', ?)",
            (NOW.isoformat(),),
        )
        old._db.execute(
            "INSERT INTO entries (source, entry_id, title, link, summary_html, teaser, author,"
            " categories, published, updated, first_seen, sort_date, content_hash)"
            " VALUES ('a', '1', 'A story title long enough', 'https://E.example/s/?utm_source=x',"
            " '', '', NULL, '[]', NULL, NULL, ?, ?, 'h')",
            (NOW.isoformat(), NOW.isoformat()),
        )
    finally:
        store_module._MIGRATIONS = saved
        store_module.SCHEMA_VERSION = len(saved)
        old._db.close()
    upgraded = Store.open(db_path)
    try:
        assert upgraded.schema_version == SCHEMA_VERSION
        keys = upgraded._db.execute("SELECT link_key, title_key FROM entries").fetchone()
        assert keys == ("//e.example/s", "a story title long enough")
        assert upgraded.count_entries("a") == 1
        state = upgraded.source_state("a")
        assert state is not None and state.retry_after is None and state.moved_to is None
    finally:
        upgraded.close()


def _vm_steps(store: Store, call: Callable[[], object]) -> int:
    """SQLite virtual-machine instructions a call costs (in units of 100): work, not time."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection = store._db
    connection.set_progress_handler(count, 100)
    try:
        call()
    finally:
        connection.set_progress_handler(None, 0)
    return steps


def test_publishing_reads_what_it_publishes_not_the_whole_store(tmp_path: Path) -> None:
    """The publish queries cost the same over 600 and 6,000 stored entries (flat at scale)."""
    costs = []
    for per_source in (30, 300):
        s = Store.open(tmp_path / f"{per_source}.sqlite3")
        sources = [source(f"s{n}") for n in range(20)]
        s.sync_sources(sources, NOW)
        for n, src in enumerate(sources):
            s.store_entries(
                src.name,
                [
                    entry(f"{src.name}-{k}", f"Story {n}/{k}", published=NOW - timedelta(hours=k))
                    for k in range(per_source)
                ],
                NOW,
            )
        names = [src.name for src in sources]
        since = NOW - timedelta(days=365)
        recent = s.recent_entries(names, since, 50)
        assert len(recent) == 50
        costs.append(
            (
                _vm_steps(s, lambda: s.recent_entries(names, since, 50)),  # noqa: B023
                _vm_steps(s, lambda: s.earlier_copies(names, recent, NOW - timedelta(hours=2))),  # noqa: B023
            )
        )
        s.close()
    (recent_small, earlier_small), (recent_large, earlier_large) = costs
    assert recent_large < 2 * recent_small + 10, costs
    assert earlier_large < 2 * earlier_small + 10, costs

"""What only the SQLite store does: its file, WAL, and upgrades from older schema versions.

Everything the two stores share is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.errors import StorageError
from aggregator.poll import SYNC_STEP, store_entries, sync_sources, sync_sources_in_steps
from aggregator.store import rows, sqlite_schema
from aggregator.store.adapter import AsyncStore
from aggregator.store.api import default_backfills
from aggregator.store.records import FeedMeta, PollOutcome, PollRecord
from aggregator.store.sqlite import SCHEMA_VERSION, SqliteStore
from aggregator.update import story_keys_of
from tests.storedata import NOW, count_entries, entry, remembered, source


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested" / "aggregator.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(db_path)
    try:
        yield s
    finally:
        s.close()


def test_open_creates_directories_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    s = SqliteStore.open(db_path)
    try:
        assert db_path.is_file()
        assert s.schema_version == SCHEMA_VERSION
        assert count_entries(s) == 0
    finally:
        s.close()


def test_store_uses_wal(store: SqliteStore, db_path: Path) -> None:
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        other.close()


def test_unreadable_file_is_a_storage_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StorageError):
        SqliteStore.open(db_path)


def test_upgrading_an_older_store_keeps_its_data_and_fills_story_keys(db_path: Path) -> None:
    """A store left at schema 3 (before politeness and story keys) opens at the current one."""
    db_path.parent.mkdir(parents=True)
    old = SqliteStore(sqlite3.connect(db_path, isolation_level=None))
    try:
        sqlite_schema.migrate(old._db, old._transaction, None, sqlite_schema.MIGRATIONS[:3])
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
        old._db.close()
    upgraded = SqliteStore.open(db_path, backfills=default_backfills())  # as open_store does
    try:
        assert upgraded.schema_version == SCHEMA_VERSION
        keys = upgraded._db.execute("SELECT link_key, title_key FROM entries").fetchone()
        assert keys == ("//e.example/s", "a story title long enough")
        assert count_entries(upgraded, "a") == 1
        state = upgraded.source_state("a")
        assert state is not None and state.retry_after is None and state.moved_to is None
    finally:
        upgraded.close()


def _vm_steps(store: SqliteStore, call: Callable[[], object]) -> int:
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
        s = SqliteStore.open(tmp_path / f"{per_source}.sqlite3")
        sources = [source(f"s{n}") for n in range(20)]
        sync_sources(s, sources, NOW)
        for n, src in enumerate(sources):
            store_entries(
                s,
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
        before = NOW - timedelta(hours=2)
        keys = story_keys_of(recent)
        assert len(recent) == 50
        costs.append(
            (
                _vm_steps(s, lambda: s.recent_entries(names, since, 50)),  # noqa: B023
                _vm_steps(s, lambda: s.earlier_copies(names, keys, before, 100)),  # noqa: B023
            )
        )
        s.close()
    (recent_small, earlier_small), (recent_large, earlier_large) = costs
    assert recent_large < 2 * recent_small + 10, costs
    assert earlier_large < 2 * earlier_small + 10, costs


def _statements_of(store: SqliteStore, call: Callable[[], object]) -> list[str]:
    """Each statement `call` runs, as SQLite expands it (values bound)."""
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        call()
    finally:
        store._db.set_trace_callback(None)
    return statements


def _plan_of(store: SqliteStore, call: Callable[[], object]) -> list[str]:
    """The query plan of each statement `call` runs."""
    return [
        row[3]
        for sql in _statements_of(store, call)
        if sql.lstrip().upper().startswith(("SELECT", "WITH"))
        for row in store._db.execute("EXPLAIN QUERY PLAN " + sql)
    ]


def test_a_days_copies_are_found_in_the_key_indexes_without_reading_the_days_rows(
    store: SqliteStore,
) -> None:
    """`copies_outside` tells a day's own entries from copies in the key indexes, which
    carry each entry's place: only the day's keys and the copies' rows are read (through
    the key of each day's entry, WITHOUT ROWID's search of the primary key cost 60 ms a
    day of 3,500 entries), and never a walk of the dates or of the whole table."""
    sources = [source("a"), source("b")]
    sync_sources(store, sources, NOW)
    for src, hours in (("a", 0), ("b", 30)):  # b tells a's stories 30 hours earlier
        story = [
            entry(f"{src}-{k}", f"Story {k}", published=NOW - timedelta(hours=k + hours))
            for k in range(60)
        ]
        store_entries(store, src, story, NOW)
    start, end = NOW - timedelta(days=1), NOW  # a-1 to a-24 inside
    copies = store.copies_outside(["a", "b"], start, end, 100)
    assert sorted(e.entry_id for e in copies) == sorted(f"b-{k}" for k in range(1, 25))
    plan = _plan_of(store, lambda: store.copies_outside(["a", "b"], start, end, 100))
    assert any("COVERING INDEX entries_by_link_key_date" in step for step in plan), plan
    assert any("COVERING INDEX entries_by_title_key_date" in step for step in plan), plan
    assert not any(step.startswith("SCAN entries") for step in plan), plan
    assert not any("entries_by_date" in step for step in plan), plan


def test_a_day_is_read_by_date_for_many_sources_and_by_source_for_a_few(
    store: SqliteStore,
) -> None:
    """`entries_between`, as `recent_entries`: the day walked by date (stopping at the
    limit) for a publication of all sources; each source's own rows for a channel's few."""
    sync_sources(store, [source("a"), source("b")], NOW)
    for name in ("a", "b"):
        day = [entry(f"{name}-{k}", published=NOW - timedelta(hours=k)) for k in range(30)]
        store_entries(store, name, day, NOW)
    start, end = NOW - timedelta(days=1), NOW
    walked = store.entries_between(["a", "b"], start, end, 10)
    searched = store.entries_between(["a", "b"], start, end, 10, by_source=True)
    assert walked == searched and len(walked) == 10
    plan = _plan_of(store, lambda: store.entries_between(["a", "b"], start, end, 10))
    assert any("INDEX entries_by_date" in step for step in plan), plan
    plan = _plan_of(store, lambda: store.entries_between(["a"], start, end, 10, by_source=True))
    assert any("INDEX entries_by_source_date" in step for step in plan), plan


def test_publish_lock_is_a_file_beside_the_database(store: SqliteStore, db_path: Path) -> None:
    lock = db_path.with_name(db_path.name + "-publish.lock")
    with store.publish_lock():
        assert lock.is_file()
    with store.publish_lock():  # released on the way out, so it can be taken again
        pass


def test_the_claim_columns_come_with_schema_7(db_path: Path) -> None:
    """A store at schema 6 gains the lease columns and the trigger that ends a claim."""
    db_path.parent.mkdir(parents=True)
    old = SqliteStore(sqlite3.connect(db_path, isolation_level=None))
    try:
        sqlite_schema.migrate(old._db, old._transaction, None, sqlite_schema.MIGRATIONS[:6])
        old._db.execute(
            "INSERT INTO sources (name, url, added) VALUES ('a', 'u', ?)", (NOW.isoformat(),)
        )
    finally:
        old._db.close()
    upgraded = SqliteStore.open(db_path)
    try:
        assert upgraded.schema_version == SCHEMA_VERSION
        triggers = upgraded._db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert [t[0] for t in triggers] == ["sources_release_claim"]
        assert upgraded.claim_due(["a"], NOW, "one", timedelta(minutes=5)) == ["a"]
    finally:
        upgraded.close()


def test_upgrading_moves_the_remembered_items_out_of_the_sources_rows(db_path: Path) -> None:
    """A store at schema 15 kept the items of a source's last parse in the source's row;
    from 16 they are rows of `source_items`: still remembered, and the rows hold them no
    more (the column stays, for a daemon of the version before during an upgrade)."""
    db_path.parent.mkdir(parents=True)
    old = SqliteStore(sqlite3.connect(db_path, isolation_level=None))
    memory = remembered(1)
    try:
        sqlite_schema.migrate(old._db, old._transaction, None, sqlite_schema.MIGRATIONS[:15])
        old._db.executemany(
            "INSERT INTO sources (name, url, added, items) VALUES (?, ?, ?, ?)",
            [("a", "https://a.example/f", NOW.isoformat(), rows.items_text(memory)),
             ("b", "https://b.example/f", NOW.isoformat(), None)],
        )  # fmt: skip
    finally:
        old._db.close()
    upgraded = SqliteStore.open(db_path)
    try:
        assert upgraded.schema_version == SCHEMA_VERSION
        assert upgraded.remembered_items("a") == memory
        assert upgraded.remembered_items("b") is None
        states = upgraded.poll_states(["a", "b"])
        assert states["a"].remembers and not states["b"].remembers
        left = upgraded._db.execute("SELECT count(*) FROM sources WHERE items IS NOT NULL")
        assert left.fetchone()[0] == 0
        # What a daemon of schema 15 reads and writes of them still runs.
        upgraded._db.execute("UPDATE sources SET items = ? WHERE name = 'b'", ("[]",))
        assert upgraded._db.execute("SELECT items IS NOT NULL FROM sources WHERE name = 'b'")
    finally:
        upgraded.close()


def test_a_cycle_of_304s_writes_a_few_pages_not_one_per_source(store: SqliteStore) -> None:
    """Each claim and each 304's record rewrites its source's row. The items a partial
    parse remembers (~4 KB for 50 items) are not in that row, or the rows would spread over
    a page or more each, written twice a poll (400 pages for these 200 sources when they
    were): 200 sources claimed and recorded write a few dozen pages."""
    names = [f"s{n:03}" for n in range(200)]
    sync_sources(store, [source(n) for n in names], NOW)
    feed = FeedMeta("A", None, None)
    store.record_polls(
        [
            PollRecord(n, NOW, PollOutcome.UPDATED, feed=feed, items=remembered(i))
            for i, n in enumerate(names)
        ]
    )
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    later = NOW + timedelta(hours=1)
    assert store.claim_due(names, later, "one", timedelta(minutes=5)) == names
    store.record_polls(
        [PollRecord(n, later, PollOutcome.NOT_MODIFIED, keep_tombstones=True) for n in names]
    )
    frames = store._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert frames < 60, f"{frames} pages written for 200 sources' claims and 304s"
    assert all(store.poll_states(names)[n].remembers for n in names)


def test_a_claim_reads_the_due_order_from_the_index(store: SqliteStore) -> None:
    """A daemon passes every configured source and claims what it has room for: the due
    ones in next-poll order, then by name, never-polled first. With only `next_poll` in the
    index, SQLite sorted all never-polled sources by name for every claim (20 ms a claim
    for 50,000 just added, on the event loop); the order now comes from the index."""
    names = [f"s{n:03}" for n in range(100)]
    sync_sources(store, [source(n) for n in names], NOW)
    store.record_polls(
        [PollRecord(n, NOW, PollOutcome.NOT_MODIFIED) for n in names[50:]]  # due in 15 min
    )
    later = NOW + timedelta(hours=1)

    def claim() -> list[str]:
        return store.claim_due(names, later, "one", timedelta(minutes=5), limit=60)

    plan = _plan_of(store, claim)
    assert any("sources_by_next_poll_name" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
    store.release_all("one")
    assert claim() == names[:60]


def test_syncing_the_same_sources_again_writes_nothing(store: SqliteStore) -> None:
    """A reload that changes one source of many upserted every source's row (0.3 s for
    50,000, on the event loop): now only new sources and changed URLs are written."""
    sources = [source(f"s{n:03}") for n in range(300)]
    sync_sources(store, sources, NOW)

    def writes(call: Callable[[], object]) -> list[str]:
        statements = _statements_of(store, call)
        return [s for s in statements if s.lstrip().upper().startswith(("INSERT", "DELETE"))]

    assert writes(lambda: sync_sources(store, sources, NOW + timedelta(minutes=1))) == []
    moved = [*sources[:-1], source("s299", url="https://elsewhere.example.org/feed.xml")]
    written = writes(lambda: sync_sources(store, moved, NOW + timedelta(minutes=2)))
    assert [w.split()[0].upper() for w in written] == ["DELETE", "INSERT"], written
    state = store.source_state("s299")
    assert state is not None and state.url == "https://elsewhere.example.org/feed.xml"


def test_many_sources_are_synced_in_steps_with_the_loop_let_run_between(
    store: SqliteStore,
) -> None:
    """SQLite's calls are made on the event loop: a configuration of 50,000 sources synced
    in one call held it (every fetch, every reader's request) for 0.6 s. The loop runs
    between steps of `SYNC_STEP` sources, each whole."""
    sources = [source(f"s{n:05}") for n in range(2 * SYNC_STEP + 7)]
    seen: list[int] = []

    async def main() -> None:
        syncing = asyncio.create_task(sync_sources_in_steps(AsyncStore(store), sources, NOW))
        while not syncing.done():
            seen.append(store._db.execute("SELECT count(*) FROM sources").fetchone()[0])
            await asyncio.sleep(0)
        await syncing

    asyncio.run(main())
    assert {SYNC_STEP, 2 * SYNC_STEP} <= set(seen), sorted(set(seen))
    assert len(store.source_states()) == len(sources)

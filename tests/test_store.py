"""What only the SQLite store does: its file, WAL, and upgrades from older schema versions.

Everything the two stores share is in test_store_contract.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import aggregator.store as store_module
from aggregator.errors import StorageError
from aggregator.store import SCHEMA_VERSION, Store
from tests.storedata import NOW


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


def test_unreadable_file_is_a_storage_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StorageError):
        Store.open(db_path)


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


def test_publish_lock_is_a_file_beside_the_database(store: Store, db_path: Path) -> None:
    lock = db_path.with_name(db_path.name + "-publish.lock")
    with store.publish_lock():
        assert lock.is_file()
    with store.publish_lock():  # released on the way out, so it can be taken again
        pass


def test_the_claim_columns_come_with_schema_7(db_path: Path) -> None:
    """A store at schema 6 gains the lease columns and the trigger that ends a claim."""
    db_path.parent.mkdir(parents=True)
    old = Store.__new__(Store)
    old._db = sqlite3.connect(db_path, isolation_level=None)
    saved = store_module._MIGRATIONS
    try:
        store_module._MIGRATIONS = saved[:6]
        store_module.SCHEMA_VERSION = 6
        Store._migrate(old)
        old._db.execute(
            "INSERT INTO sources (name, url, added) VALUES ('a', 'u', ?)", (NOW.isoformat(),)
        )
    finally:
        store_module._MIGRATIONS = saved
        store_module.SCHEMA_VERSION = len(saved)
        old._db.close()
    upgraded = Store.open(db_path)
    try:
        assert upgraded.schema_version == SCHEMA_VERSION
        triggers = upgraded._db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert [t[0] for t in triggers] == ["sources_release_claim"]
        assert upgraded.claim_due(["a"], NOW, "one", timedelta(minutes=5)) == ["a"]
    finally:
        upgraded.close()

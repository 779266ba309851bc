"""One body of store tests, run against every implementation of `StoreAPI`.

Each test takes `store` (a fresh, empty store) and, where it needs more connections to the
same data, `open_again()`; the `backend` parameter says which database holds them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from aggregator import store as sqlite_store
from aggregator import store_pg
from aggregator.errors import StorageError
from aggregator.store_api import StoreAPI, open_store
from aggregator.types import Validators
from tests.storedata import NOW, source

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


# -- schema --------------------------------------------------------------------------------


def test_a_new_store_is_at_the_latest_schema_and_empty(store: StoreAPI, backend: Backend) -> None:
    assert store.schema_version == backend.latest
    assert store.count_entries() == 0
    assert store.source_states() == []
    assert store.first_added() is None
    store.ping()
    store.checkpoint()


def test_reopening_migrates_nothing(backend: Backend) -> None:
    first = backend.open()
    first.sync_sources([source("a")], NOW)
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


# -- claims --------------------------------------------------------------------------------


def test_claim_takes_due_sources_in_due_order(store: StoreAPI) -> None:
    names = ["never", "early", "late", "future", "gone"]
    store.sync_sources([source(n) for n in names], NOW)
    store.record_success("early", Validators(), NOW, "x", next_poll=NOW - timedelta(hours=2))
    store.record_success("late", Validators(), NOW, "x", next_poll=NOW - timedelta(hours=1))
    store.record_success("future", Validators(), NOW, "x", next_poll=NOW + timedelta(hours=1))
    store.disable("gone", "HTTP 410 Gone", NOW)

    assert store.claim_due(names, NOW, "daemon-1", LEASE) == ["never", "early", "late"]
    assert store.claim_due(names, NOW, "daemon-2", LEASE) == []
    # The claimer itself does not get them twice either: a slow tick must not overlap the next.
    assert store.claim_due(names, NOW, "daemon-1", LEASE) == []


def test_claim_only_among_the_names_given_and_up_to_the_limit(store: StoreAPI) -> None:
    store.sync_sources([source(n) for n in "abcde"], NOW)
    assert store.claim_due(["e", "a", "c", "zz"], NOW, "one", LEASE, limit=2) == ["a", "c"]
    assert store.claim_due(list("abcde"), NOW, "two", LEASE, limit=2) == ["b", "d"]
    assert store.claim_due(list("abcde"), NOW, "three", LEASE) == ["e"]
    assert store.claim_due([], NOW, "four", LEASE) == []


def test_an_expired_lease_can_be_claimed_by_another_owner(store: StoreAPI) -> None:
    store.sync_sources([source("a")], NOW)
    assert store.claim_due(["a"], NOW, "dead-daemon", LEASE) == ["a"]
    assert store.claim_due(["a"], NOW + LEASE - timedelta(microseconds=1), "other", LEASE) == []
    assert store.claim_due(["a"], NOW + LEASE, "other", LEASE) == ["a"]
    # The new lease runs from the new claim.
    assert store.claim_due(["a"], NOW + LEASE + timedelta(minutes=1), "third", LEASE) == []


def test_release_frees_only_the_owners_claim(store: StoreAPI) -> None:
    store.sync_sources([source("a")], NOW)
    assert store.claim_due(["a"], NOW, "one", LEASE) == ["a"]
    store.release("a", "two")  # not its claim: nothing happens
    assert store.claim_due(["a"], NOW, "two", LEASE) == []
    store.release("a", "one")
    assert store.claim_due(["a"], NOW, "two", LEASE) == ["a"]
    store.release("nobody-knows-me", "two")


@pytest.mark.parametrize("outcome", ["success", "failure", "disable"])
def test_recording_the_poll_releases_the_claim(store: StoreAPI, outcome: str) -> None:
    store.sync_sources([source("a")], NOW)
    assert store.claim_due(["a"], NOW, "one", LEASE) == ["a"]
    later = NOW + timedelta(seconds=3)
    if outcome == "success":
        store.record_success("a", Validators(), later, "updated", next_poll=later)
    elif outcome == "failure":
        store.record_failure("a", "HTTP 500", later, later)
    else:
        store.disable("a", "HTTP 410 Gone", later)
        assert store.claim_due(["a"], later, "two", LEASE) == []  # disabled: never due
        store.sync_sources([source("a", url="https://b.example.org/")], later)  # fixed
    assert store.claim_due(["a"], later, "two", LEASE) == ["a"]


def test_concurrent_claimers_get_disjoint_sets_covering_all_due_sources(
    store: StoreAPI, open_again: Callable[[], StoreAPI]
) -> None:
    names = [f"s{n:03}" for n in range(60)]
    store.sync_sources([source(n) for n in names], NOW)
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

"""One body of store tests, run against every implementation of `StoreAPI`.

Each test takes `store` (a fresh, empty store) and, where it needs more connections to the
same data, `open_again()`; the `backend` parameter says which database holds them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import SourceConfig
from aggregator.store import Store
from aggregator.store_api import StoreAPI
from aggregator.types import Validators

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def source(name: str) -> SourceConfig:
    return SourceConfig(
        name=name,
        url=f"https://{name}.example.org/feed.xml",
        title=None,
        interval=timedelta(minutes=15),
        timezone="UTC",
        tags=(),
    )


@dataclass(frozen=True)
class Backend:
    """A database for one test, and how to open (another) store on it."""

    name: str
    open: Callable[[], StoreAPI]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = tmp_path / "state" / "aggregator.sqlite3"
    return Backend("sqlite", lambda: Store.open(path))


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
        store.sync_sources([replace(source("a"), url="https://b.example.org/")], later)  # fixed
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

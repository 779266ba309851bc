"""The hub's subscriptions in the store, SQLite and PostgreSQL alike: leases, deliveries
owed and claimed (each by one daemon), retries, expiry."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.store import StoreAPI, open_store
from aggregator.store.hub import ACTIVE, RETRYING, HubDelivery, HubSubscription

NOW = datetime(2025, 7, 13, 12, 0, 0, 123456, tzinfo=UTC)
DAY = timedelta(days=1)
TOPIC = "https://digest.example.org/atom.xml"
OTHER = "https://digest.example.org/rss.xml"


@pytest.fixture(params=["sqlite", "postgresql"])
def open_again(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StoreAPI]]:
    """Open stores on one fresh database (as daemons sharing it would); closed at the end."""
    target: str | Path = tmp_path / "state" / "aggregator.db"
    if request.param == "postgresql":
        target = request.getfixturevalue("pg_url")
    opened: list[StoreAPI] = []

    def open_one() -> StoreAPI:
        opened.append(open_store(target))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_again: Callable[[], StoreAPI]) -> StoreAPI:
    return open_again()


def _subscribe(store: StoreAPI, callback: str, topic: str = TOPIC, **kw: object) -> None:
    secret = kw.get("secret", "s3cret")
    lease_end = kw.get("lease_end", NOW + DAY)
    assert isinstance(secret, str | None) and isinstance(lease_end, datetime)
    store.hub_subscribe(HubSubscription(topic, callback, secret, lease_end), NOW)


def _claim(store: StoreAPI, at: datetime = NOW, owner: str = "a", limit: int = 100):
    return store.hub_claim(at, owner, at + timedelta(minutes=1), limit)


def test_a_subscription_is_stored_and_renewed_in_place(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    _subscribe(store, "https://r.example/1", secret="new", lease_end=NOW + 2 * DAY)
    _subscribe(store, "https://r.example/2", secret=None)
    [first, second] = store.hub_subscribers()
    assert (first.callback, first.lease_end, first.state, first.pending) == (
        "https://r.example/1", NOW + 2 * DAY, ACTIVE, False
    )  # fmt: skip
    assert second.callback == "https://r.example/2"
    assert store.hub_subscriber_count(TOPIC, NOW) == 2
    assert store.hub_subscriber_count(TOPIC, NOW, "https://r.example/1") == 1  # a renewal's
    assert store.hub_subscriber_count(OTHER, NOW) == 0
    store.hub_want([TOPIC], NOW)
    secrets = {d.callback: d.secret for d in _claim(store)}
    assert secrets == {"https://r.example/1": "new", "https://r.example/2": None}


def test_a_new_subscriber_is_owed_nothing_until_its_topic_changes(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    assert _claim(store) == []
    assert store.hub_want([OTHER], NOW) == 0
    assert _claim(store) == []
    assert store.hub_want([TOPIC, TOPIC], NOW) == 1
    assert _claim(store) == [HubDelivery(TOPIC, "https://r.example/1", "s3cret", 1, 0)]


def test_a_claimed_delivery_is_nobody_elses_until_it_ends(
    open_again: Callable[[], StoreAPI],
) -> None:
    first, second = open_again(), open_again()
    for n in range(3):
        _subscribe(first, f"https://r.example/{n}")
    first.hub_want([TOPIC], NOW)
    claimed = _claim(first, limit=2)
    assert len(claimed) == 2
    rest = _claim(second, owner="b")
    assert [d.callback for d in rest] == ["https://r.example/2"]
    assert _claim(second, owner="b") == []
    # Daemons that died: their claims run out, and another takes the deliveries over.
    later = NOW + timedelta(minutes=2)
    assert len(_claim(open_again(), at=later, owner="c")) == 3


def test_a_delivered_change_is_owed_no_more(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    store.hub_want([TOPIC], NOW)
    [delivery] = _claim(store)
    store.hub_delivered(delivery, "a")
    assert _claim(store) == []
    [state] = store.hub_subscribers()
    assert (state.state, state.pending, state.failures) == (ACTIVE, False, 0)


def test_a_change_during_a_delivery_is_delivered_after_it(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    store.hub_want([TOPIC], NOW)
    [delivery] = _claim(store)
    store.hub_want([TOPIC], NOW)  # published again while the first delivery was going out
    assert _claim(store) == []  # one delivery at a time to one subscriber
    store.hub_delivered(delivery, "a")
    [again] = _claim(store)
    assert again.wanted == 2


def test_a_failed_delivery_waits_for_its_retry(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    _subscribe(store, "https://r.example/2")
    store.hub_want([TOPIC], NOW)
    deliveries = {d.callback: d for d in _claim(store)}
    retry_at = NOW + timedelta(minutes=1)
    store.hub_failed(deliveries["https://r.example/1"], "a", 1, retry_at)
    store.hub_delivered(deliveries["https://r.example/2"], "a")
    assert store.hub_states(NOW) == {ACTIVE: 1, RETRYING: 1}
    assert _claim(store) == []
    [retry] = _claim(store, at=retry_at)
    assert (retry.callback, retry.failures) == ("https://r.example/1", 1)
    failing = store.hub_subscribers()[0]
    assert (failing.state, failing.failures, failing.next_attempt) == (RETRYING, 1, retry_at)
    store.hub_delivered(retry, "a")  # arrived at last: the run of failures ends
    assert store.hub_states(NOW) == {ACTIVE: 2}
    assert store.hub_subscribers()[0].failures == 0


def test_an_outcome_from_a_daemon_whose_claim_was_taken_over_is_ignored(
    open_again: Callable[[], StoreAPI],
) -> None:
    first, second = open_again(), open_again()
    _subscribe(first, "https://r.example/1")
    first.hub_want([TOPIC], NOW)
    [stale] = _claim(first)
    [taken] = _claim(second, at=NOW + timedelta(minutes=2), owner="b")
    first.hub_failed(stale, "a", 1, NOW + timedelta(hours=1))
    assert second.hub_subscribers()[0].state == ACTIVE
    second.hub_delivered(taken, "b")
    assert second.hub_subscribers()[0].pending is False


def test_leases_end(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/short", lease_end=NOW + timedelta(seconds=1))
    _subscribe(store, "https://r.example/long")
    later = NOW + timedelta(seconds=1)
    assert store.hub_subscriber_count(TOPIC, later) == 1
    store.hub_want([TOPIC], later)
    assert [d.callback for d in _claim(store, at=later)] == ["https://r.example/long"]
    assert store.hub_states(later) == {ACTIVE: 1}
    assert store.hub_expire(later) == 1
    assert [s.callback for s in store.hub_subscribers()] == ["https://r.example/long"]


def test_unsubscribing_forgets(store: StoreAPI) -> None:
    _subscribe(store, "https://r.example/1")
    store.hub_unsubscribe(TOPIC, "https://r.example/1")
    store.hub_unsubscribe(TOPIC, "https://r.example/never")
    assert store.hub_subscribers() == []


def test_concurrent_claimers_share_the_deliveries_out(
    open_again: Callable[[], StoreAPI],
) -> None:
    """Four daemons claiming at once (threads, each its own store): every delivery goes to
    exactly one of them."""
    stores = [open_again() for _ in range(4)]
    for n in range(60):
        _subscribe(stores[0], f"https://r.example/{n:02}")
    stores[0].hub_want([TOPIC], NOW)
    got: dict[int, list[str]] = {}
    start = threading.Barrier(len(stores))

    def claim(index: int) -> None:
        start.wait()
        mine: list[str] = []
        while batch := _claim(stores[index], owner=str(index), limit=5):
            mine += [d.callback for d in batch]
        got[index] = mine

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [c for mine in got.values() for c in mine]
    assert sorted(claimed) == [f"https://r.example/{n:02}" for n in range(60)]

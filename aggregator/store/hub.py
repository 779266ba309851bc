"""The built-in WebSub hub's subscribers in the store: their records and their SQL, alike in
both back ends. It reads and writes rows and decides nothing: leases, retries and drops are
decided by `aggregator.hub.rules`.

A subscription (topic, callback) holds its secret and lease end. Deliveries are counted,
not queued: a publish that changed a topic bumps `wanted` on its live subscriptions; one is
due while `wanted` is ahead of `delivered` and its `next_attempt` (a retry's backoff) has
come. The document sent is always the topic's current one, so a subscriber that missed two
publishes gets the newest once. Claims, as for sources: a daemon delivering holds the row
(`claimed_by` until `claimed_until`), so daemons sharing a database deliver each once; a
claim left by a daemon that died runs out, and another takes the delivery over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

ACTIVE = "active"  # the last delivery (if any) arrived
RETRYING = "retrying"  # the last delivery failed; another is due at `next_attempt`
STATES = (ACTIVE, RETRYING)


@dataclass(frozen=True)
class HubSubscription:
    """In: a subscription whose intent its callback confirmed."""

    topic: str
    callback: str
    secret: str | None
    lease_end: datetime


@dataclass(frozen=True)
class HubDelivery:
    """Out: a delivery claimed for one daemon. `wanted`: which change it carries (handed
    back by `hub_delivered`); `failures`: in a row before this attempt."""

    topic: str
    callback: str
    secret: str | None
    wanted: int
    failures: int


@dataclass(frozen=True)
class HubSubscriberState:
    """Out: a subscriber as stored, for the operator and for tests."""

    topic: str
    callback: str
    state: str
    lease_end: datetime
    failures: int
    next_attempt: datetime | None
    pending: bool  # a change is not delivered yet


class HubStore(Protocol):
    """The hub's part of `StoreAPI`."""

    def hub_subscribe(self, subscription: HubSubscription, now: datetime) -> None:
        """Add a verified subscription, or renew one (its new secret and lease end)."""
        ...

    def hub_unsubscribe(self, topic: str, callback: str) -> None:
        """Forget a subscription (unsubscribed, or dropped after failing)."""
        ...

    def hub_subscriber_count(self, topic: str, now: datetime, besides: str = "") -> int:
        """Live subscriptions (lease not ended at `now`) to `topic`, but for the callback
        `besides` (whose renewal must not count against the cap)."""
        ...

    def hub_want(self, topics: Iterable[str], now: datetime) -> int:
        """A publish changed `topics`: each live subscription to them is owed a delivery."""
        ...

    def hub_claim(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[HubDelivery]:
        """Claim for `owner` until `until` at most `limit` due deliveries nobody holds."""
        ...

    def hub_delivered(self, delivery: HubDelivery, owner: str) -> None:
        """`delivery` arrived: the subscriber is active, owed nothing older, unclaimed."""
        ...

    def hub_failed(
        self, delivery: HubDelivery, owner: str, failures: int, next_attempt: datetime
    ) -> None:
        """`delivery` failed: `failures` in a row now, the next try at `next_attempt`."""
        ...

    def hub_expire(self, now: datetime) -> int:
        """Delete the subscriptions whose lease has ended by `now`; how many."""
        ...

    def hub_states(self, now: datetime) -> dict[str, int]:
        """Live subscriptions by state."""
        ...

    def hub_subscribers(self) -> list[HubSubscriberState]:
        """Every stored subscription, by topic and callback."""
        ...


_DUE = """
    wanted > delivered AND lease_end > ?
    AND (next_attempt IS NULL OR next_attempt <= ?)
    AND (claimed_until IS NULL OR claimed_until <= ?)
"""


class HubStatements:
    """`HubStore` for a back end with `SharedStatements`' primitives (mixed in beside it)."""

    def _sql(self, text: str) -> str:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _apply(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> list[int]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _schedule_time(self, value: datetime) -> Any:
        raise NotImplementedError

    def _read_time(self, value: Any) -> datetime | None:
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence[Any]) -> int:
        return self._apply([(self._sql(sql), [params])])[0]

    def hub_subscribe(self, subscription: HubSubscription, now: datetime) -> None:
        s = subscription
        self._one(
            """
            INSERT INTO hub_subscriptions (topic, callback, secret, lease_end, created)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (topic, callback) DO UPDATE SET
                secret = excluded.secret, lease_end = excluded.lease_end
            """,
            (s.topic, s.callback, s.secret, self._schedule_time(s.lease_end),
             self._schedule_time(now)),
        )  # fmt: skip

    def hub_unsubscribe(self, topic: str, callback: str) -> None:
        self._one(
            "DELETE FROM hub_subscriptions WHERE topic = ? AND callback = ?", (topic, callback)
        )

    def hub_subscriber_count(self, topic: str, now: datetime, besides: str = "") -> int:
        found = self._query(
            self._sql(
                "SELECT count(*) FROM hub_subscriptions "
                "WHERE topic = ? AND lease_end > ? AND callback <> ?"
            ),
            (topic, self._schedule_time(now), besides),
        )
        return int(found[0][0])

    def hub_want(self, topics: Iterable[str], now: datetime) -> int:
        at = self._schedule_time(now)
        wanted = [(topic, at) for topic in sorted(set(topics))]
        if not wanted:
            return 0
        sql = "UPDATE hub_subscriptions SET wanted = wanted + 1 WHERE topic = ? AND lease_end > ?"
        return self._apply([(self._sql(sql), wanted)])[0]

    def hub_claim(
        self, now: datetime, owner: str, until: datetime, limit: int
    ) -> list[HubDelivery]:
        """Pick the due rows, then claim each with an update that checks it is still free:
        a concurrent claimer (PostgreSQL re-reads a row another transaction changed) gets
        nothing of a row already taken, so each delivery goes to one daemon."""
        at = self._schedule_time(now)
        claimed: list[HubDelivery] = []
        with self._transaction() as tx:
            candidates = tx.execute(
                self._sql(
                    f"""
                    SELECT topic, callback FROM hub_subscriptions WHERE {_DUE}
                    ORDER BY next_attempt IS NOT NULL, next_attempt, topic, callback
                    LIMIT ?
                    """
                ),
                (at, at, at, limit),
            ).fetchall()
            for topic, callback in candidates:
                updated = tx.execute(
                    self._sql(
                        f"""
                        UPDATE hub_subscriptions SET claimed_by = ?, claimed_until = ?
                        WHERE topic = ? AND callback = ? AND {_DUE}
                        RETURNING secret, wanted, failures
                        """
                    ),
                    (owner, self._schedule_time(until), topic, callback, at, at, at),
                ).fetchall()  # all: SQLite applies the update as the rows are read
                for secret, wanted, failures in updated:
                    claimed.append(HubDelivery(topic, callback, secret, int(wanted), int(failures)))
        return claimed

    def hub_delivered(self, delivery: HubDelivery, owner: str) -> None:
        self._one(
            f"""
            UPDATE hub_subscriptions SET
                delivered = CASE WHEN delivered < ? THEN ? ELSE delivered END,
                state = '{ACTIVE}', failures = 0, next_attempt = NULL,
                claimed_by = NULL, claimed_until = NULL
            WHERE topic = ? AND callback = ? AND claimed_by = ?
            """,
            (delivery.wanted, delivery.wanted, delivery.topic, delivery.callback, owner),
        )

    def hub_failed(
        self, delivery: HubDelivery, owner: str, failures: int, next_attempt: datetime
    ) -> None:
        self._one(
            f"""
            UPDATE hub_subscriptions SET state = '{RETRYING}', failures = ?, next_attempt = ?,
                claimed_by = NULL, claimed_until = NULL
            WHERE topic = ? AND callback = ? AND claimed_by = ?
            """,
            (failures, self._schedule_time(next_attempt), delivery.topic, delivery.callback,
             owner),
        )  # fmt: skip

    def hub_expire(self, now: datetime) -> int:
        return self._one(
            "DELETE FROM hub_subscriptions WHERE lease_end <= ?", (self._schedule_time(now),)
        )

    def hub_states(self, now: datetime) -> dict[str, int]:
        found = self._query(
            self._sql(
                "SELECT state, count(*) FROM hub_subscriptions WHERE lease_end > ? GROUP BY state"
            ),
            (self._schedule_time(now),),
        )
        return {str(state): int(count) for state, count in found}

    def hub_subscribers(self) -> list[HubSubscriberState]:
        found = self._query(
            """
            SELECT topic, callback, state, lease_end, failures, next_attempt,
                wanted > delivered
            FROM hub_subscriptions ORDER BY topic, callback
            """
        )
        return [
            HubSubscriberState(
                topic=str(topic),
                callback=str(callback),
                state=str(state),
                lease_end=_aware(self._read_time(lease_end)),
                failures=int(failures),
                next_attempt=self._read_time(next_attempt),
                pending=bool(pending),
            )
            for topic, callback, state, lease_end, failures, next_attempt, pending in found
        ]


def _aware(value: datetime | None) -> datetime:
    """A NOT NULL column's time."""
    if value is None:
        raise ValueError("a NOT NULL time column held NULL")
    return value

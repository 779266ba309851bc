"""What a WebSub subscription needs next, and what a hub's request to the callback is
answered. Pure: functions of the stored subscription, what a poll learned, and now.

- A hub found (or another hub, or another topic): subscribe anew (new token, new secret).
- A verified subscription is renewed at `RENEW_AT` of its lease, by the poll the safety-net
  schedule (`push_schedule`) puts there; a renewal the hub has not verified when the lease
  ends lapses (`Expire`), and the source is polled on its own schedule again.
- A subscription pending, denied, expired or failed is asked for again after `RETRY_AFTER`.
- A feed read that names no hub, or a source whose URL changed: unsubscribe.
- Verification of intent (§5.3) is answered only for what was asked: this token, this
  topic, `subscribe` while pending or renewing, `unsubscribe` while unsubscribing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aggregator.policy import Push
from aggregator.store.records import PushState, Subscription
from aggregator.websub.discovery import Discovery, link_header_links

RENEW_AT = 0.85  # of the lease: the renewal goes out with 15% of it left
RETRY_AFTER = timedelta(hours=1)
MAX_LEASE = timedelta(days=365)  # a hub granting more is taken at this
CHALLENGE_LIMIT = 1_024  # characters of a hub.challenge echoed back
REASON_LIMIT = 300  # characters of a hub.reason kept
_CHALLENGE = re.compile(r"[\x21-\x7e]{1,1024}")  # printable ASCII, no spaces
_LEASE = re.compile(r"[0-9]{1,12}")
# States in which the hub delivers to us.
_PUSHED = (PushState.ACTIVE, PushState.RENEWING)
_ASKED = (PushState.PENDING, PushState.RENEWING)
_RETRIED = (PushState.PENDING, PushState.DENIED, PushState.EXPIRED, PushState.FAILED)


@dataclass(frozen=True)
class Subscribe:
    """Ask `hub` for a new subscription to `topic` (a new token and secret)."""

    hub: str
    topic: str


@dataclass(frozen=True)
class Renew:
    """Ask the hub again for the subscription as it is (same token and secret)."""


@dataclass(frozen=True)
class Expire:
    """The lease ended unrenewed: the subscription is over; poll on the source's schedule."""


@dataclass(frozen=True)
class Unsubscribe:
    """Ask the hub to end the subscription."""


Step = Subscribe | Renew | Expire | Unsubscribe


def is_pushed(sub: Subscription | None, now: datetime) -> bool:
    """Whether the hub delivers to us now: verified, and its lease not over."""
    return (
        sub is not None
        and sub.state in _PUSHED
        and sub.lease_expires is not None
        and now < sub.lease_expires
    )


def renew_at(sub: Subscription) -> datetime | None:
    """When a verified subscription is to be renewed: at `RENEW_AT` of its lease."""
    if sub.lease_expires is None or sub.lease_seconds is None:
        return None
    return sub.lease_expires - timedelta(seconds=sub.lease_seconds * (1 - RENEW_AT))


def push_schedule(sub: Subscription | None, interval: timedelta, now: datetime) -> Push | None:
    """The safety-net schedule while pushed to (`interval`: `[websub] poll_interval`), with
    the poll that renews the subscription (or sees its renewal lapse) due in time."""
    if sub is None or not is_pushed(sub, now):
        return None
    assert sub.lease_expires is not None
    due = renew_at(sub) if sub.state is PushState.ACTIVE else None
    return Push(interval, due or sub.lease_expires)


def next_step(
    sub: Subscription | None, found: Discovery | None, source_url: str, now: datetime
) -> Step | None:
    """What to do after a poll of the source (configured at `source_url`) that learned
    `found` (None: nothing; `Discovery(None)`: the feed names no hub)."""
    current = sub if sub is not None and sub.state is not PushState.UNSUBSCRIBING else None
    if current is not None and current.source_url != source_url:
        return Unsubscribe()
    if found is not None:
        if found.hub is None or found.topic is None:
            live = current is not None and current.state in (*_ASKED, PushState.ACTIVE)
            return Unsubscribe() if live else None
        if current is None or (found.hub, found.topic) != (current.hub, current.topic):
            return Subscribe(found.hub, found.topic)
    if current is None:
        return None
    return _lifecycle(current, now)


def _lifecycle(sub: Subscription, now: datetime) -> Step | None:
    """The same hub and topic: renew, lapse, or ask again after a failure."""
    if sub.state in _PUSHED and sub.lease_expires is not None and now >= sub.lease_expires:
        return Expire()
    renew = renew_at(sub)
    if sub.state is PushState.ACTIVE and renew is not None and now >= renew:
        return Renew()
    if sub.state in _RETRIED and now >= sub.requested + RETRY_AFTER:
        return Subscribe(sub.hub, sub.topic)
    return None


@dataclass(frozen=True)
class Verdict:
    """The answer to a hub's GET on the callback: `body` with 200, or 404 when None; the
    subscription as it is to be stored (None: unchanged), or deleted."""

    body: str | None
    update: Subscription | None = None
    delete: bool = False
    poll_now: bool = False  # denied: the source is polled on its own schedule from now

    @property
    def status(self) -> int:
        return 404 if self.body is None else 200


NOT_OURS = Verdict(None)


def verify_intent(
    sub: Subscription | None, query: Mapping[str, str], now: datetime, asked: timedelta
) -> Verdict:
    """Answer verification of intent (§5.3) or a denial (§5.2) for the subscription whose
    token was called (`sub`; None: no such token). `asked`: the lease we asked for, taken
    when the hub names none."""
    if sub is None or query.get("hub.topic") != sub.topic:
        return NOT_OURS
    mode = query.get("hub.mode")
    if mode == "denied":
        return _denied(sub, query.get("hub.reason"))
    challenge = query.get("hub.challenge") or ""
    if not _CHALLENGE.fullmatch(challenge):
        return NOT_OURS
    if mode == "subscribe" and sub.state in _ASKED:
        lease = _granted(query.get("hub.lease_seconds"), asked)
        active = replace(
            sub,
            state=PushState.ACTIVE,
            lease_seconds=int(lease.total_seconds()),
            lease_expires=now + lease,
            last_error=None,
        )
        return Verdict(challenge, update=active)
    if mode == "unsubscribe" and sub.state is PushState.UNSUBSCRIBING:
        return Verdict(challenge, delete=True)
    return NOT_OURS


def _denied(sub: Subscription, reason: str | None) -> Verdict:
    """The hub refused (or later revoked) what we asked for (§5.2)."""
    if sub.state not in (*_ASKED, PushState.ACTIVE):
        return NOT_OURS
    said = (reason or "no reason given")[:REASON_LIMIT]
    denied = replace(sub, state=PushState.DENIED, last_error=f"denied by the hub: {said}")
    return Verdict("", update=denied, poll_now=True)


def _granted(value: str | None, asked: timedelta) -> timedelta:
    """The lease a hub granted (`hub.lease_seconds`), within a second and `MAX_LEASE`."""
    if value is None or not _LEASE.fullmatch(value.strip()):
        return asked
    return min(max(timedelta(seconds=int(value.strip())), timedelta(seconds=1)), MAX_LEASE)


def push_refusal(sub: Subscription, link_header: str) -> str | None:
    """Why a content distribution to `sub`'s callback is not for it (before its signature
    is checked); None when it may be. A `rel="self"` naming another topic is refused."""
    if sub.state is PushState.UNSUBSCRIBING:
        return "the subscription is being ended"
    topics = [href for href, rels in link_header_links(link_header) if "self" in rels]
    if topics and sub.topic not in topics:
        return "for another topic"
    return None

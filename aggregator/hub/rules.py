"""What the hub decides: signatures, intent verified, a failed delivery's next step. Pure.

A failed delivery is tried again after `retry_delay`, doubling with each failure in a row
(at most `MAX_RETRY_DELAY`), and the subscriber is dropped at `max_failures` in a row, or at
once when its callback answers 410 Gone (§7: the subscription is over). A delivery that
arrives ends the run of failures.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.settings import WebsubSettings

MAX_RETRY_DELAY = timedelta(hours=1)


def signature(secret: str, body: bytes) -> str:
    """`X-Hub-Signature` of a delivery: `sha256=` and the HMAC of the body, hexadecimal."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def challenge_echoed(body: bytes, challenge: str) -> bool:
    """Whether a verification answer's body is the challenge (§5.3; surrounding whitespace,
    which some frameworks add, aside)."""
    return hmac.compare_digest(body.strip(), challenge.encode("ascii"))


@dataclass(frozen=True)
class Retry:
    """Try again at `at`; `failures` in a row so far."""

    at: datetime
    failures: int


@dataclass(frozen=True)
class Drop:
    """Forget the subscriber, for `reason`."""

    reason: str


def retry_delay(failures: int, base: timedelta) -> timedelta:
    """The wait after the `failures`-th failure in a row: base, 2 × base, 4 × base..."""
    doubling = min(max(failures, 1) - 1, 30)
    return min(base * (1 << doubling), max(MAX_RETRY_DELAY, base))


def after_failure(
    failures_before: int, websub: WebsubSettings, now: datetime, *, gone: bool = False
) -> Retry | Drop:
    """What follows a failed delivery: a retry, or the subscriber dropped."""
    if gone:
        return Drop("its callback answered 410 Gone")
    failures = failures_before + 1
    if failures >= websub.max_failures:
        return Drop(f"{failures} deliveries in a row failed")
    return Retry(now + retry_delay(failures, websub.retry_delay), failures)

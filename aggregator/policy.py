"""When to poll a source next. Pure: a function of the source's settings, its history and now.

The jitter is derived from the source's name and the poll time, not from a global random
generator, so it is reproducible in tests yet different for every source, which spreads
sources with the same interval apart instead of letting them fire together.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

JITTER = 0.1  # a poll may come up to 10% of the interval early or late
MAX_BACKOFF = timedelta(hours=24)


def spread(name: str, salt: str) -> float:
    """A stable pseudo-random number in [-1, 1) for `name` and `salt`."""
    digest = hashlib.blake2b(f"{name}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def next_poll(name: str, interval: timedelta, now: datetime, failures: int = 0) -> datetime:
    """The next poll after one that ended at `now`.

    On success: the interval, ± 10% jitter. After `failures` consecutive errors: the interval
    doubled per failure (capped at 24 h, never below the interval), with the same jitter, so a
    broken source is retried less and less often but never given up on.
    """
    base = delay(interval, failures)
    jitter = base * (JITTER * spread(name, now.isoformat()))
    return now + base + jitter


def delay(interval: timedelta, failures: int = 0) -> timedelta:
    """The wait before the next poll, before jitter: the interval, doubled per failure."""
    if failures <= 0:
        return interval
    return min(interval * (1 << min(failures, 20)), max(MAX_BACKOFF, interval))


def is_overdue_schedule(
    scheduled: datetime, last_polled: datetime, interval: timedelta, failures: int
) -> bool:
    """True when `scheduled` is later than the policy could give now (the interval shrank)."""
    return scheduled > last_polled + delay(interval, failures) * (1 + JITTER)

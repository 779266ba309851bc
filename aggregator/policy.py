"""When to poll a source next. Pure: a function of the source's settings, its history, what
the server said, and now.

- Success: the operator's interval plus up to 10% jitter, never less than the interval.
  Server hints (Cache-Control max-age, Expires, the feed's <ttl> or sy:updatePeriod) may
  lengthen it, never shorten it, up to a day.
- Errors: the interval doubled per consecutive failure, capped at a day, never given up.
- Retry-After (429/503): never asked again before then, capped at a day.
- Pushed to (an active WebSub subscription): the safety-net interval if it is longer,
  and never later than the poll the subscription's renewal needs, unless that comes
  sooner than the operator's interval (a hub granting leases of seconds must not have the
  source polled every few seconds: such a lease lapses instead).

The jitter is derived from the source's name and the poll time, not from a global random
generator, so it is reproducible in tests yet different for every source, which spreads
sources with the same interval apart instead of letting them fire together.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

JITTER = 0.1  # a poll comes up to 10% of the interval late, never early
MAX_BACKOFF = timedelta(hours=24)
MAX_HINT = timedelta(hours=24)  # how far a server's caching hints may push the next poll
MAX_RETRY_AFTER = timedelta(hours=24)
_DIGITS = re.compile(r"[0-9]{1,12}")  # str.isdigit() also accepts "²", which int() refuses
_MANY_DIGITS = re.compile(r"[0-9]{13,}")  # more seconds than a day's cap, by far
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]+)", re.IGNORECASE)
_MAX_MAX_AGE = 10 * 365 * 86400  # a longer max-age is read as this
_PERIODS = {
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
    "monthly": timedelta(days=30),
    "yearly": timedelta(days=365),
}


@dataclass(frozen=True)
class ServerHints:
    """What the source's server or feed said about when to come back."""

    retry_after: datetime | None = None  # not before this (429/503 Retry-After)
    lifetime: timedelta | None = None  # content stays fresh this long (cache headers, <ttl>)


NO_HINTS = ServerHints()


@dataclass(frozen=True)
class Push:
    """A source a WebSub hub pushes to: polled only as a safety net, every `interval` (at
    least), and by `due_by`, when its subscription must be renewed or may lapse."""

    interval: timedelta
    due_by: datetime


def spread(name: str, salt: str) -> float:
    """A stable pseudo-random number in [-1, 1) for `name` and `salt`."""
    digest = hashlib.blake2b(f"{name}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def next_poll(
    name: str,
    interval: timedelta,
    now: datetime,
    failures: int = 0,
    hints: ServerHints = NO_HINTS,
    push: Push | None = None,
) -> datetime:
    """The next poll after one that ended at `now`."""
    own = interval
    if push is not None:
        interval = max(interval, push.interval)
    base = delay(interval, failures)
    if failures == 0 and hints.lifetime is not None and hints.lifetime > base:
        base = min(hints.lifetime, max(MAX_HINT, interval))
    when = now + base + base * (JITTER * (spread(name, now.isoformat()) + 1) / 2)
    if push is not None:
        when = min(when, max(push.due_by, now + own))
    if hints.retry_after is not None:
        when = max(when, min(hints.retry_after, now + MAX_RETRY_AFTER))
    return when


def delay(interval: timedelta, failures: int = 0) -> timedelta:
    """The wait before the next poll, before jitter: the interval, doubled per failure."""
    if failures <= 0:
        return interval
    return min(interval * (1 << min(failures, 20)), max(MAX_BACKOFF, interval))


def is_overdue_schedule(
    scheduled: datetime,
    last_polled: datetime,
    interval: timedelta,
    failures: int,
    hints: ServerHints = NO_HINTS,
) -> bool:
    """True when `scheduled` is later than the policy could give now (the interval shrank)."""
    latest = max(next_poll("", interval, last_polled, failures, hints), last_polled)
    return scheduled > last_polled + (latest - last_polled) * (1 + JITTER) + timedelta(seconds=1)


def _http_date(value: str) -> datetime | None:
    """An HTTP date in UTC; None for anything else. One UTC cannot hold ("Fri, 31 Dec 9999
    23:59:59 -2359" is past year 9999 there) is the last moment there is (or the first)."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # year 99999999999999999999
        return None
    try:
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        return (datetime.max if parsed.year > 1 else datetime.min).replace(tzinfo=UTC)


def retry_after(value: str | None, now: datetime) -> datetime | None:
    """A Retry-After header (seconds, or an HTTP date) as a moment, at most a day away."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if _DIGITS.fullmatch(text):
        return now + min(timedelta(seconds=int(text)), MAX_RETRY_AFTER)
    if _MANY_DIGITS.fullmatch(text):  # thousands of years: the most that is honoured
        return now + MAX_RETRY_AFTER
    moment = _http_date(text)
    return None if moment is None else min(moment, now + MAX_RETRY_AFTER)


def cache_lifetime(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """How long the response says it stays fresh: Cache-Control max-age, else Expires."""
    control = headers.get("cache-control", "")
    if "no-store" in control.lower() or "no-cache" in control.lower():
        return None
    if match := _MAX_AGE.search(control):
        digits = match.group(1)  # never int() of thousands of digits (Python refuses them)
        return timedelta(
            seconds=min(int(digits), _MAX_MAX_AGE) if len(digits) <= 12 else _MAX_MAX_AGE
        )
    expires = _http_date(headers["expires"]) if headers.get("expires") else None
    if expires is None:
        return None
    sent = _http_date(headers["date"]) if headers.get("date") else None
    lifetime = expires - (sent or now)
    return lifetime if lifetime > timedelta(0) else None


def feed_lifetime(
    ttl: str | None, update_period: str | None, update_frequency: str | None
) -> timedelta | None:
    """The feed's own hint: RSS <ttl> minutes, else sy:updatePeriod / sy:updateFrequency."""
    if ttl and _DIGITS.fullmatch(ttl.strip()) and int(ttl) > 0:
        return timedelta(minutes=min(int(ttl), 525600))
    period = _PERIODS.get((update_period or "").strip().lower())
    if period is None:
        return None
    frequency = update_frequency.strip() if update_frequency else "1"
    if _DIGITS.fullmatch(frequency) and int(frequency) > 0:
        return period / int(frequency)
    return period


def longest(*lifetimes: timedelta | None) -> timedelta | None:
    """The longest of several freshness hints (the most the server asked us to wait)."""
    known = [lifetime for lifetime in lifetimes if lifetime is not None]
    return max(known) if known else None

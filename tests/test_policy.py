"""The scheduler's pure part: when a source is polled next."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.policy import (
    JITTER,
    MAX_BACKOFF,
    MAX_HINT,
    MAX_RETRY_AFTER,
    ServerHints,
    cache_lifetime,
    feed_lifetime,
    next_poll,
    retry_after,
    spread,
)

names = st.text(min_size=1, max_size=30)
intervals = st.integers(min_value=1, max_value=7 * 86400).map(lambda s: timedelta(seconds=s))
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(names, intervals, moments, st.integers(min_value=0, max_value=100))
def test_next_poll_is_never_in_the_past_nor_sooner_than_the_interval(
    name: str, interval: timedelta, now: datetime, failures: int
) -> None:
    when = next_poll(name, interval, now, failures)
    assert when > now
    assert when >= now + interval


@settings(max_examples=300, deadline=None)
@given(names, intervals, moments, st.integers(min_value=1, max_value=100))
def test_failures_back_off_but_never_give_up(
    name: str, interval: timedelta, now: datetime, failures: int
) -> None:
    when = next_poll(name, interval, now, failures)
    cap = max(MAX_BACKOFF, interval)
    assert when <= now + cap * (1 + JITTER)
    assert when - now >= min(interval * 2, cap)


@given(names, intervals, moments)
def test_same_inputs_same_answer(name: str, interval: timedelta, now: datetime) -> None:
    assert next_poll(name, interval, now) == next_poll(name, interval, now)


def test_backoff_doubles_per_failure_up_to_a_day() -> None:
    now = datetime(2025, 7, 13, tzinfo=UTC)
    interval = timedelta(minutes=15)
    delays = [(next_poll("x", interval, now, f) - now) / interval for f in range(0, 9)]
    for failures, delay in enumerate(delays[:7]):
        assert 2**failures <= delay <= 2**failures * 1.1
    assert delays[8] <= 96 * 1.1  # 24 h / 15 min


def test_jitter_spreads_sources_with_the_same_interval() -> None:
    now = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    interval = timedelta(minutes=15)
    offsets = [
        (next_poll(f"source-{n}", interval, now) - now - interval).total_seconds()
        for n in range(1000)
    ]
    limit = interval.total_seconds() * JITTER
    assert all(0 <= o <= limit for o in offsets)  # late by up to 10%, never early
    # Spread over the whole jitter window, not bunched: 1000 sources fall in most seconds.
    assert len({round(o) for o in offsets}) > 80
    assert statistics.pstdev(offsets) > limit / 5
    assert abs(statistics.mean(offsets) - limit / 2) < limit / 10


def test_spread_is_uniform_enough() -> None:
    values = [spread(f"n{i}", "salt") for i in range(10000)]
    assert all(-1 <= v < 1 for v in values)
    deciles = [sum(1 for v in values if -1 + k * 0.2 <= v < -1 + (k + 1) * 0.2) for k in range(10)]
    assert min(deciles) > 800


hint_lifetimes = st.none() | st.integers(min_value=0, max_value=30 * 86400).map(
    lambda s: timedelta(seconds=s)
)
retry_delays = st.none() | st.integers(min_value=-3600, max_value=7 * 86400).map(
    lambda s: timedelta(seconds=s)
)


@settings(max_examples=400, deadline=None)
@given(
    names,
    intervals,
    moments,
    st.integers(min_value=0, max_value=40),
    hint_lifetimes,
    retry_delays,
)
def test_hints_never_shorten_never_exceed_the_cap_and_retry_after_holds(
    name: str,
    interval: timedelta,
    now: datetime,
    failures: int,
    lifetime: timedelta | None,
    retry: timedelta | None,
) -> None:
    wait = now + retry if retry is not None else None
    when = next_poll(
        name, interval, now, failures, ServerHints(retry_after=wait, lifetime=lifetime)
    )
    # Never sooner than the operator's interval (hints only lengthen).
    assert when >= now + interval
    # Retry-After is always respected, up to its cap.
    if wait is not None:
        assert when >= min(wait, now + MAX_RETRY_AFTER)
    # Never later than the cap: the longest of interval, backoff cap, hint cap, Retry-After cap.
    cap = max(interval, MAX_BACKOFF, MAX_HINT) * (1 + JITTER)
    assert when <= now + max(cap, MAX_RETRY_AFTER)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == now + timedelta(minutes=2)
    assert retry_after("Sun, 13 Jul 2025 13:00:00 GMT", now) == now + timedelta(hours=1)
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_cache_lifetime_from_headers() -> None:
    now = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    assert cache_lifetime({"cache-control": "public, max-age=3600"}, now) == timedelta(hours=1)
    assert cache_lifetime({"cache-control": "no-cache, max-age=3600"}, now) is None
    expires = {"expires": "Sun, 13 Jul 2025 14:00:00 GMT", "date": "Sun, 13 Jul 2025 12:00:00 GMT"}
    assert cache_lifetime(expires, now) == timedelta(hours=2)
    assert cache_lifetime({"expires": "0"}, now) is None
    assert cache_lifetime({}, now) is None


def test_feed_lifetime_from_ttl_or_syndication() -> None:
    assert feed_lifetime("60", None, None) == timedelta(hours=1)
    assert feed_lifetime(None, "hourly", "2") == timedelta(minutes=30)
    assert feed_lifetime(None, "daily", None) == timedelta(days=1)
    assert feed_lifetime("x", "never", None) is None


def test_an_http_date_no_calendar_holds_is_no_date() -> None:
    """A year of 20 digits made `email.utils` raise OverflowError, out of the poll."""
    now = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    huge = "Fri, 31 Dec 99999999999999999999 23:59:59 GMT"
    assert retry_after(huge, now) is None
    assert cache_lifetime({"expires": huge}, now) is None
    assert (
        cache_lifetime({"expires": "Fri, 31 Dec 2025 23:59:59 +99999999999999999999"}, now) is None
    )

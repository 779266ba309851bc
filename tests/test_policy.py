"""The scheduler's pure part: when a source is polled next."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.policy import JITTER, MAX_BACKOFF, next_poll, spread

names = st.text(min_size=1, max_size=30)
intervals = st.integers(min_value=1, max_value=7 * 86400).map(lambda s: timedelta(seconds=s))
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(names, intervals, moments, st.integers(min_value=0, max_value=100))
def test_next_poll_is_never_in_the_past_nor_sooner_than_interval_minus_jitter(
    name: str, interval: timedelta, now: datetime, failures: int
) -> None:
    when = next_poll(name, interval, now, failures)
    assert when > now
    assert when >= now + interval * (1 - JITTER)


@settings(max_examples=300, deadline=None)
@given(names, intervals, moments, st.integers(min_value=1, max_value=100))
def test_failures_back_off_but_never_give_up(
    name: str, interval: timedelta, now: datetime, failures: int
) -> None:
    when = next_poll(name, interval, now, failures)
    cap = max(MAX_BACKOFF, interval)
    assert when <= now + cap * (1 + JITTER)
    assert when - now >= min(interval * 2, cap) * (1 - JITTER)


@given(names, intervals, moments)
def test_same_inputs_same_answer(name: str, interval: timedelta, now: datetime) -> None:
    assert next_poll(name, interval, now) == next_poll(name, interval, now)


def test_backoff_doubles_per_failure_up_to_a_day() -> None:
    now = datetime(2025, 7, 13, tzinfo=UTC)
    interval = timedelta(minutes=15)
    delays = [(next_poll("x", interval, now, f) - now) / interval for f in range(0, 9)]
    for failures, delay in enumerate(delays[:7]):
        assert 2**failures * 0.9 <= delay <= 2**failures * 1.1
    assert delays[8] <= 96 * 1.1  # 24 h / 15 min


def test_jitter_spreads_sources_with_the_same_interval() -> None:
    now = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    interval = timedelta(minutes=15)
    offsets = [
        (next_poll(f"source-{n}", interval, now) - now - interval).total_seconds()
        for n in range(1000)
    ]
    limit = interval.total_seconds() * JITTER
    assert all(-limit <= o <= limit for o in offsets)
    # Spread over the whole jitter window, not bunched: 1000 sources fall in many seconds.
    assert len({round(o) for o in offsets}) > 150
    assert statistics.pstdev(offsets) > limit / 3
    assert abs(statistics.mean(offsets)) < limit / 10


def test_spread_is_uniform_enough() -> None:
    values = [spread(f"n{i}", "salt") for i in range(10000)]
    assert all(-1 <= v < 1 for v in values)
    deciles = [sum(1 for v in values if -1 + k * 0.2 <= v < -1 + (k + 1) * 0.2) for k in range(10)]
    assert min(deciles) > 800

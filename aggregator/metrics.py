"""Prometheus metrics (prometheus-client), one registry per process, `aggregator_` prefix."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The `_created` series double every counter's output and no dashboard here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """What the daemon counts; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._disabled: set[str] = set()  # the sources `disabled` has a sample for
        self.polls = Counter(
            "aggregator_polls",
            "Source polls, by outcome (updated, unchanged, not-modified, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.items_stored = Counter(
            "aggregator_items_stored", "New items stored.", registry=self.registry
        )
        self.items_parsed = Counter(
            "aggregator_feed_items",
            "Items of fetched documents: parsed, or reused (unchanged since the last parse, "
            "left unread by a partial parse).",
            ["how"],
            registry=self.registry,
        )
        self.publishes = Counter(
            "aggregator_publishes", "Publishes of the output files.", registry=self.registry
        )
        self.publish_seconds = Histogram(
            "aggregator_publish_duration_seconds",
            "Time to build and write the outputs.",
            registry=self.registry,
        )
        self.last_success = Gauge(
            "aggregator_source_last_success_timestamp_seconds",
            "When each source was last polled successfully (Unix time).",
            ["source"],
            registry=self.registry,
        )
        self.sources = Gauge(
            "aggregator_sources", "Sources in the configuration.", registry=self.registry
        )
        self.disabled = Gauge(
            "aggregator_source_disabled",
            "1 for a source disabled by HTTP 410 Gone (until its url changes).",
            ["source"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "aggregator_websub_pushes",
            "WebSub content distributions received, by result (valid, rejected).",
            ["result"],
            registry=self.registry,
        )
        for result in ("valid", "rejected"):
            self.pushes.labels(result=result)
        self.subscriptions = Gauge(
            "aggregator_websub_subscriptions",
            "WebSub subscriptions of the configured sources, by state.",
            ["state"],
            registry=self.registry,
        )
        self.websub_deliveries = Counter(
            "aggregator_websub_hub_deliveries",
            "Deliveries of changed feeds to WebSub subscribers, by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.websub_subscribers = Gauge(
            "aggregator_websub_hub_subscribers",
            "Live subscriptions to the feeds, by state (active, retrying).",
            ["state"],
            registry=self.registry,
        )
        self.websub_verifications = Counter(
            "aggregator_websub_hub_verifications",
            "Intent verifications of subscription requests, by outcome "
            "(confirmed, refused, failed).",
            ["outcome"],
            registry=self.registry,
        )

        self.loop_lag = Gauge(
            "aggregator_event_loop_lag_seconds",
            "How late the event loop woke from its last watchdog sleep.",
            registry=self.registry,
        )
        self.last_publish = Gauge(
            "aggregator_last_publish_timestamp_seconds",
            "When the outputs were last published successfully (Unix time).",
            registry=self.registry,
        )
        self._last_publish_time: float | None = None
        self.since_publish = Gauge(
            "aggregator_seconds_since_last_publish",
            "Seconds since the outputs were last published successfully (NaN before).",
            registry=self.registry,
        )
        self.since_publish.set_function(self._seconds_since_publish)

    def published(self, when: datetime) -> None:
        self._last_publish_time = when.timestamp()
        self.last_publish.set(self._last_publish_time)

    def _seconds_since_publish(self) -> float:
        if self._last_publish_time is None:
            return math.nan
        return max(0.0, time.time() - self._last_publish_time)

    def record_poll(
        self,
        source: str,
        outcome: str,
        new_items: int,
        when: datetime,
        *,
        parsed: int = 0,
        reused: int = 0,
    ) -> None:
        self.polls.labels(outcome=outcome).inc()
        if new_items:
            self.items_stored.inc(new_items)
        if parsed:
            self.items_parsed.labels(how="parsed").inc(parsed)
        if reused:
            self.items_parsed.labels(how="reused").inc(reused)
        if outcome == "disabled":
            self.mark_disabled(source)
        elif outcome != "failed":
            self.last_success.labels(source=source).set(when.timestamp())

    def forget_source(self, source: str) -> None:
        self._disabled.discard(source)
        for gauge in (self.last_success, self.disabled):
            with contextlib.suppress(KeyError):
                gauge.remove(source)

    def mark_disabled(self, source: str) -> None:
        self._disabled.add(source)
        self.disabled.labels(source=source).set(1)

    def forget_disabled(self, source: str) -> None:
        self._disabled.discard(source)
        with contextlib.suppress(KeyError):
            self.disabled.remove(source)

    def disabled_sources(self) -> set[str]:
        """The sources the disabled gauge shows (kept here: the gauge cannot be asked)."""
        return set(self._disabled)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Sources and entries for the store tests, and the moment they happen at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.config import SourceConfig

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)


def source(
    name: str, url: str | None = None, title: str | None = None, timezone: str = "UTC"
) -> SourceConfig:
    return SourceConfig(
        name=name,
        url=url or f"https://{name}.example.org/feed.xml",
        title=title,
        interval=timedelta(minutes=15),
        timezone=timezone,
        tags=(),
    )

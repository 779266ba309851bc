"""Sources and entries for the store tests, and the moment they happen at."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from aggregator.settings import SourceConfig
from aggregator.types import ParsedEntry

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


def entry(
    entry_id: str,
    title: str = "Title",
    *,
    published: datetime | None = None,
    updated: datetime | None = None,
    summary_html: str = "<p>Summary</p>",
    categories: tuple[str, ...] = (),
) -> ParsedEntry:
    link = f"https://example.org/{entry_id}"
    digest = hashlib.sha256(
        "\x00".join((title, link, summary_html, *categories)).encode()
    ).hexdigest()[:32]
    return ParsedEntry(
        entry_id=entry_id,
        title=title,
        link=link,
        summary_html=summary_html,
        teaser=summary_html.replace("<p>", "").replace("</p>", ""),
        author=None,
        categories=categories,
        published=published,
        updated=updated,
        content_hash=digest,
    )

"""Timeline → JSON Feed 1.1 bytes (https://jsonfeed.org/version/1.1).

Pure and deterministic like `render`: the same timeline gives the same bytes (keys in a fixed
order, no clock), so an unchanged feed keeps its ETag. Text stays as written (UTF-8, never
`\\u` escapes). Every item says which sources carried it in an `_aggregator` extension object,
which JSON Feed allows for keys starting with an underscore.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from aggregator.render import JSON_FEED_FILE
from aggregator.render.feeds import with_full_content
from aggregator.settings import SiteSettings
from aggregator.text import web_url
from aggregator.types import SourceCredit, Timeline, TimelineItem
from aggregator.urls import as_uri, entry_link, public_url

VERSION = "https://jsonfeed.org/version/1.1"

EXTENSION = "_aggregator"


def _date(value: datetime) -> str:
    """RFC 3339 in UTC with a "Z", to the second unless the source gave fractions."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _credit(source: SourceCredit) -> dict[str, str]:
    credit = {"title": source.title}
    # Never a secret the source is fetched with (user info, ?token=...): see `urls`.
    site_url = web_url(source.site_url)
    if site_url:
        credit["url"] = as_uri(public_url(site_url))
    feed_url = web_url(source.feed_url)
    if feed_url:
        credit["feed_url"] = as_uri(public_url(feed_url))
    return credit


def _item(item: TimelineItem, *, full_content: bool = True) -> dict[str, Any]:
    entry = item.entry
    out: dict[str, Any] = {"id": item.uid}
    link = entry_link(entry.link, item.source.feed_url)
    if link:
        out["url"] = as_uri(link)
    if entry.title:
        out["title"] = entry.title
    # JSON Feed requires content_html or content_text on every item.
    fallback = entry.teaser or entry.title or link or item.uid
    # Past the document's content budget (render.CONTENT_BUDGET), the teaser stands for it.
    html_content = entry.summary_html if full_content else ""
    out["content_html"] = html_content or html.escape(fallback, quote=False)
    if entry.teaser:
        out["summary"] = entry.teaser
    out["date_published"] = _date(item.published)
    out["date_modified"] = _date(item.updated)
    if entry.author:
        out["authors"] = [{"name": entry.author}]
    if entry.categories:
        out["tags"] = list(entry.categories)
    out[EXTENSION] = {"sources": [_credit(source) for source in item.sources]}
    return out


def json_feed(timeline: Timeline, site: SiteSettings) -> dict[str, Any]:
    """The feed as a JSON-ready dict, keys in the order the spec lists them."""
    feed: dict[str, Any] = {
        "version": VERSION,
        "title": site.title,
        "home_page_url": as_uri(site.link),
        "feed_url": as_uri(site.base_url + JSON_FEED_FILE),
        "description": site.description,
    }
    if site.language:
        feed["language"] = site.language
    if site.hubs:  # WebSub: where to subscribe to this feed
        feed["hubs"] = [{"type": "WebSub", "url": as_uri(hub)} for hub in site.hubs]
    full = with_full_content(timeline.items)
    feed["items"] = [
        _item(item, full_content=keep) for item, keep in zip(timeline.items, full, strict=True)
    ]
    return feed


def render_json_feed(timeline: Timeline, site: SiteSettings) -> bytes:
    """JSON Feed 1.1, UTF-8, newest item first, ending with a newline."""
    text = json.dumps(json_feed(timeline, site), ensure_ascii=False, indent=2)
    return (text + "\n").encode("utf-8")

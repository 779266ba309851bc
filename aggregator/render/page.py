"""Timeline → one HTML page of dated briefs: headline, time, source, teaser, grouped by day.

Pure and deterministic, like `render.py`: the same timeline gives the same bytes, nothing reads
the clock, and the only file read is the packaged Jinja2 template. Days and times are in the
site's time zone and spelled by Babel in the site's language ("13 जुलाई 2025" for "hi"),
falling back to English when the language is unset or unknown to Babel. Everything from a feed
is plain text and autoescaped; a link is only a link when it is http(s).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from itertools import groupby
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time

from aggregator.render import ATOM_FILE, JSON_FEED_FILE, RSS_FILE
from aggregator.settings import SiteSettings
from aggregator.text import make_teaser, web_url
from aggregator.types import SourceCredit, Timeline, TimelineItem
from aggregator.urls import entry_link, public_url

TEMPLATE = "index.html.j2"
FALLBACK_LOCALE = "en"
_TITLE_FALLBACK_LENGTH = 80


@dataclass(frozen=True)
class FeedLink:
    """One of the published feeds, for `<link rel="alternate">` and the footer."""

    label: str
    media_type: str
    href: str


@dataclass(frozen=True)
class SourceView:
    """A source credit as shown: its title, linked to its site when that is a web address."""

    title: str
    href: str | None


@dataclass(frozen=True)
class ItemView:
    """One brief, every value already a display string."""

    headline: str
    href: str | None
    datetime_attr: str
    time_text: str
    source: SourceView
    also: tuple[SourceView, ...]
    teaser: str


@dataclass(frozen=True)
class DayView:
    """One local calendar day and its briefs, newest first."""

    iso: str
    heading: str
    items: tuple[ItemView, ...]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("aggregator.render", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@lru_cache(maxsize=32)
def babel_locale(language: str | None) -> Locale:
    """The Babel locale for a site language ("hi", "hi-IN", "en_GB"); English when unknown."""
    if language:
        try:
            return Locale.parse(language.strip(), sep="-" if "-" in language else "_")
        except (UnknownLocaleError, ValueError, TypeError):
            pass
    return Locale.parse(FALLBACK_LOCALE)


def headline(item: TimelineItem) -> str:
    """The entry's title, or the start of its teaser, its link or its id when it has none."""
    entry = item.entry
    link = entry_link(entry.link, item.source.feed_url)
    return entry.title or make_teaser(entry.teaser, _TITLE_FALLBACK_LENGTH) or link or item.uid


def _source(credit: SourceCredit) -> SourceView:
    site_url = web_url(credit.site_url)
    href = public_url(site_url) if site_url else None  # never a secret the source is fetched with
    return SourceView(title=credit.title or credit.name, href=href)


def _item(item: TimelineItem, local: datetime, locale: Locale) -> ItemView:
    return ItemView(
        headline=headline(item),
        href=web_url(entry_link(item.entry.link, item.source.feed_url)),
        datetime_attr=local.isoformat(),
        time_text=format_time(local, format="short", tzinfo=local.tzinfo, locale=locale),
        source=_source(item.source),
        also=tuple(_source(credit) for credit in item.also),
        teaser=item.entry.teaser,
    )


def group_by_day(timeline: Timeline, timezone: str) -> list[tuple[date, list[TimelineItem]]]:
    """The items by local calendar day in `timezone`, newest day first, newest item first."""
    zone = ZoneInfo(timezone)
    # Stable: items with equal dates keep the timeline's own order.
    ordered = sorted(timeline.items, key=lambda i: i.published, reverse=True)
    return [
        (day, list(items))
        for day, items in groupby(ordered, key=lambda i: i.published.astimezone(zone).date())
    ]


def _days(timeline: Timeline, site: SiteSettings, locale: Locale) -> list[DayView]:
    zone = ZoneInfo(site.timezone)
    return [
        DayView(
            iso=day.isoformat(),
            heading=format_date(day, format="long", locale=locale),
            items=tuple(_item(item, item.published.astimezone(zone), locale) for item in items),
        )
        for day, items in group_by_day(timeline, site.timezone)
    ]


def feed_links(site: SiteSettings) -> tuple[FeedLink, ...]:
    """The feeds published next to the page, as absolute URLs under `base_url`."""
    return (
        FeedLink("Atom", "application/atom+xml", site.base_url + ATOM_FILE),
        FeedLink("RSS", "application/rss+xml", site.base_url + RSS_FILE),
        FeedLink("JSON Feed", "application/feed+json", site.base_url + JSON_FEED_FILE),
    )


def render_html(timeline: Timeline, site: SiteSettings) -> bytes:
    """The timeline as one UTF-8 HTML page, newest day first."""
    locale = babel_locale(site.language)
    template = _environment().get_template(TEMPLATE)
    text = template.render(
        title=site.title,
        description=site.description,
        language=site.language,
        home=web_url(site.link),
        days=_days(timeline, site, locale),
        feeds=feed_links(site),
    )
    return text.encode("utf-8")

"""Timeline → one HTML page of dated briefs: headline, time, source, teaser, grouped by day.

Pure and deterministic, like `render.py`: the same timeline gives the same bytes, nothing reads
the clock, and the only files read are the packaged Jinja2 template and message catalogues.
Days and times are in the site's time zone and spelled by Babel in the site's language
("13 जुलाई 2025" for "hi"); the page's own words ("Subscribe", "Sources") come from the
gettext catalogues in `locale/` (`make messages` extracts and compiles them). English is the
fallback for both, when the language is unset or has no catalogue. Everything from a feed is
plain text and autoescaped; a link is only a link when it is http(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_timezone_gmt
from babel.support import Translations

from aggregator.render import ATOM_FILE, JSON_FEED_FILE, RSS_FILE
from aggregator.settings import SiteSettings
from aggregator.text import make_teaser, web_url
from aggregator.types import ChannelLink, SourceCredit, Timeline, TimelineItem
from aggregator.urls import entry_link, public_url

TEMPLATE = "index.html.j2"
FALLBACK_LOCALE = "en"
LOCALE_DIR = Path(__file__).parent / "locale"
MESSAGE_DOMAIN = "messages"
_TITLE_FALLBACK_LENGTH = 80


def N_(message: str) -> str:
    """`message` as it is: marks a string for the catalogue, translated where it is shown."""
    return message


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
class SourceListing:
    """A source in the page's list of sources: its site and its feed, public URLs only."""

    title: str
    site: str | None
    feed: str | None  # None for a local file: it has no address a reader could open


@dataclass(frozen=True)
class Updated:
    """When the timeline last changed, for "Last updated", in the site's zone and language."""

    datetime_attr: str
    text: str


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


@lru_cache(maxsize=8)
def _environment(locale: Locale) -> jinja2.Environment:
    """The template environment speaking `locale`'s catalogue; one per language, kept."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("aggregator.render", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    environment.install_gettext_translations(  # type: ignore[attr-defined]
        translations(locale), newstyle=True
    )
    return environment


def translations(locale: Locale) -> Translations:
    """The compiled catalogue for `locale` ("hi_IN" falls back to "hi"); none: the English
    words of the template itself, as gettext's null translations return them."""
    found = Translations.load(str(LOCALE_DIR), [str(locale)], MESSAGE_DOMAIN)
    return found if isinstance(found, Translations) else Translations()


@lru_cache(maxsize=32)
def babel_locale(language: str | None) -> Locale:
    """The Babel locale for a site language ("hi", "hi-IN", "en_GB"); English when unknown."""
    if language:
        try:
            return Locale.parse(language.strip(), sep="-" if "-" in language else "_")
        except (UnknownLocaleError, ValueError, TypeError):
            pass
    return Locale.parse(FALLBACK_LOCALE)


def text_direction(locale: Locale) -> str:
    """ "rtl" for a language written right to left (Arabic, Hebrew, Persian, Urdu), else "ltr":
    the page's `dir`, so its headlines and teasers start at the edge its readers expect."""
    return "rtl" if locale.character_order == "right-to-left" else "ltr"


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
    """The feeds published next to the page, as absolute URLs under `base_url`; the labels
    are the catalogue's msgids, translated in the template."""
    return (
        FeedLink(N_("Atom"), "application/atom+xml", site.base_url + ATOM_FILE),
        FeedLink(N_("RSS"), "application/rss+xml", site.base_url + RSS_FILE),
        FeedLink(N_("JSON Feed"), "application/feed+json", site.base_url + JSON_FEED_FILE),
    )


def source_listing(sources: Sequence[SourceCredit]) -> tuple[SourceListing, ...]:
    """The sources as listed on the page, in the order given: a link to each one's site and
    feed where that is a web address, published without the credentials it is fetched with."""
    listed = []
    for source in sources:
        site = web_url(source.site_url)
        feed = web_url(source.feed_url)
        listed.append(
            SourceListing(
                title=source.title or source.name,
                site=public_url(site) if site else None,
                feed=public_url(feed) if feed else None,
            )
        )
    return tuple(listed)


def last_updated(timeline: Timeline, site: SiteSettings, locale: Locale) -> Updated | None:
    """The timeline's `updated` in the site's zone, as the locale writes a date and a time,
    with the zone's offset ("13 जुलाई 2025, 11:45 am GMT+05:30"); None for an empty one."""
    if timeline.updated is None:
        return None
    local = timeline.updated.astimezone(ZoneInfo(site.timezone))
    day = format_date(local, format="long", locale=locale)
    time = format_time(local, format="short", tzinfo=local.tzinfo, locale=locale)
    both = str(locale.datetime_formats["medium"]).format(time, day)
    zone = get_timezone_gmt(local, width="long", locale=locale)
    return Updated(datetime_attr=local.isoformat(), text=f"{both} {zone}")


def render_html(
    timeline: Timeline,
    site: SiteSettings,
    sources: Sequence[SourceCredit] = (),
    channels: Sequence[ChannelLink] = (),
) -> bytes:
    """The timeline as one UTF-8 HTML page, newest day first, the list of `sources`, and
    links to the `channels` (the root's page lists every channel)."""
    locale = babel_locale(site.language)
    template = _environment(locale).get_template(TEMPLATE)
    text = template.render(
        title=site.title,
        description=site.description,
        language=site.language,
        direction=text_direction(locale),
        home=web_url(site.link),
        days=_days(timeline, site, locale),
        updated=last_updated(timeline, site, locale),
        sources=source_listing(sources),
        feeds=feed_links(site),
        channels=tuple(channels),
    )
    return text.encode("utf-8")

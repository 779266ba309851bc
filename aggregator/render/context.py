"""What a page template is given: the documented context contract, as frozen values.

The README's table ("Themes: the template context") describes these names and fields; a
theme written against it keeps working as the code changes, so a field is only ever added,
never renamed or removed. Every value here is display-ready: dates in the site's time zone,
spelled by Babel in the site's language ("13 जुलाई 2025" for "hi"), links only when they are
http(s) and without the credentials a source is fetched with. Everything from a feed is
plain text, escaped by the template's autoescape.

Pure: a function of the timeline, the settings and the page's place; nothing reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from itertools import groupby
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time, get_timezone_gmt

from aggregator.archive import local_day, local_time
from aggregator.render import ATOM_FILE, JSON_FEED_FILE, RSS_FILE
from aggregator.settings import SiteSettings
from aggregator.text import make_teaser, web_url
from aggregator.types import SourceCredit, Timeline, TimelineItem
from aggregator.urls import entry_link, public_url

FALLBACK_LOCALE = "en"
_TITLE_FALLBACK_LENGTH = 80


def N_(message: str) -> str:
    """`message` as it is: marks a string for the catalogue, translated where it is shown."""
    return message


# -- what the caller gives ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as a page needs it (from `[[channels]]`): its path segment and words, and
    where it is served when the caller knows (a channel's pages are rendered with its own
    site settings, whose `base_url` is already the channel's); by default
    `<base_url><name>/` of the site the page is rendered with."""

    name: str
    title: str
    description: str = ""
    base_url: str | None = None

    def served_at(self, site: SiteSettings) -> str:
        return self.base_url or f"{site.base_url}{self.name}/"


# -- the contract: what a template sees ----------------------------------------------------


@dataclass(frozen=True)
class SiteView:
    """`site`: `[aggregator]`, and the direction its language is written in."""

    title: str
    link: str | None  # None unless it is an http(s) address
    description: str
    language: str | None
    direction: str  # "ltr" or "rtl"


@dataclass(frozen=True)
class ChannelView:
    """`channel` on a channel's pages, and each of `channels` on the root page."""

    name: str
    title: str
    description: str
    link: str  # its main page, absolute under `base_url`


@dataclass(frozen=True)
class FeedLink:
    """One of `feeds`: a feed published beside the page. `label` is a catalogue msgid: a
    template shows it as `_(feed.label)`."""

    label: str
    media_type: str
    link: str


@dataclass(frozen=True)
class SourceView:
    """An item's `source` and each of its `also`: who carried the story."""

    title: str
    link: str | None  # the source's site, when that is a web address


@dataclass(frozen=True)
class SourceListing:
    """One of `sources`, the page's list of sources: its site and its feed, public only."""

    title: str
    link: str | None
    feed: str | None  # None for a local file: it has no address a reader could open


@dataclass(frozen=True)
class Stamp:
    """`updated`: a moment, as ISO 8601 (for `<time datetime>`) and as people read it."""

    iso: str
    label: str


@dataclass(frozen=True)
class ItemView:
    """One brief."""

    title: str
    link: str | None
    teaser: str
    published: str  # ISO 8601, in the site's time zone
    published_label: str  # the local time, as the language writes it
    source: SourceView
    also: tuple[SourceView, ...]


@dataclass(frozen=True)
class DayView:
    """One local calendar day and its briefs, newest first."""

    date: str  # ISO 8601: 2025-07-13
    label: str  # as the language writes it: 13 जुलाई 2025
    items: tuple[ItemView, ...]


@dataclass(frozen=True)
class DayLink:
    """A day page: its date, its label and its link, relative to the page it is on."""

    date: str
    label: str
    link: str


@dataclass(frozen=True)
class ArchiveView:
    """`archive`, on pages of a timeline that has day pages; None otherwise.

    On the main page `latest` is the newest archive day ("earlier days"); on a day page
    `day` is the day itself, `prev` and `next` its older and newer neighbours (None at
    either end), and `main` the link back to the main page.
    """

    main: str
    latest: DayLink | None = None
    day: DayLink | None = None
    prev: DayLink | None = None
    next: DayLink | None = None


# -- building it -----------------------------------------------------------------------------


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


def site_view(site: SiteSettings, locale: Locale) -> SiteView:
    return SiteView(
        title=site.title,
        link=web_url(site.link),
        description=site.description,
        language=site.language,
        direction=text_direction(locale),
    )


def channel_view(channel: ChannelInfo, site: SiteSettings, *, own: bool = False) -> ChannelView:
    """A channel as a page shows it. On the channel's own pages `site` is the channel's
    (publications.channel_site: its `base_url` is already `<root>/<name>/`); elsewhere it is
    the root's, and the channel lives under it."""
    return ChannelView(
        name=channel.name,
        title=channel.title,
        description=channel.description,
        link=site.base_url if own else channel.served_at(site),
    )


def headline(item: TimelineItem) -> str:
    """The entry's title, or the start of its teaser, its link or its id when it has none."""
    entry = item.entry
    link = entry_link(entry.link, item.source.feed_url)
    return entry.title or make_teaser(entry.teaser, _TITLE_FALLBACK_LENGTH) or link or item.uid


def _source(credit: SourceCredit) -> SourceView:
    site_url = web_url(credit.site_url)
    link = public_url(site_url) if site_url else None  # never a secret the source is fetched with
    return SourceView(title=credit.title or credit.name, link=link)


def _item(item: TimelineItem, local: datetime, locale: Locale) -> ItemView:
    return ItemView(
        title=headline(item),
        link=web_url(entry_link(item.entry.link, item.source.feed_url)),
        teaser=item.entry.teaser,
        published=local.isoformat(),
        published_label=format_time(local, format="short", tzinfo=local.tzinfo, locale=locale),
        source=_source(item.source),
        also=tuple(_source(credit) for credit in item.also),
    )


def group_by_day(timeline: Timeline, timezone: str) -> list[tuple[date, list[TimelineItem]]]:
    """The items by local calendar day in `timezone`, newest day first, newest item first."""
    zone = ZoneInfo(timezone)
    # Stable: items with equal dates keep the timeline's own order.
    ordered = sorted(timeline.items, key=lambda i: i.published, reverse=True)
    return [
        (day, list(items))
        for day, items in groupby(ordered, key=lambda i: local_day(i.published, zone))
    ]


def day_label(day: date, locale: Locale) -> str:
    """A day as the language writes it: "13 जुलाई 2025", "July 13, 2025"."""
    return format_date(day, format="long", locale=locale)


def days(timeline: Timeline, site: SiteSettings, locale: Locale) -> tuple[DayView, ...]:
    zone = ZoneInfo(site.timezone)
    return tuple(
        DayView(
            date=day.isoformat(),
            label=day_label(day, locale),
            items=tuple(_item(item, local_time(item.published, zone), locale) for item in items),
        )
        for day, items in group_by_day(timeline, site.timezone)
    )


def feed_links(site: SiteSettings) -> tuple[FeedLink, ...]:
    """The feeds published next to the page (the channel's, on a channel's pages: its `site`
    is the channel's own, under its own `base_url`), as absolute URLs; the labels are the
    catalogue's msgids."""
    base = site.base_url
    return (
        FeedLink(N_("Atom"), "application/atom+xml", base + ATOM_FILE),
        FeedLink(N_("RSS"), "application/rss+xml", base + RSS_FILE),
        FeedLink(N_("JSON Feed"), "application/feed+json", base + JSON_FEED_FILE),
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
                link=public_url(site) if site else None,
                feed=public_url(feed) if feed else None,
            )
        )
    return tuple(listed)


def last_updated(timeline: Timeline, site: SiteSettings, locale: Locale) -> Stamp | None:
    """The timeline's `updated` in the site's zone, as the locale writes a date and a time,
    with the zone's offset ("13 जुलाई 2025, 11:45 am GMT+05:30"); None for an empty one."""
    if timeline.updated is None:
        return None
    local = local_time(timeline.updated, ZoneInfo(site.timezone))
    day = format_date(local, format="long", locale=locale)
    time = format_time(local, format="short", tzinfo=local.tzinfo, locale=locale)
    both = str(locale.datetime_formats["medium"]).format(time, day)
    zone = get_timezone_gmt(local, width="long", locale=locale)
    return Stamp(iso=local.isoformat(), label=f"{both} {zone}")


def page_context(
    timeline: Timeline,
    site: SiteSettings,
    sources: Sequence[SourceCredit],
    channel: ChannelInfo | None,
    channels: tuple[ChannelInfo, ...],
    archive: ArchiveView | None,
) -> dict[str, object]:
    """Every name of the contract, for a page of `timeline` in `channel` (None: the root,
    which lists the `channels`)."""
    locale = babel_locale(site.language)
    return {
        "site": site_view(site, locale),
        "channel": channel_view(channel, site, own=True) if channel else None,
        "channels": tuple(channel_view(c, site) for c in channels),
        "days": days(timeline, site, locale),
        "feeds": feed_links(site),
        "sources": source_listing(sources),
        "updated": last_updated(timeline, site, locale),
        "archive": archive,
    }

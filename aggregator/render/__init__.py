"""Rendering: the timeline as every published file. Pure: the same input, the same bytes.

The output file names are defined here once (the archive days' in `archive.py`); the
renderers, the publisher and the server take them from here. The renderers themselves are
imported when first used, so a process that never renders (a cycle of 304s, `status`)
never loads feedgen, Jinja2 or Babel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from aggregator.archive import ArchiveDay, archive_name, day_page_name
from aggregator.settings import SiteSettings, Theme
from aggregator.types import ChannelLink, SourceCredit, Timeline

if TYPE_CHECKING:  # imported when first used, as the renderers are
    from aggregator.render.context import ChannelInfo

RSS_FILE = "rss.xml"
ATOM_FILE = "atom.xml"
JSON_FEED_FILE = "feed.json"
PAGE_FILE = "index.html"
OPML_FILE = "sources.opml"
OUTPUT_FILES = (RSS_FILE, ATOM_FILE, JSON_FEED_FILE, PAGE_FILE, OPML_FILE)


def day_page_file(day: str) -> str:
    """The day page of an ISO date, relative to its main page: `archive/2025/07/13.html`."""
    return day_page_name(date.fromisoformat(day))


@dataclass(frozen=True)
class Framing:
    """What a publication's files show around its timeline.

    `theme`: the operator's templates for the page; `channel`: the channel's name (None:
    the root); `channels`: listed on the page (the root's lists every channel); `tags`:
    each source's, by name, which group the sources in `sources.opml`; `newest_archive`:
    the archive day (`archive.py`) atom.xml's `prev-archive` and the page's "earlier
    days" lead to, if any.
    """

    theme: Theme = field(default_factory=Theme)
    channel: str | None = None
    channels: Sequence[ChannelLink] = ()
    tags: Mapping[str, Sequence[str]] = field(default_factory=dict)
    newest_archive: date | None = None


def render_outputs(
    site: SiteSettings,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    framing: Framing | None = None,
) -> dict[str, bytes]:
    """Every output file's bytes, by file name, in `OUTPUT_FILES` order."""
    from aggregator.render.context import ChannelInfo  # noqa: PLC0415
    from aggregator.render.feeds import render_atom, render_rss  # noqa: PLC0415
    from aggregator.render.jsonfeed import render_json_feed  # noqa: PLC0415
    from aggregator.render.opml import render_opml  # noqa: PLC0415
    from aggregator.render.page import render_html  # noqa: PLC0415

    around = framing or Framing()
    channel = around.channel
    newest = around.newest_archive
    sources = list(credits.values())
    return {
        RSS_FILE: render_rss(timeline, site),
        ATOM_FILE: render_atom(timeline, site, newest),
        JSON_FEED_FILE: render_json_feed(timeline, site),
        PAGE_FILE: render_html(
            timeline,
            site,
            sources,
            theme=around.theme,
            channel=_channel_info(channel, site),
            channels=[ChannelInfo(c.name, c.title, c.description, c.href) for c in around.channels],
            earlier=None if newest is None else newest.isoformat(),
        ),
        OPML_FILE: render_opml(sources, site, around.tags),
    }


def render_archive_day(
    site: SiteSettings,
    day: ArchiveDay,
    *,
    theme: Theme | None = None,
    channel: str | None = None,
) -> dict[str, bytes]:
    """An archive day's files (`archive.day_files`), by name inside the publication: its
    Atom archive document and its day page, both made from `day` alone (with the
    publication's site, theme and channel, which are in every day's fingerprint)."""
    from aggregator.render.feeds import render_archive  # noqa: PLC0415
    from aggregator.render.page import DayPage, render_day_page  # noqa: PLC0415

    def iso(value: date | None) -> str | None:
        return None if value is None else value.isoformat()

    page = DayPage(day.day.isoformat(), prev=iso(day.previous), next=iso(day.next))
    return {
        archive_name(day.day): render_archive(day, site),
        day_page_name(day.day): render_day_page(
            day.timeline,
            site,
            page,
            day_sources(day.timeline),
            theme=theme or Theme(),
            channel=_channel_info(channel, site),
        ),
    }


def _channel_info(channel: str | None, site: SiteSettings) -> ChannelInfo | None:
    """The channel `channel` names (None: the root), rendered with its own site settings."""
    from aggregator.render.context import ChannelInfo  # noqa: PLC0415

    if channel is None:
        return None
    return ChannelInfo(channel, site.title, site.description, site.base_url)


def day_sources(timeline: Timeline) -> list[SourceCredit]:
    """The sources a day page lists: those its items credit, by name. Not every source of
    the publication: a day's page is made from its items alone, so that another source's
    new title does not rewrite every day page."""
    credited = {c.name: c for item in timeline.items for c in (item.source, *item.also)}
    return [credited[name] for name in sorted(credited)]

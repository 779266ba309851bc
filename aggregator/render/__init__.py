"""Rendering: the timeline as every published file. Pure: the same input, the same bytes.

The output file names are defined here once; the renderers, the publisher and the server
take them from here. The renderers themselves are imported when first used, so a process
that never renders (a cycle of 304s, `status`) never loads feedgen, Jinja2 or Babel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from aggregator.settings import SiteSettings, Theme
from aggregator.types import ChannelLink, SourceCredit, Timeline

RSS_FILE = "rss.xml"
ATOM_FILE = "atom.xml"
JSON_FEED_FILE = "feed.json"
PAGE_FILE = "index.html"
OPML_FILE = "sources.opml"
OUTPUT_FILES = (RSS_FILE, ATOM_FILE, JSON_FEED_FILE, PAGE_FILE, OPML_FILE)
ARCHIVE_DIR = "archive"


def day_page_file(day: str) -> str:
    """The day page of an ISO date, relative to its main page: `archive/2025/07/13.html`."""
    parsed = date.fromisoformat(day)
    return f"{ARCHIVE_DIR}/{parsed.year:04d}/{parsed.month:02d}/{parsed.day:02d}.html"


def render_outputs(
    site: SiteSettings,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    *,
    theme: Theme | None = None,
    channel: str | None = None,
    channels: Sequence[ChannelLink] = (),
    tags: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, bytes]:
    """Every output file's bytes, by file name, in `OUTPUT_FILES` order.

    `channel`: the channel's name (None: the root); `channels`: listed on the page (the
    root's lists every channel); `tags`: each source's, by name, which group the sources in
    `sources.opml`; `theme`: the operator's templates for the page.
    """
    from aggregator.render.context import ChannelInfo  # noqa: PLC0415
    from aggregator.render.feeds import render_atom, render_rss  # noqa: PLC0415
    from aggregator.render.jsonfeed import render_json_feed  # noqa: PLC0415
    from aggregator.render.opml import render_opml  # noqa: PLC0415
    from aggregator.render.page import render_html  # noqa: PLC0415

    sources = list(credits.values())
    return {
        RSS_FILE: render_rss(timeline, site),
        ATOM_FILE: render_atom(timeline, site),
        JSON_FEED_FILE: render_json_feed(timeline, site),
        PAGE_FILE: render_html(
            timeline,
            site,
            sources,
            theme=theme or Theme(),
            channel=None if channel is None else ChannelInfo(channel, site.title, site.description),
            channels=[ChannelInfo(c.name, c.title, c.description) for c in channels],
        ),
        OPML_FILE: render_opml(sources, site, tags or {}),
    }

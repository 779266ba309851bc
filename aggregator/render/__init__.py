"""Rendering: the timeline as every published file. Pure: the same input, the same bytes.

The output file names are defined here once (the archive days' in `archive.py`); the
renderers, the publisher and the server take them from here. The renderers themselves are
imported when first used, so a process that never renders (a cycle of 304s, `status`)
never loads feedgen, Jinja2 or Babel.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from aggregator.archive import ArchiveDay, archive_name
from aggregator.settings import SiteSettings
from aggregator.types import SourceCredit, Timeline

RSS_FILE = "rss.xml"
ATOM_FILE = "atom.xml"
JSON_FEED_FILE = "feed.json"
PAGE_FILE = "index.html"
OPML_FILE = "sources.opml"
OUTPUT_FILES = (RSS_FILE, ATOM_FILE, JSON_FEED_FILE, PAGE_FILE, OPML_FILE)


def render_outputs(
    site: SiteSettings,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    newest_archive: date | None = None,
) -> dict[str, bytes]:
    """Every output file's bytes, by file name, in `OUTPUT_FILES` order; `newest_archive`:
    the archive day atom.xml's `prev-archive` leads to (`archive.py`), if any."""
    from aggregator.render.feeds import render_atom, render_rss  # noqa: PLC0415
    from aggregator.render.jsonfeed import render_json_feed  # noqa: PLC0415
    from aggregator.render.opml import render_opml  # noqa: PLC0415
    from aggregator.render.page import render_html  # noqa: PLC0415

    return {
        RSS_FILE: render_rss(timeline, site),
        ATOM_FILE: render_atom(timeline, site, newest_archive),
        JSON_FEED_FILE: render_json_feed(timeline, site),
        PAGE_FILE: render_html(timeline, site, list(credits.values())),
        OPML_FILE: render_opml(list(credits.values()), site),
    }


def render_archive_day(site: SiteSettings, day: ArchiveDay) -> dict[str, bytes]:
    """An archive day's files (`archive.day_files`), by name inside the publication."""
    from aggregator.render.feeds import render_archive  # noqa: PLC0415

    return {archive_name(day.day): render_archive(day, site)}

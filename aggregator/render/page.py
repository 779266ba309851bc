"""Timeline → HTML pages of dated briefs: the main page, and one page per archive day.

Pure and deterministic, like every renderer: the same timeline gives the same bytes,
nothing reads the clock. The pages are the theme's templates (`theme.py`: the operator's
`[publish] templates` over the shipped ones, sandboxed) given the context of `context.py`,
the contract the README documents. Days and times are in the site's time zone and spelled
by Babel in the site's language ("13 जुलाई 2025" for "hi"); the pages' own words
("Subscribe", "Sources") come from the gettext catalogues in `locale/` (`make messages`
extracts and compiles them). English is the fallback for both.

A day page lives at `archive/YYYY/MM/DD.html` (`render.day_page_file`), `depth` directories
below the main page, and links to it and to its neighbours relatively, so the pages work
from any `base_url`, and from a copy of `output/` opened as files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from aggregator.render import PAGE_FILE, day_page_file
from aggregator.render.context import (
    ArchiveView,
    ChannelInfo,
    DayLink,
    babel_locale,
    day_label,
    page_context,
)
from aggregator.render.theme import output_budget, render_template
from aggregator.settings import SiteSettings, Theme
from aggregator.types import SourceCredit, Timeline

INDEX_TEMPLATE = "index.html.j2"
DAY_TEMPLATE = "day.html.j2"
PAGE_TEMPLATES = (INDEX_TEMPLATE, DAY_TEMPLATE)  # rendered; any other file is a partial
SHIPPED_THEME = Theme()
DAY_PAGE_DEPTH = 3  # archive/YYYY/MM/


@dataclass(frozen=True)
class DayPage:
    """Which archive day a day page shows, its neighbours (ISO dates; None at either end:
    `prev` is the older day, `next` the newer), and how many directories below the main
    page it lives."""

    day: str
    prev: str | None = None
    next: str | None = None
    depth: int = DAY_PAGE_DEPTH


def render_html(
    timeline: Timeline,
    site: SiteSettings,
    sources: Sequence[SourceCredit] = (),
    *,
    theme: Theme = SHIPPED_THEME,
    channel: ChannelInfo | None = None,
    channels: Sequence[ChannelInfo] = (),
    earlier: str | None = None,
) -> bytes:
    """The main page: the timeline newest day first, the list of `sources`, on the root the
    `channels`, and when day pages exist a link to the newest (`earlier`, an ISO date)."""
    locale = babel_locale(site.language)
    archive = None
    if earlier is not None:
        archive = ArchiveView(main=PAGE_FILE, latest=_day_link(earlier, "", site))
    context = page_context(timeline, site, sources, channel, tuple(channels), archive)
    budget = output_budget(len(timeline.items))
    return render_template(theme, locale, INDEX_TEMPLATE, context, budget).encode("utf-8")


def render_day_page(
    timeline: Timeline,
    site: SiteSettings,
    page: DayPage,
    sources: Sequence[SourceCredit] = (),
    *,
    theme: Theme = SHIPPED_THEME,
    channel: ChannelInfo | None = None,
) -> bytes:
    """One archive day's page: its items (`timeline`), links to its neighbours and back to
    the main page, in the same theme and language as the main page."""
    locale = babel_locale(site.language)
    root = "../" * page.depth
    archive = ArchiveView(
        main=root + PAGE_FILE,
        day=_day_link(page.day, root, site),
        prev=_day_link(page.prev, root, site) if page.prev else None,
        next=_day_link(page.next, root, site) if page.next else None,
    )
    context = page_context(timeline, site, sources, channel, (), archive)
    budget = output_budget(len(timeline.items))
    return render_template(theme, locale, DAY_TEMPLATE, context, budget).encode("utf-8")


def _day_link(day: str, root: str, site: SiteSettings) -> DayLink:
    return DayLink(
        date=day,
        label=day_label(date.fromisoformat(day), babel_locale(site.language)),
        link=root + day_page_file(day),
    )

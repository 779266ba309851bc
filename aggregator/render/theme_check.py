"""An operator's theme checked before it is used: every file compiled, every page rendered
against a small sample of each kind of page it will be asked for.

Run when feeds.toml is loaded (`check`, the start of `run` and `once`, each reload), so a
syntax error or a misspelt name (`{{ item.titel }}`) stops the configuration from being
used, with one line naming the file and line, instead of failing at every publish. A
template can still fail on real data the sample does not have (an index past the sample's
end): the publish then fails with the same one line and the last good files stay.

Pure: the sample is made here, nothing is read but the templates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from aggregator.errors import ThemeError
from aggregator.render.context import ChannelInfo, babel_locale
from aggregator.render.page import DayPage, render_day_page, render_html
from aggregator.render.theme import compile_template
from aggregator.settings import SiteSettings, Theme
from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

_SITE_SOURCE = SourceCredit(
    name="sample",
    title="Sample source",
    feed_url="https://sample.example/feed.xml",
    site_url="https://sample.example/",
)
_LOCAL_SOURCE = SourceCredit(name="notes", title="Local notes", feed_url="file:///srv/notes.xml")
_CHANNELS = (
    ChannelInfo("news", "News", "The news channel"),
    ChannelInfo("sport", "Sport", ""),
)


def _item(n: int, when: str, *, link: str | None, teaser: str, also: bool) -> TimelineItem:
    moment = datetime.fromisoformat(when).replace(tzinfo=UTC)
    entry = StoredEntry(
        source=_SITE_SOURCE.name,
        entry_id=f"sample-{n}",
        title=f"Sample headline {n}",
        link=link,
        summary_html="",
        teaser=teaser,
        author=None,
        categories=(),
        published=moment,
        updated=moment,
        first_seen=moment,
        sort_date=moment,
    )
    return TimelineItem(
        uid=f"urn:sample:{n}",
        entry=entry,
        source=_SITE_SOURCE,
        published=moment,
        updated=moment,
        also=(_LOCAL_SOURCE,) if also else (),
    )


def sample_timeline() -> Timeline:
    """Three briefs over two days: with and without a link, a teaser, other sources."""
    items = (
        _item(1, "2025-07-13T09:30:00", link="https://sample.example/1", teaser="…", also=True),
        _item(2, "2025-07-13T06:00:00", link=None, teaser="", also=False),
        _item(3, "2025-07-12T18:00:00", link="https://sample.example/3", teaser="", also=False),
    )
    return Timeline(items=items, updated=items[0].updated)


def _pages(theme: Theme, site: SiteSettings) -> list[Callable[[], bytes]]:
    """Each kind of page a publish renders: the root with channels and day pages, a root
    with nothing yet, a channel's page, day pages in the middle and at the ends."""
    full = sample_timeline()
    one_day = replace(full, items=full.items[:2])
    sources = (_SITE_SOURCE, _LOCAL_SOURCE)
    news = _CHANNELS[0]
    middle = DayPage("2025-07-13", prev="2025-07-12", next="2025-07-14")
    return [
        lambda: render_html(
            full, site, sources, theme=theme, channels=_CHANNELS, earlier="2025-07-11"
        ),
        lambda: render_html(Timeline(), site, theme=theme),
        lambda: render_html(full, site, sources, theme=theme, channel=news),
        lambda: render_day_page(one_day, site, middle, sources, theme=theme),
        lambda: render_day_page(one_day, site, DayPage("2025-07-13"), theme=theme, channel=news),
        lambda: render_day_page(Timeline(), site, DayPage("2025-07-10"), theme=theme),
    ]


def theme_problems(theme: Theme, site: SiteSettings) -> list[ThemeError]:
    """What is wrong with `theme` for `site` (its language's catalogue), one error each:
    first every file that does not compile; when all do, every distinct failure of a page."""
    locale = babel_locale(site.language)
    problems: list[ThemeError] = []
    for name in theme.names:
        try:
            compile_template(theme, locale, name)
        except ThemeError as e:
            problems.append(e)
    if problems:
        return problems  # the pages would only fail on the same lines again
    seen: set[str] = set()
    for render in _pages(theme, site):
        try:
            render()
        except ThemeError as e:
            if str(e) not in seen:
                seen.add(str(e))
                problems.append(e)
    return problems

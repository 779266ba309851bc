"""The published feeds are bounded as a whole, not only per item: render.CONTENT_BUDGET."""

from __future__ import annotations

import json
from datetime import timedelta

import feedparser

from aggregator.parse.fields import CONTENT_LIMIT
from aggregator.render.feeds import CONTENT_BUDGET, render_atom, render_rss, with_full_content
from aggregator.render.jsonfeed import render_json_feed
from aggregator.types import Timeline
from tests.test_jsonfeed import SITE, T0, item

MAX_ITEMS = 200  # the default [publish] max_items
# Item HTML at the per-item cap, heavy in what escaping grows ("&amp;" is "&amp;amp;" in XML).
BIG = ("<p>" + "a &amp; b &lt; c " * CONTENT_LIMIT)[: CONTENT_LIMIT - 4] + "</p>"
LIMIT_BYTES = 10_000_000


def _timeline(count: int) -> Timeline:
    items = tuple(
        item(
            f"urn:x:{n}",
            title=f"Item {n}",
            link=f"https://example.org/{n}",
            summary_html=BIG,  # one string shared by all: the test itself stays small
            teaser=f"Teaser {n}",
            published=T0 - timedelta(minutes=n),
        )
        for n in range(count)
    )
    return Timeline(items=items, updated=T0)


def test_max_items_of_maximal_content_render_under_the_budget() -> None:
    # 200 x 512 KiB made a 102 MB rss.xml and a 204 MB feed.json before the budget.
    timeline = _timeline(MAX_ITEMS)
    kept = sum(with_full_content(timeline.items))
    assert 0 < kept < MAX_ITEMS
    for render in (render_rss, render_atom):
        data = render(timeline, SITE)
        assert len(data) < LIMIT_BYTES, (render.__name__, len(data))
        parsed = feedparser.parse(data)
        assert not parsed.bozo and len(parsed.entries) == MAX_ITEMS
        # The newest items carry their HTML, the rest their teaser.
        assert parsed.entries[0].summary.startswith("<p>a &amp; b")
        assert parsed.entries[kept].summary == f"Teaser {kept}"
        assert render(timeline, SITE) == data  # the same choice every time: stable bytes
    data = render_json_feed(timeline, SITE)
    assert len(data) < LIMIT_BYTES
    items = json.loads(data)["items"]
    assert len(items) == MAX_ITEMS
    assert items[kept - 1]["content_html"] == BIG
    assert items[kept]["content_html"] == f"Teaser {kept}"


def test_budget_counts_escaped_bytes_and_keeps_order() -> None:
    timeline = _timeline(MAX_ITEMS)
    full = with_full_content(timeline.items)
    kept = sum(full)
    assert full == [True] * kept + [False] * (MAX_ITEMS - kept)
    # XML escaping nearly doubles this HTML; the budget is on the escaped size.
    assert kept * len(BIG.encode()) < CONTENT_BUDGET < kept * len(BIG.encode()) * 2
    assert with_full_content(_timeline(3).items) == [True, True, True]

"""RSS titles that are escaped event-handler markup are published as plain text.

`&lt;svg onload=alert(1)&gt;` in an RSS <title> decodes to a tag a reader that treats RSS
titles as HTML would run. A known element's start tag with an attribute, or any tag with
an `on...=` handler, is markup and goes; text about markup ("the <b> tag") stays.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.parse.feed import parse_feed
from aggregator.parse.fields import looks_like_markup
from tests.feedserver import FeedServer
from tests.hostile import SITE, item, rss
from tests.test_hostile import once

RSS_HEADERS = {"content-type": "application/rss+xml"}
# As written in the feed (escaped once), and what must be published.
EVENT_HANDLER_TITLES = {
    "&lt;svg onload=alert(1)&gt;": "",
    "&lt;details open ontoggle=alert(2)&gt;": "",
    "&lt;video src=x onerror=alert(3)&gt;": "",
    "&lt;input autofocus onfocus=alert(4)&gt;": "",
    "&lt;body onload=alert(5)&gt;": "",
    "Breaking: &lt;marquee onstart=alert(6)&gt;": "Breaking:",
    "&lt;svg/onload=alert(7)&gt;Slash": "Slash",
    "Custom &lt;x-y onclick=alert(8)&gt;element": "Custom element",
    "the &lt;b&gt; tag explained": "the <b> tag explained",
    "a &lt; b &gt; c": "a < b > c",
}


def _document() -> bytes:
    """One item per title, each written as given (already escaped, not escaped again)."""
    items = [
        item(f"RAW{n}", guid=f"handler-{n}", link=f"{SITE}handler/{n}").replace(
            f"<title>RAW{n}</title>", f"<title>{title}</title>"
        )
        for n, title in enumerate(EVENT_HANDLER_TITLES)
    ]
    return rss(items).encode()


@pytest.mark.parametrize(
    ("title", "markup"),
    [
        ("<svg onload=alert(1)>", True),
        ("<details open ontoggle=alert(2)>", True),
        ("<video src=x onerror=alert(3)>", True),
        ("<input autofocus onfocus=alert(4)>", True),
        ("<body onload=alert(5)>", True),
        ("Breaking: <marquee onstart=alert(6)>", True),
        ("<svg/onload=alert(1)>", True),
        ("<unknown onclick=x>", True),
        ("<img src=x>", True),
        ("<a href='https://x.example/'>here", True),
        ("<iframe>", True),
        ("<math>", False),
        ("The <title> element and SEO", False),
        ("How <img> lazy loading works", False),
        ('Styling the <input type="range"> element', False),
        ("Why <link rel=preload> matters", False),
        ('Vue <template v-if="ok">', False),
        ("the <b> tag explained", False),
        ("a < b > c", False),
        ("x <y=3> z", False),
        ("<bold class=x>not html", False),
    ],
)
def test_tags_with_attributes_are_markup(title: str, markup: bool) -> None:
    assert looks_like_markup(title) is markup


def test_event_handler_titles_parse_to_plain_text() -> None:
    feed = parse_feed(_document(), RSS_HEADERS, "https://feeds.example.org/x.xml")
    titles = [e.title for e in feed.entries]
    assert sorted(titles) == sorted(EVENT_HANDLER_TITLES.values())
    assert all("onload" not in t and "alert" not in t for t in titles)


def test_event_handler_titles_are_published_without_tags(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    url = feed_server.add("/handlers.xml", _document(), "application/rss+xml")
    run = once(tmp_path, [("handlers", url)])
    published = [str(i.get("title", "")) for i in run.items()]
    published += [str(e.findtext("title") or "") for e in run.rss_items()]
    kept = ("the <b> tag explained", "a < b > c")
    assert [t for t in published if "<" in t and t not in kept] == []
    assert sum(t in kept for t in published) == 4  # both, in feed.json and rss.xml
    assert not any("alert" in t for t in published)

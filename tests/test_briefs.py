"""Teasers read like a news site's briefs: one line by default, without the source's own
"Read more" link. Real feed HTML, served on 127.0.0.1, through the real `once`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import regex
from lxml import html

from aggregator.text import drop_trailing_more_link
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer

SITE = "https://news.example.org/"
DATE = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)

# Summaries as sources write them, each ending in a link of their own.
WORDPRESS = (
    "<p>Ministers met on Sunday to agree the budget. [&#8230;]</p>\n"
    '<p class="link-more"><a href="https://blog.example.org/budget/" class="more-link">'
    'Continue reading<span class="screen-reader-text"> "Budget talks"</span></a></p>'
)
MORE_ON = (
    "Talks resumed on Monday after a week. "
    '<a href="https://news.example.org/talks" target="_blank">… more on News Example</a>'
)
READ_MORE = '<p>The river rose by two metres overnight.</p><p><a href="/r">Read more »</a></p>'
# "पढ़ें" with the precomposed U+095D (ढ़), as some Hindi CMSs write it; NFC splits it.
HINDI = (
    "<p>बिहार में विधानसभा चुनाव से पहले विपक्षी दलों और चुनाव आयोग के बीच आरोप-प्रत्यारोप</p>"
    '<a href="https://hindi.example.org/bihar">और \u092a\u095d\u0947\u0902</a>'
)
# Links that are content, not a "read more": they stay.
CONTENT_LINK = '<p>The report says so (<a href="https://gov.example.org/r.pdf">PDF</a>).</p>'
RUNNING_TEXT = '<p>Read more about the plan in <a href="https://x.example.org/">our guide</a></p>'
LONG_STORY = " ".join(f"word{n}" for n in range(70))  # 400-odd characters


def _config(root: Path, feed_url: str) -> Path:
    """A configuration with no `teaser_length`: the default is what is tested."""
    config = root / "feeds.toml"
    config.write_text(
        f'[publish]\nmax_age = "100000d"\n[[feeds]]\nname = "a"\nurl = "{feed_url}"\n',
        encoding="utf-8",
    )
    return config


def _page_teasers(output: Path) -> dict[str, str]:
    page = html.fromstring((output / "index.html").read_bytes())
    return {
        article.findtext(".//h3/a") or "": article.findtext(".//p[@class='teaser']") or ""
        for article in page.iterfind(".//article")
    }


def test_once_drops_trailing_read_more_links_and_cuts_one_line_teasers(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    summaries = {
        "wordpress": WORDPRESS,
        "more-on": MORE_ON,
        "read-more": READ_MORE,
        "hindi": HINDI,
        "content-link": CONTENT_LINK,
        "running-text": RUNNING_TEXT,
        "long": f"<p>{LONG_STORY}</p>",
    }
    items = [
        Item(name, f"{SITE}{name}", name, DATE - timedelta(minutes=n), summary_html=summary)
        for n, (name, summary) in enumerate(summaries.items())
    ]
    feed_server.add("/feed.xml", rss2("Feed", SITE, items))
    result = run_cli("once", "--config", str(_config(tmp_path, feed_server.url("/feed.xml"))))
    assert result.returncode == 0, result.stderr
    teasers = _page_teasers(tmp_path / "output")
    assert teasers == {
        "wordpress": "Ministers met on Sunday to agree the budget. […]",
        "more-on": "Talks resumed on Monday after a week.",
        "read-more": "The river rose by two metres overnight.",
        "hindi": "बिहार में विधानसभा चुनाव से पहले विपक्षी दलों और चुनाव आयोग के बीच आरोप-प्रत्यारोप",
        "content-link": "The report says so (PDF).",
        "running-text": "Read more about the plan in our guide",
        "long": teasers["long"],
    }
    # One line, as in the seed's briefs: about 110 characters, cut at a word with "…".
    long = teasers["long"]
    assert long.endswith("…") and 100 <= len(regex.findall(r"\X", long)) <= 110, long
    assert LONG_STORY.startswith(long[:-1])


def test_the_published_summary_keeps_the_link() -> None:
    """Only teasers lose it: the HTML summary in the feeds is the source's own."""
    assert drop_trailing_more_link(READ_MORE) == "<p>The river rose by two metres overnight.</p><p>"
    assert drop_trailing_more_link(CONTENT_LINK) == CONTENT_LINK
    assert drop_trailing_more_link(RUNNING_TEXT) == RUNNING_TEXT
    # A "read more" link followed by more text is not trailing.
    tail = '<p><a href="/r">Read more</a> about the vote and the count.</p>'
    assert drop_trailing_more_link(tail) == tail


def test_dropping_is_bounded_on_hostile_input() -> None:
    """Only the end of a summary is looked at; a million link starts or a link a megabyte
    long cost what a slice does (checked by the output, not the clock)."""
    many = "<a " * 1_000_000
    assert drop_trailing_more_link(many) == many
    huge = "<p>x</p><a href=/r>" + "read more " * 100_000 + "</a>"
    assert drop_trailing_more_link(huge) == huge
    unclosed = "<p>x</p><a href=/r>Read more"
    assert drop_trailing_more_link(unclosed) == unclosed

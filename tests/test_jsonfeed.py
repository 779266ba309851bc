"""aggregator.jsonfeed: JSON Feed 1.1 checked against a schema written from the spec."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from aggregator.render.jsonfeed import render_json_feed
from aggregator.settings import SiteSettings
from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "jsonfeed" / "schema-1.1.json").read_text("utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

SITE = SiteSettings(
    title="हिंदी समाचार डाइजेस्ट",
    link="https://digest.example/",
    description="देश और दुनिया की ताज़ा ख़बरें",
    language="hi",
    timezone="Asia/Kolkata",
    base_url="https://digest.example/feeds/",
)
BBC = SourceCredit(
    name="bbc-hindi",
    title="बीबीसी हिंदी",
    feed_url="https://feeds.bbci.co.uk/hindi/rss.xml",
    site_url="https://www.bbc.com/hindi",
)
LOCAL = SourceCredit(name="local", title="Local file", feed_url="file:///srv/feeds/local.xml")
AMAR = SourceCredit(
    name="amar-ujala", title="अमर उजाला", feed_url="https://www.amarujala.com/rss/news.xml"
)
T0 = datetime(2025, 7, 13, 10, 0, tzinfo=UTC)


def item(
    uid: str,
    *,
    title: str = "",
    link: str | None = None,
    summary_html: str = "",
    teaser: str = "",
    author: str | None = None,
    categories: tuple[str, ...] = (),
    published: datetime = T0,
    updated: datetime | None = None,
    source: SourceCredit = BBC,
    also: tuple[SourceCredit, ...] = (),
) -> TimelineItem:
    entry = StoredEntry(
        source=source.name,
        entry_id=uid,
        title=title,
        link=link,
        summary_html=summary_html,
        teaser=teaser,
        author=author,
        categories=categories,
        published=published,
        updated=updated,
        first_seen=published,
        sort_date=published,
    )
    return TimelineItem(
        uid=uid,
        entry=entry,
        source=source,
        published=published,
        updated=updated or published,
        also=also,
    )


ITEMS = (
    item(
        "urn:uuid:8f0c2b8e-4d0c-5c1a-9b53-0d7c1f3a9e01",
        title="पहली ख़बर: संसद में बहस",
        link="https://www.bbc.com/hindi/articles/1",
        summary_html="<p>संसद में आज <b>बहस</b> हुई।</p>",
        teaser="संसद में आज बहस हुई।",
        author="रिपोर्टर",
        categories=("भारत", "राजनीति"),
        published=T0,
        updated=T0 + timedelta(minutes=30),
        also=(AMAR, LOCAL),
    ),
    item(
        "urn:uuid:8f0c2b8e-4d0c-5c1a-9b53-0d7c1f3a9e02",
        teaser="A <teaser> & no HTML",
        published=T0 - timedelta(hours=1, microseconds=250000),
        source=LOCAL,
    ),
    item("urn:uuid:8f0c2b8e-4d0c-5c1a-9b53-0d7c1f3a9e03", published=T0 - timedelta(hours=2)),
)
TIMELINE = Timeline(items=ITEMS, updated=T0 + timedelta(minutes=30))


def render(timeline: Timeline = TIMELINE, site: SiteSettings = SITE) -> dict[str, Any]:
    data = render_json_feed(timeline, site)
    feed = json.loads(data.decode("utf-8"))
    VALIDATOR.validate(feed)
    assert isinstance(feed, dict)
    return feed


def test_valid_against_the_json_feed_1_1_schema() -> None:
    feed = render()
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == SITE.title
    assert feed["home_page_url"] == "https://digest.example/"
    assert feed["feed_url"] == "https://digest.example/feeds/feed.json"
    assert feed["description"] == SITE.description
    assert feed["language"] == "hi"
    assert len(feed["items"]) == 3


def test_the_schema_is_not_vacuous() -> None:
    """The schema refuses what the spec forbids, so passing it means something."""
    good = render()
    broken: list[dict[str, Any]] = []
    mutations: tuple[Callable[[dict[str, Any]], object], ...] = (
        lambda f: f.pop("version"),
        lambda f: f.update(version="https://jsonfeed.org/version/1"),
        lambda f: f.pop("title"),
        lambda f: f.pop("items"),
        lambda f: f["items"][0].pop("id"),
        lambda f: f["items"][0].update(id=17),
        lambda f: f["items"][0].pop("content_html"),
        lambda f: f["items"][0].update(date_published="13 Jul 2025 10:00"),
        lambda f: f["items"][0].update(authors=[{}]),
        lambda f: f["items"][0].update(tags="news"),
        lambda f: f["items"][0].update(aggregator={}),
        lambda f: f.update(expired="no"),
    )
    for mutate in mutations:
        feed = copy.deepcopy(good)
        mutate(feed)
        broken.append(feed)
    for feed in broken:
        assert not VALIDATOR.is_valid(feed), feed


def test_items_round_trip() -> None:
    feed = render()
    first, second, third = feed["items"]
    assert [i["id"] for i in feed["items"]] == [i.uid for i in ITEMS]
    assert first["url"] == "https://www.bbc.com/hindi/articles/1"
    assert first["title"] == "पहली ख़बर: संसद में बहस"
    assert first["content_html"] == "<p>संसद में आज <b>बहस</b> हुई।</p>"
    assert first["summary"] == "संसद में आज बहस हुई।"
    assert first["authors"] == [{"name": "रिपोर्टर"}]
    assert first["tags"] == ["भारत", "राजनीति"]
    for rendered, original in zip(feed["items"], ITEMS, strict=True):
        assert datetime.fromisoformat(rendered["date_published"]) == original.published
        assert datetime.fromisoformat(rendered["date_modified"]) == original.updated
    assert first["date_published"] == "2025-07-13T10:00:00Z"
    assert first["date_modified"] == "2025-07-13T10:30:00Z"
    assert second["date_published"] == "2025-07-13T08:59:59.750000Z"
    # No HTML: the teaser, escaped, is the content; no title, no url, no invented fields.
    assert second["content_html"] == "A &lt;teaser&gt; &amp; no HTML"
    assert second["summary"] == "A <teaser> & no HTML"
    assert "title" not in second and "url" not in second
    assert "authors" not in second and "tags" not in second
    # Nothing at all: content still present (the spec requires it), here the id.
    assert third["content_html"] == ITEMS[2].uid
    assert "summary" not in third


def test_every_source_is_credited_without_local_paths() -> None:
    first, second, _ = render()["items"]
    assert first["_aggregator"] == {
        "sources": [
            {
                "title": "बीबीसी हिंदी",
                "url": "https://www.bbc.com/hindi",
                "feed_url": "https://feeds.bbci.co.uk/hindi/rss.xml",
            },
            {"title": "अमर उजाला", "feed_url": "https://www.amarujala.com/rss/news.xml"},
            {"title": "Local file"},
        ]
    }
    assert second["_aggregator"] == {"sources": [{"title": "Local file"}]}
    assert b"file://" not in render_json_feed(TIMELINE, SITE)


def test_devanagari_is_written_as_utf8_not_escaped() -> None:
    data = render_json_feed(TIMELINE, SITE)
    text = data.decode("utf-8")
    assert "पहली ख़बर: संसद में बहस" in text
    assert "हिंदी समाचार डाइजेस्ट" in text
    assert "\\u" not in text
    assert "पहली ख़बर".encode() in data


def test_deterministic_bytes() -> None:
    first = render_json_feed(TIMELINE, SITE)
    again = render_json_feed(Timeline(items=tuple(ITEMS), updated=TIMELINE.updated), SITE)
    assert first == again
    assert first.endswith(b"}\n") and not first.endswith(b"\n\n")
    assert list(json.loads(first)) == [
        "version",
        "title",
        "home_page_url",
        "feed_url",
        "description",
        "language",
        "items",
    ]


@pytest.mark.parametrize("language", ["hi", None])
def test_empty_timeline(language: str | None) -> None:
    site = SiteSettings(
        title="empty",
        link="http://127.0.0.1:8080/",
        description="nothing yet",
        language=language,
        timezone="UTC",
        base_url="http://127.0.0.1:8080/",
    )
    feed = render(Timeline(), site)
    assert feed["items"] == []
    assert feed["feed_url"] == "http://127.0.0.1:8080/feed.json"
    assert ("language" in feed) is (language is not None)

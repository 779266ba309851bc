"""aggregator.opml: OPML 2.0 out, any real-world OPML in, hostile XML refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import listparser
import pytest
from lxml import etree

from aggregator.errors import AggregatorError
from aggregator.parse import opml
from aggregator.parse.opml import OpmlFeed, parse_opml
from aggregator.render.opml import render_opml
from aggregator.settings import SiteSettings
from aggregator.types import SourceCredit

DATA = Path(__file__).parent / "data" / "opml"

SITE = SiteSettings(
    title="हिंदी समाचार डाइजेस्ट & more",
    link="https://digest.example/",
    description="x",
    language="hi",
    timezone="UTC",
    base_url="https://digest.example/",
)
SOURCES = (
    SourceCredit(
        name="bbc-hindi",
        title="बीबीसी हिंदी",
        feed_url="https://feeds.bbci.co.uk/hindi/rss.xml",
        site_url="https://www.bbc.com/hindi",
    ),
    SourceCredit(
        name="quotes",
        title='Quotes "&" <angles>',
        feed_url="http://quotes.example/feed?a=1&b=2",
    ),
    SourceCredit(name="local", title="Local file", feed_url="file:///srv/feeds/local.xml"),
    SourceCredit(
        name="amar-ujala",
        title="अमर उजाला",
        feed_url="https://www.amarujala.com/rss/breaking-news.xml",
        site_url="https://www.amarujala.com/",
    ),
)
PUBLIC = [s for s in SOURCES if s.name != "local"]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_render_is_opml_2() -> None:
    root = etree.fromstring(render_opml(SOURCES, SITE))
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title") == SITE.title
    outlines = root.findall("body/outline")
    assert len(outlines) == 3
    bbc = outlines[0]
    assert {str(k): str(v) for k, v in bbc.attrib.items()} == {
        "type": "rss",
        "text": "बीबीसी हिंदी",
        "title": "बीबीसी हिंदी",
        "xmlUrl": "https://feeds.bbci.co.uk/hindi/rss.xml",
        "htmlUrl": "https://www.bbc.com/hindi",
    }
    assert outlines[1].get("htmlUrl") is None


def test_render_leaves_out_local_sources_and_is_deterministic() -> None:
    data = render_opml(SOURCES, SITE)
    assert b"file://" not in data
    assert data == render_opml(list(SOURCES), SITE)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<opml")
    assert "बीबीसी हिंदी".encode() in data  # UTF-8, not character references


def test_render_parse_round_trip() -> None:
    feeds = parse_opml(render_opml(SOURCES, SITE))
    assert feeds == [OpmlFeed(s.feed_url, s.title) for s in PUBLIC]


def test_render_empty() -> None:
    data = render_opml([], SITE)
    assert parse_opml(data) == []
    assert listparser.parse(data).feeds == []


def test_listparser_reads_every_feed_we_write() -> None:
    result = listparser.parse(render_opml(SOURCES, SITE))
    assert not result.bozo, result.bozo_exception
    assert result.meta.title == SITE.title
    assert [(f.url, f.title) for f in result.feeds] == [(s.feed_url, s.title) for s in PUBLIC]


def test_nested_categories_real_world_shape() -> None:
    assert parse_opml(read("nested-categories.opml")) == [
        # Listed again under World: read once, with both folders as tags.
        OpmlFeed("https://feeds.bbci.co.uk/hindi/rss.xml", "बीबीसी हिंदी", ("समाचार", "World")),
        OpmlFeed(
            "https://www.amarujala.com/rss/breaking-news.xml", "अमर उजाला", ("समाचार", "Regional")
        ),
        OpmlFeed(
            "https://deep.example/feed.xml",
            "Text wins over title",
            ("समाचार", "Regional", "Deeper still"),  # every enclosing folder, outermost first
        ),
        OpmlFeed("https://www.aljazeera.com/xml/rss/all.xml", "Al Jazeera", ("World",)),  # no type
        OpmlFeed("http://untitled.example/rss", None, ("World",)),  # neither title nor text
        OpmlFeed("https://blank.example/atom.xml", None, ("World",)),  # blank title, padded URL
        OpmlFeed("https://atom.example/feed.atom", "An Atom feed", ("World",)),  # type="atom"
        # The duplicate, the link, the include, file://, no URL, a relative URL: left out.
    ]


def test_agrees_with_listparser_on_http_feeds() -> None:
    """Same feeds and titles as listparser finds, minus what is not an http(s) feed."""
    data = read("nested-categories.opml")
    ours = {f.url: f.title for f in parse_opml(data)}
    theirs = {
        f.url.strip(): f.title.strip() or None
        for f in listparser.parse(data).feeds
        if f.url.strip().startswith(("http://", "https://"))
    }
    assert ours == theirs


def test_opml_1_lowercase_attributes_and_latin1() -> None:
    assert parse_opml(read("opml1-lowercase.opml")) == [
        OpmlFeed("http://cafe.example/rss", "Café news")
    ]


@pytest.mark.parametrize("name", ["entity-bomb.opml", "external-entity.opml", "entity-utf16.opml"])
def test_entities_are_refused_not_expanded(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(AggregatorError, match=r"declares XML entities"):
        parse_opml(read(name))
    assert time.monotonic() - started < 1.0


def test_entity_bomb_without_the_prolog_scan_still_does_not_expand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even past the byte scan, the parser itself never expands a bomb."""
    monkeypatch.setattr(opml, "_ENTITY_DECLARATION", re.compile(rb"(?!)"))
    started = time.monotonic()
    with pytest.raises(AggregatorError) as caught:
        parse_opml(read("entity-bomb.opml"))
    assert "lollol" not in str(caught.value)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-opml.xml", r"^not an OPML file: the root element is <rss>, not <opml>$"),
        ("not-xml.opml", r"^not an OPML file: not well-formed XML: "),
        ("no-body.opml", r"^not an OPML file: <opml> has no <body>$"),
    ],
)
def test_not_opml_is_a_clear_error(name: str, message: str) -> None:
    with pytest.raises(AggregatorError, match=message) as caught:
        parse_opml(read(name))
    assert "\n" not in str(caught.value)


def test_empty_input() -> None:
    with pytest.raises(AggregatorError, match="empty"):
        parse_opml(b"  \n")


# -- tags as OPML categories -----------------------------------------------------------------

TAGS = {"bbc-hindi": ("hindi", "news"), "quotes": (), "amar-ujala": ("hindi",), "local": ("x",)}


def test_sources_are_grouped_in_a_folder_per_first_tag_with_every_tag_as_category() -> None:
    root = etree.fromstring(render_opml(SOURCES, SITE, TAGS))
    body = root.find("body")
    assert body is not None
    folders = [o for o in body if o.get("xmlUrl") is None]
    assert [(f.get("text"), f.get("title")) for f in folders] == [("hindi", "hindi")]
    assert [o.get("text") for o in folders[0]] == ["बीबीसी हिंदी", "अमर उजाला"]
    assert [o.get("category") for o in folders[0]] == ["hindi,news", "hindi"]
    loose = [o for o in body if o.get("xmlUrl") is not None]
    assert [(o.get("text"), o.get("category")) for o in loose] == [('Quotes "&" <angles>', None)]
    assert b"file://" not in etree.tostring(root)  # the local source and its folder: left out


def test_readers_import_the_folders_and_the_categories() -> None:
    """listparser reads OPML as feed readers do: the folder is a category, `category` tags."""
    result = listparser.parse(render_opml(SOURCES, SITE, TAGS))
    assert not result.bozo, result.bozo_exception
    bbc = next(f for f in result.feeds if f.url == "https://feeds.bbci.co.uk/hindi/rss.xml")
    assert ["hindi"] in bbc.categories
    assert set(bbc.tags) == {"hindi", "news"}


def test_tags_round_trip_through_opml() -> None:
    feeds = parse_opml(render_opml(SOURCES, SITE, TAGS))
    assert {f.url: f.tags for f in feeds} == {
        "https://feeds.bbci.co.uk/hindi/rss.xml": ("hindi", "news"),
        "http://quotes.example/feed?a=1&b=2": (),
        "https://www.amarujala.com/rss/breaking-news.xml": ("hindi",),
    }


def test_categories_become_tags() -> None:
    data = (
        '<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>'
        '<outline text="World">'
        '<outline type="rss" text="A" xmlUrl="https://a.example/f"'
        ' category="/news, /Boston/Weather,,"/>'
        "</outline>"
        '<outline type="rss" text="B" xmlUrl="https://b.example/f" category="hindi,&#10;  spaced'
        '&#9;  out "/>'
        '<outline type="rss" text="C" xmlUrl="https://c.example/f" category="'
        + ",".join(f"t{n}" for n in range(30))
        + '"/>'
        f'<outline type="rss" text="D" xmlUrl="https://d.example/f" category="{"x" * 500}"/>'
        "</body></opml>"
    ).encode()
    tags = {f.url: f.tags for f in parse_opml(data)}
    assert tags["https://a.example/f"] == ("World", "news", "Boston/Weather")
    assert tags["https://b.example/f"] == ("hindi", "spaced out")
    assert tags["https://c.example/f"] == tuple(f"t{n}" for n in range(opml.MAX_TAGS))
    assert tags["https://d.example/f"] == ("x" * opml.MAX_TAG_CHARS,)

"""Small documents distilled from a run of feedparser's test corpus through parse and render.

Each file in tests/data/corpus/ is our own few-line document (not a corpus file). Every one
goes through `parse_feed` and the four renderers, and every rendering must be well-formed and
free of characters its format forbids. The `c1-control-*` documents reproduce what the corpus
run found: C1 control characters (U+0080–U+009F) pass from the feed into every output, where
the HTML standard forbids them ("control-character-in-input-stream") and the W3C feed
validator warns (BadCharacters). `atom-feed-id-invalid-urn-uuid` reproduces a publisher's
malformed `urn:uuid:` feed id copied into Atom `<source><id>` (W3C validator: InvalidUUID).
The other documents are the corpus's trickiest categories (encodings, entities, ill-formed
XML) and pin the titles they parse to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lxml.etree
import lxml.html
import pytest
import regex

from aggregator.parse.feed import parse_feed
from aggregator.render.feeds import render_atom, render_rss
from aggregator.render.jsonfeed import render_json_feed
from aggregator.render.page import render_html
from aggregator.settings import SiteSettings
from aggregator.timeline import Selection, build_timeline, order_date
from aggregator.types import ParsedFeed, SourceCredit, StoredEntry, Timeline

CORPUS = Path(__file__).parent / "data" / "corpus"
FIXTURES = sorted(path.name for path in CORPUS.glob("*.xml"))
URL = "http://127.0.0.1/feed.xml"
NOW = datetime(2025, 7, 12, 10, 0, tzinfo=UTC)
SITE = SiteSettings(
    title="Corpus",
    link="http://127.0.0.1:8080/",
    description="Regressions from feedparser's corpus",
    language="en",
    timezone="UTC",
    base_url="http://127.0.0.1:8080/",
)
# The Content-Type each document is served with; the rest are served as application/xml.
CONTENT_TYPES = {
    "charset-header-overrides-declaration.xml": "application/xml; charset=koi8-r",
}
# Characters XML 1.0 forbids anywhere.
XML_FORBIDDEN = regex.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# C0/C1 controls other than whitespace, and noncharacters: HTML parse errors, W3C feed
# validator warnings (BadCharacters). JSON allows them, so the JSON Feed is not checked.
CONTROLS = regex.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")

# The W3C feed validator's test for a `urn:uuid:` id.
UUID_URN = regex.compile(
    r"^urn:uuid:[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$", regex.IGNORECASE
)
ATOM = "{http://www.w3.org/2005/Atom}"

Renderer = Callable[[Timeline, SiteSettings], bytes]
RENDERERS: dict[str, Renderer] = {
    "rss": render_rss,
    "atom": render_atom,
    "json": render_json_feed,
    "html": render_html,
}

# What the tricky-but-working documents parse to: (feed title, entry titles).
EXPECTED_TITLES: dict[str, tuple[str | None, list[str]]] = {
    # UTF-16LE with a byte order mark.
    "utf16le-bom.xml": ("Grüße", ["Grüße aus Köln"]),
    # Declares UTF-8 but is KOI8-R; the HTTP charset wins.
    "charset-header-overrides-declaration.xml": ("KOI8", ["Привет, мир"]),
    # Declares gb2312 but holds a character only gb18030 has.
    "gb2312-declared-gb18030-char.xml": ("Channel", ["\u55de中文"]),
    # HTML named entities XML does not define: read by the loose parser.
    "html-entities-undefined-in-xml.xml": ("Channel", ["Café … — done"]),
    # RSS titles are HTML-ish: "&amp;amp;" is one ampersand.
    "double-escaped-ampersand.xml": ("Channel", ["Tom & Jerry <3"]),
    # A bare "&" in a link makes the document ill-formed.
    "unescaped-ampersand-in-link.xml": ("Channel", ["Query & link"]),
    # A CDATA section never closed: the item before it and the item itself survive.
    "incomplete-cdata.xml": ("Channel", ["Before the break", "Broken"]),
    # The DOCTYPE (and its entity) is stripped before parsing; the undefined "&who;" is dropped.
    "doctype-entity-declaration.xml": ("Channel", ["Hello"]),
    # An element with an undeclared namespace prefix.
    "undeclared-namespace-prefix.xml": ("Channel", ["Prefixed"]),
    # A comment before the XML declaration (as in every feedparser corpus file).
    "comment-before-xml-declaration.xml": ("Channel", ["After the comment"]),
}


def _parse(name: str) -> ParsedFeed:
    content_type = CONTENT_TYPES.get(name, "application/xml")
    body = (CORPUS / name).read_bytes()
    return parse_feed(body, {"content-type": content_type}, URL, timezone="UTC")


def _timeline(feed: ParsedFeed) -> Timeline:
    credit = SourceCredit(
        name="corpus",
        title=feed.title or "corpus",
        feed_url=URL,
        site_url=feed.link,
        feed_id=feed.feed_id,
    )
    entries = [
        StoredEntry(
            source="corpus",
            entry_id=e.entry_id,
            title=e.title,
            link=e.link,
            summary_html=e.summary_html,
            teaser=e.teaser,
            author=e.author,
            categories=e.categories,
            published=e.published,
            updated=e.updated,
            first_seen=NOW,
            sort_date=order_date(e.published, e.updated, NOW),
        )
        for e in feed.entries
    ]
    return build_timeline(
        entries,
        {"corpus": credit},
        now=NOW,
        selection=Selection(max_items=1000, max_age=timedelta(days=365 * 100)),
    )


def _render(name: str, renderer: str) -> tuple[Timeline, bytes]:
    timeline = _timeline(_parse(name))
    return timeline, RENDERERS[renderer](timeline, SITE)


def test_fixtures_are_present() -> None:
    assert set(EXPECTED_TITLES) <= set(FIXTURES)
    assert len(FIXTURES) >= len(EXPECTED_TITLES) + 3


@pytest.mark.parametrize("name", FIXTURES)
def test_parses_to_entries(name: str) -> None:
    feed = _parse(name)
    assert feed.entries, f"{name}: no entries"


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("name", FIXTURES)
def test_rendering_is_well_formed(name: str, renderer: str) -> None:
    timeline, output = _render(name, renderer)
    assert timeline.items
    if renderer in ("rss", "atom"):
        bad = XML_FORBIDDEN.search(output.decode("utf-8"))
        assert bad is None, f"{name}: {renderer} holds U+{ord(bad.group()):04X}"
        root = lxml.etree.fromstring(output)
        tag = "item" if renderer == "rss" else f"{ATOM}entry"
        assert len(root.findall(f".//{tag}")) == len(timeline.items)
    elif renderer == "json":
        assert len(json.loads(output)["items"]) == len(timeline.items)
    else:
        assert lxml.html.document_fromstring(output).find(".//body") is not None


@pytest.mark.parametrize("renderer", ["rss", "atom", "html"])
@pytest.mark.parametrize("name", FIXTURES)
def test_rendering_has_no_control_characters(name: str, renderer: str) -> None:
    _, output = _render(name, renderer)
    found = sorted({f"U+{ord(c):04X}" for c in CONTROLS.findall(output.decode("utf-8"))})
    assert found == [], f"{name}: {renderer} holds control characters {found}"


@pytest.mark.parametrize("name", FIXTURES)
def test_atom_uuid_ids_are_valid(name: str) -> None:
    _, output = _render(name, "atom")
    ids = [el.text or "" for el in lxml.etree.fromstring(output).iter(f"{ATOM}id")]
    bad = [i for i in ids if i.lower().startswith("urn:uuid:") and not UUID_URN.match(i)]
    assert bad == [], f"{name}: Atom ids that are not valid UUID URNs: {bad}"


@pytest.mark.parametrize("name", sorted(EXPECTED_TITLES))
def test_parses_to_expected_titles(name: str) -> None:
    feed = _parse(name)
    title, entry_titles = EXPECTED_TITLES[name]
    assert feed.title == title
    assert [e.title for e in feed.entries] == entry_titles


def test_unescaped_ampersand_in_link_is_kept() -> None:
    feed = _parse("unescaped-ampersand-in-link.xml")
    assert [e.link for e in feed.entries] == ["http://example.org/?a=1&b=2"]

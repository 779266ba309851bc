"""The whole pipeline through the real CLI, against a real HTTP server serving 21 feeds.

`aggregator once` runs as a subprocess; the server records what it was sent. Checks: every
item exactly once in both outputs, newest first, titles byte-exact (Devanagari included),
ids/titles/links/dates round-trip through feedparser, and a second run sends conditional
requests, gets 304s and leaves both files byte-identical.
"""

from __future__ import annotations

import calendar
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import jsonschema  # type: ignore[import-untyped]
import listparser
import pytest
from lxml import etree, html

from aggregator.parse.opml import parse_opml
from tests.conftest import run_cli
from tests.feedfactory import Item, atom, rss1, rss2
from tests.feedserver import FeedServer

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)

HINDI = [
    "ग़ज़ा में पानी भरने का इंतज़ार कर रहे छह बच्चों की इसराइली हवाई हमले में मौत",
    "राज्यसभा के लिए नामित हुए उज्ज्वल निकम, पीएम मोदी ने मराठी में फोन कर दी जानकारी",
    "“रुई बेचते-बेचते एक्टिंग सीखी है मैंने” – जानिए ‘पंचायत’ के बिनोद का दिलचस्प सफर",
    "Samsung Days Sale 2025: Galaxy S24 Ultra, LED TV, फ्रिज और अन्य प्रोडक्ट्स पर भारी छूट",
    "33,000 सालाना जमा करें और पाएं ₹15 लाख से ज्यादा! जानें Sukanya Yojana का पूरा प्लान",
]
ENGLISH = [
    "Monsoon session opens with a debate on flood relief",
    "AT&T & “quotes” stay as text: 3 < 5 in a plain title",
    "Scientists map a glacier's retreat 👩‍🔬 over forty years",
    "Central bank holds rates steady, citing food prices",
]
TEASER = (
    "देश के वरिष्ठ और चर्चित विशेष लोक अभियोजक उज्ज्वल निकम को राष्ट्रपति द्रौपदी मुर्मु ने "
    "राज्यसभा के लिए नामित किया है। यह जानकारी उन्हें प्रधानमंत्री ने स्वयं फोन पर दी।"
)


@dataclass(frozen=True)
class Expected:
    title: str
    link: str
    date: datetime
    source: str


@dataclass(frozen=True)
class World:
    server: FeedServer
    config: Path
    output: Path
    expected: dict[str, Expected]  # by link
    first_rss: bytes
    first_atom: bytes


def _build_feeds(server: FeedServer) -> tuple[list[tuple[str, str]], dict[str, Expected]]:
    """21 feeds: 7 RSS 2.0 (Hindi), 7 Atom 1.0 (English), 7 RSS 1.0 (mixed)."""
    feeds: list[tuple[str, str]] = []
    expected: dict[str, Expected] = {}
    minute = 0
    for n in range(21):
        kind = ("rss2", "atom", "rss1")[n % 3]
        pool = HINDI if kind == "rss2" else ENGLISH if kind == "atom" else HINDI + ENGLISH
        site = f"https://site{n}.example.org/"
        title = f"स्रोत {n}" if kind != "atom" else f"Source {n}"
        items = []
        for i in range(4):
            minute += 37
            link = f"{site}story/{n}/{i}"
            items.append(
                Item(
                    title=f"{pool[(n + i) % len(pool)]} [{n}.{i}]",
                    link=link,
                    guid=f"tag:site{n}.example.org,2025:{i}",
                    date=BASE - timedelta(minutes=minute),
                    summary_html=f"<p>{TEASER}</p><p><a href='/more'>और पढ़ें</a></p>",
                    author="संवाददाता" if i % 2 else None,
                    categories=("देश",) if kind == "rss2" else (),
                )
            )
            expected[link] = Expected(items[-1].title, link, items[-1].date, title)
        if kind == "rss2":
            body = rss2(title, site, items)
        elif kind == "atom":
            body = atom(title, site, f"tag:site{n}.example.org,2025:feed", items)
        else:
            body = rss1(title, site, items)
        path = f"/feeds/{n}.xml"
        server.add(path, body)
        feeds.append((f"source-{n}", server.url(path)))
    return feeds, expected


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = FeedServer().start()
    try:
        root = tmp_path_factory.mktemp("e2e")
        feeds, expected = _build_feeds(server)
        lines = [
            "[aggregator]",
            'title = "डाइजेस्ट"',
            'description = "Everything, merged"',
            'language = "hi"',
            'timezone = "Asia/Kolkata"',
            'base_url = "http://127.0.0.1:8080/"',
            "[publish]",
            'max_age = "100000d"',
        ]
        for name, url in feeds:
            lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
        config = root / "feeds.toml"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = run_cli("once", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        output = root / "output"
        yield World(
            server,
            config,
            output,
            expected,
            (output / "rss.xml").read_bytes(),
            (output / "atom.xml").read_bytes(),
        )
    finally:
        server.stop()


def _rss_items(data: bytes) -> list[etree._Element]:
    return etree.fromstring(data).findall("channel/item")


def _atom_entries(data: bytes) -> list[etree._Element]:
    return etree.fromstring(data).findall(f"{ATOM}entry")


def test_every_item_exactly_once_newest_first_in_rss(world: World) -> None:
    items = _rss_items(world.first_rss)
    links = [i.findtext("link") for i in items]
    newest_first = sorted(world.expected.values(), key=lambda e: e.date, reverse=True)
    assert links == [e.link for e in newest_first]
    for item in items:
        want = world.expected[item.findtext("link") or ""]
        assert item.findtext("title") == want.title
        assert item.find("source") is not None
        assert item.findtext("source") == want.source
        assert item.findtext("pubDate") == want.date.strftime("%a, %d %b %Y %H:%M:%S +0000")


def _alternate(entry: etree._Element) -> str:
    hrefs = entry.xpath("a:link[not(@rel) or @rel='alternate']/@href", namespaces={"a": ATOM[1:-1]})
    assert isinstance(hrefs, list) and len(hrefs) == 1
    return str(hrefs[0])


def test_every_item_exactly_once_newest_first_in_atom(world: World) -> None:
    entries = _atom_entries(world.first_atom)
    links = [_alternate(e) for e in entries]
    newest_first = sorted(world.expected.values(), key=lambda e: e.date, reverse=True)
    assert links == [e.link for e in newest_first]
    for entry, link in zip(entries, links, strict=True):
        want = world.expected[link or ""]
        assert entry.findtext(f"{ATOM}title") == want.title
        assert entry.findtext(f"{ATOM}source/{ATOM}title") == want.source
        assert datetime.fromisoformat(entry.findtext(f"{ATOM}published") or "") == want.date


def test_titles_are_byte_exact_utf8(world: World) -> None:
    for want in world.expected.values():
        if not any(c in want.title for c in "&<>"):
            assert world.first_rss.count(want.title.encode("utf-8")) == 1
            assert world.first_atom.count(want.title.encode("utf-8")) == 1
    # RSS carries "&" and "<" in plain text as hex references, as the RSS Advisory Board asks.
    assert "AT&#x26;T &#x26; “quotes” stay as text: 3 &#x3C; 5".encode() in world.first_rss
    assert "AT&amp;T &amp; “quotes” stay as text: 3 &lt; 5".encode() in world.first_atom


def test_teaser_text_survives_in_summaries(world: World) -> None:
    for item in _rss_items(world.first_rss):
        description = item.findtext("description") or ""
        assert TEASER in description
        assert "<a href=" in description and "/more" in description  # relative link made absolute
        assert "https://site" in description


def test_outputs_round_trip_through_feedparser(world: World) -> None:
    for data in (world.first_rss, world.first_atom):
        parsed = feedparser.parse(io.BytesIO(data))
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert len(parsed.entries) == len(world.expected)
        ids = [e.id for e in parsed.entries]
        assert len(set(ids)) == len(ids)
        assert all(i.startswith("urn:uuid:") for i in ids)
        for entry in parsed.entries:
            want = world.expected[entry.link]
            assert entry.title == want.title
            assert calendar.timegm(entry.published_parsed) == int(want.date.timestamp())
    rss_ids = [e.id for e in feedparser.parse(io.BytesIO(world.first_rss)).entries]
    atom_ids = [e.id for e in feedparser.parse(io.BytesIO(world.first_atom)).entries]
    assert rss_ids == atom_ids


def test_second_run_is_conditional_and_byte_identical(world: World) -> None:
    rss_mtime = (world.output / "rss.xml").stat().st_mtime_ns
    world.server.clear()
    result = run_cli("once", "--config", str(world.config))
    assert result.returncode == 0, result.stderr
    seen = world.server.seen()
    assert len(seen) == 21
    for request in seen:
        assert "if-none-match" in request.headers
        assert "if-modified-since" in request.headers
        assert request.status == 304
    assert result.stdout.count("not modified") == 21
    assert (world.output / "rss.xml").read_bytes() == world.first_rss
    assert (world.output / "atom.xml").read_bytes() == world.first_atom
    assert (world.output / "rss.xml").stat().st_mtime_ns == rss_mtime


def test_user_agent_names_the_project(world: World) -> None:
    agents = {r.headers.get("user-agent", "") for r in world.server.seen()}
    assert agents and all(a.startswith("aggregator/") for a in agents)


def _text(element: etree._Element) -> str:
    return "".join(str(t) for t in element.itertext())


def test_all_five_outputs_are_published_and_valid(world: World) -> None:
    """feed.json against the JSON Feed 1.1 schema, sources.opml through listparser and our own
    importer, index.html through an HTML parser; every item and source accounted for."""
    feed = json.loads((world.output / "feed.json").read_text(encoding="utf-8"))
    schema = json.loads(
        (Path(__file__).parent / "data" / "jsonfeed" / "schema-1.1.json").read_text(
            encoding="utf-8"
        )
    )
    jsonschema.validate(feed, schema)
    assert sorted(i["url"] for i in feed["items"]) == sorted(world.expected)
    assert {i["title"] for i in feed["items"]} == {e.title for e in world.expected.values()}

    opml = (world.output / "sources.opml").read_bytes()
    listed = listparser.parse(opml)
    assert not listed.bozo
    assert len(listed.feeds) == 21
    assert {f.url for f in parse_opml(opml)} == {f.url for f in listed.feeds}

    page = html.fromstring((world.output / "index.html").read_bytes())
    anchors = page.xpath("//article/h3/a")
    assert isinstance(anchors, list)
    headlines = [_text(a) for a in anchors if isinstance(a, etree._Element)]
    assert sorted(headlines) == sorted(e.title for e in world.expected.values())
    assert page.get("lang") == "hi"
    assert "13 जुलाई 2025" in _text(page)

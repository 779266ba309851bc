"""JSON Feed sources through the real CLI, against a real feed server on 127.0.0.1.

`once` publishes a JSON Feed source exactly as it publishes the same items from RSS (every
output file, byte for byte, once the source's own URL is set aside); malformed JSON Feeds
fail one clear line each, logged with their source's name, while the others publish; `add`
finds a JSON Feed by its URL or by a page's `<link rel="alternate">`, ranked after Atom and
RSS.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.discover import feed_links
from tests.conftest import run_cli
from tests.feedfactory import Item, json_feed, rss2
from tests.feedserver import FeedServer

FEED_JSON = "application/feed+json"
HTML = "text/html; charset=utf-8"
IST = timezone(timedelta(hours=5, minutes=30))
OUTPUTS = ("atom.xml", "rss.xml", "feed.json", "index.html", "sources.opml")
SITE = "https://samachar.example/"
TEASER = (
    "देश के वरिष्ठ और चर्चित विशेष लोक अभियोजक उज्ज्वल निकम को राष्ट्रपति द्रौपदी मुर्मु ने "
    "राज्यसभा के लिए नामित किया है। यह जानकारी उन्हें प्रधानमंत्री ने स्वयं फोन पर दी।"
)
TITLES = [
    "ग़ज़ा में पानी भरने का इंतज़ार कर रहे छह बच्चों की इसराइली हवाई हमले में मौत",
    "राज्यसभा के लिए नामित हुए उज्ज्वल निकम, पीएम मोदी ने मराठी में फोन कर दी जानकारी",
    "“रुई बेचते-बेचते एक्टिंग सीखी है मैंने” – जानिए ‘पंचायत’ के बिनोद का दिलचस्प सफर",
    "33,000 सालाना जमा करें और पाएं ₹15 लाख से ज्यादा! जानें Sukanya Yojana का पूरा प्लान",
    "क्षत्रिय श्रृंगार द्व्यर्थक 👩‍🔬 परिवार 👨‍👩‍👧‍👦 ख़बर",
]
# Hindi items in two zones, with a trailing "और पढ़ें" link, a relative link, authors and
# categories: what both documents below are built from.
ITEMS = [
    Item(
        title=title,
        link=f"{SITE}story/{n}",
        guid=f"tag:samachar.example,2025:{n}",
        date=datetime(2025, 7, 13, 10, 7 * n, tzinfo=IST if n % 2 else UTC),
        summary_html=f"<p>{TEASER}</p><p><a href='/more/{n}'>और पढ़ें</a></p>",
        author="संवाददाता" if n % 2 else None,
        categories=("देश", "राजनीति") if n % 3 else (),
    )
    for n, title in enumerate(TITLES)
]


def _config(root: Path, sources: dict[str, str], *poll: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "[aggregator]",
        'title = "डाइजेस्ट"',
        'language = "hi"',
        'timezone = "Asia/Kolkata"',
        'base_url = "http://127.0.0.1:8080/"',
        "[poll]",
        *poll,
        "[publish]",
        'max_age = "100000d"',
    ]
    for name, url in sources.items():
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    config = root / "feeds.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _once(config: Path) -> tuple[str, str]:
    result = run_cli("once", "--config", str(config), cwd=config.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.mark.parametrize("version", ["1.1", "1"])
def test_a_json_feed_source_is_published_exactly_like_the_same_rss_source(
    tmp_path: Path, feed_server: FeedServer, version: str
) -> None:
    rss_url = feed_server.add("/samachar.xml", rss2("समाचार", SITE, ITEMS))
    json_url = feed_server.add(
        "/samachar.json", json_feed("समाचार", SITE, ITEMS, version=version), FEED_JSON
    )
    # The same source name: the public ids are made from it and each item's own id.
    from_rss = _config(tmp_path / "rss", {"samachar": rss_url})
    from_json = _config(tmp_path / "json", {"samachar": json_url})
    for config in (from_rss, from_json):
        stdout, stderr = _once(config)
        assert f"samachar  {len(ITEMS)} new" in stdout, stdout
        assert "WARNING" not in stderr, stderr

    published = json.loads((tmp_path / "json" / "output" / "feed.json").read_text("utf-8"))
    newest_first = sorted(ITEMS, key=lambda item: item.date, reverse=True)
    assert [item["title"] for item in published["items"]] == [i.title for i in newest_first]
    assert published["items"][0]["summary"].startswith(TEASER[:40])
    for name in OUTPUTS:
        expected = (tmp_path / "rss" / "output" / name).read_text("utf-8")
        # The one difference: where the source is (its credit in each file names its URL).
        got = (tmp_path / "json" / "output" / name).read_text("utf-8").replace(json_url, rss_url)
        assert json_url not in expected
        assert got == expected, name


# A document, its Content-Type, and the one line it fails with.
MALFORMED = {
    "truncated": (
        b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "1"',
        FEED_JSON,
        "malformed JSON Feed: not valid JSON at line 1, column 69: Expecting ',' delimiter",
    ),
    "no-version": (b'{"title": "x", "items": []}', FEED_JSON, 'malformed JSON Feed: no "version"'),
    "api-error": (
        b'{"error": {"code": 503, "message": "unavailable"}}',
        "application/json",
        'got JSON, not a feed: no "version"',
    ),
    "items-string": (
        b'{"version": "https://jsonfeed.org/version/1", "items": "none"}',
        "application/json",
        'malformed JSON Feed: "items" is a string, not an array',
    ),
    "nan": (
        b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": NaN}]}',
        FEED_JSON,
        "malformed JSON Feed: NaN is not a JSON value",
    ),
    "deep": (
        b'{"a": ' + b"[" * 50_000,
        FEED_JSON,
        "malformed JSON Feed: nested too deeply to read",
    ),
    "latin-1": (
        '{"version": "https://jsonfeed.org/version/1.1", "title": "Café"}'.encode("latin-1"),
        FEED_JSON,
        "malformed JSON Feed: not UTF-8 (byte 0xE9 at offset 61)",
    ),
}


def test_malformed_json_feeds_fail_one_line_each_and_the_rest_is_published(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    sources = {"good": feed_server.add("/good.json", json_feed("समाचार", SITE, ITEMS), FEED_JSON)}
    for name, (body, content_type, _) in MALFORMED.items():
        sources[name] = feed_server.add(f"/{name}.json", body, content_type)
    # Readable but for one field: published, and the field named in a warning.
    sources["odd-date"] = feed_server.add(
        "/odd-date.json",
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "items": [{"id": "odd", "url": f"{SITE}odd", "title": "अजीब", "date_published": 5}],
            }
        ).encode(),
        FEED_JSON,
    )
    config = _config(tmp_path, sources)
    stdout, stderr = _once(config)

    lines = dict(re.findall(r"^(\S+) {2,}(.*)$", stdout, re.MULTILINE))
    for name, (_, _, error) in MALFORMED.items():
        assert lines[name] == f"error: {error}", stdout
        assert stderr.count(f"WARNING {name}: {error}\n") == 1, stderr
    assert "Traceback" not in stderr
    assert "odd-date: malformed JSON Feed, read what could be read: items[0].date_published" in (
        stderr
    )
    status = run_cli("status", "--json", "--config", str(config), cwd=tmp_path)
    errors = {row["name"]: row["error"] for row in json.loads(status.stdout)}
    assert errors == {
        "good": None,
        "odd-date": None,
        **{name: error for name, (_, _, error) in MALFORMED.items()},
    }
    published = json.loads((tmp_path / "output" / "feed.json").read_text("utf-8"))
    assert {item["title"] for item in published["items"]} == {*TITLES, "अजीब"}


def test_add_of_a_json_feed_url_names_the_source_from_its_title(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    url = feed_server.add("/feed.json", json_feed("बीबीसी हिंदी", SITE, ITEMS), FEED_JSON)
    config = tmp_path / "feeds.toml"
    result = run_cli("add", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f'added "bibisi-himdi": {url}' in result.stdout
    assert [(s.name, s.url) for s in load_config(config).sources] == [("bibisi-himdi", url)]


def test_add_of_a_page_follows_its_json_feed_link(tmp_path: Path, feed_server: FeedServer) -> None:
    feed = feed_server.add("/feed.json", json_feed("JSON News", SITE, ITEMS[:1]), FEED_JSON)
    page = feed_server.add(
        "/",
        b'<!doctype html><html><head><link rel="alternate" type="application/feed+json"'
        b' href="/feed.json"></head><body>x</body></html>',
        HTML,
    )
    config = tmp_path / "feeds.toml"
    result = run_cli("add", page, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert [(s.name, s.url) for s in load_config(config).sources] == [("json-news", feed)]


def _page(*links: str) -> bytes:
    head = "".join(f'<link rel="alternate" {attributes}>' for attributes in links)
    return f"<!doctype html><html><head>{head}</head><body>x</body></html>".encode()


@pytest.mark.parametrize(
    ("links", "found"),
    [
        # JSON Feed after RSS and Atom, whatever the order in the page.
        (
            [
                'type="application/feed+json" href="/feed.json"',
                'type="application/rss+xml" href="/rss.xml"',
                'type="application/atom+xml" href="/atom.xml"',
            ],
            ["/atom.xml", "/rss.xml", "/feed.json"],
        ),
        # Plain application/json only when its title says JSON Feed, and after feed+json.
        (
            [
                'type="application/json" title="JSON Feed" href="/titled.json"',
                'type="application/feed+json; charset=utf-8" href="/feed.json"',
                'type="application/json" href="/wp-json/wp/v2/pages/7"',
                'type="application/json" title="REST API" href="/api.json"',
                'type="application/json" title="My jsonfeed" href="/other.json"',
            ],
            ["/feed.json", "/titled.json", "/other.json"],
        ),
    ],
    ids=["ranked", "plain-json"],
)
def test_json_feed_links_are_found_after_atom_and_rss(links: list[str], found: list[str]) -> None:
    base = "https://site.example/"
    assert feed_links(_page(*links), base) == [base + path.lstrip("/") for path in found]


def test_a_json_feeds_dates_are_clamped_and_localized_like_rss_ones(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """A date a day ahead is placed at the time it was seen; a zone-less one is the source's."""
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    items = [
        {"id": "ahead", "url": f"{SITE}ahead", "title": "कल की ख़बर", "date_published": ahead},
        {
            "id": "here",
            "url": f"{SITE}here",
            "title": "स्थानीय",
            "date_published": "2025-07-13T15:30",
        },
    ]
    body = json.dumps({"version": "https://jsonfeed.org/version/1.1", "items": items}).encode()
    config = _config(tmp_path, {"dates": feed_server.add("/dates.json", body, FEED_JSON)})
    before = datetime.now(UTC)
    _once(config)
    items = json.loads((tmp_path / "output" / "feed.json").read_text("utf-8"))["items"]
    dates = {item["title"]: datetime.fromisoformat(item["date_published"]) for item in items}
    assert before - timedelta(seconds=1) <= dates["कल की ख़बर"] <= datetime.now(UTC)
    assert dates["स्थानीय"] == datetime(2025, 7, 13, 10, 0, tzinfo=UTC)  # 15:30 in Kolkata


def test_a_json_feed_is_bounded_by_the_parse_budget_and_the_body_cap(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Parsed in the parser pool like RSS: 400,000 items (seconds of work) fail with the
    budget's reason, a body over `max_bytes` with the fetch's, and the good source publishes."""
    many = b",".join([b'{"id": "1", "title": "a"}'] * 400_000)
    slow = b'{"version": "https://jsonfeed.org/version/1.1", "items": [' + many + b"]}"
    sources = {
        "good": feed_server.add("/good.json", json_feed("समाचार", SITE, ITEMS), FEED_JSON),
        "slow": feed_server.add("/slow.json", slow, FEED_JSON),
        "large": feed_server.add("/large.json", slow + b" " * 1_000, FEED_JSON),
    }
    config = _config(tmp_path, sources, 'parse_timeout = "5s"', f"max_bytes = {len(slow)}")
    stdout, _ = _once(config)
    lines = dict(re.findall(r"^(\S+) {2,}(.*)$", stdout, re.MULTILINE))
    assert lines["slow"] == "error: parse took longer than 5 s", stdout
    assert lines["large"].startswith("error: ") and "too large" in lines["large"], stdout
    assert lines["good"] == f"{len(ITEMS)} new"

"""`aggregator add` and `import-opml` as an operator meets them: the real CLI in a subprocess
against a real feed server on 127.0.0.1.

`add` fetches and parses the feed it is about to write (also one a page's link led to), names
the source from the feed's title, and says when it creates feeds.toml; `import-opml` says why
it skipped each outline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.edit_config import name_from_title
from tests.conftest import run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer

HTML = "text/html; charset=utf-8"
MINE = '# my digest\n[aggregator]\ntitle = "x"\n'


def _page_linking_to(href: str) -> bytes:
    return (
        '<!doctype html><html><head><link rel="alternate" type="application/rss+xml"'
        f' href="{href}"></head><body>नमस्ते</body></html>'
    ).encode()


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "feeds.toml"
    config.write_text(MINE, encoding="utf-8")
    return config


def test_add_of_a_page_whose_feed_link_answers_404_writes_nothing(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config = _config(tmp_path)
    page = feed_server.add("/", _page_linking_to("/gone.xml"), HTML)
    result = run_cli("add", page, "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert result.stderr == (
        f"error: cannot fetch the feed {feed_server.url('/gone.xml')} that {page} links to:"
        " HTTP 404 Not Found\n"
    )
    assert config.read_text(encoding="utf-8") == MINE
    # Nor is a missing feeds.toml created for a feed that was never added.
    absent = tmp_path / "absent.toml"
    assert run_cli("add", page, "--config", str(absent)).returncode == 1
    assert not absent.exists()


def test_add_of_a_page_whose_feed_link_is_no_feed_writes_nothing(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config = _config(tmp_path)
    feed_server.add("/feed.xml", b"<html><body>a page, not a feed</body></html>", HTML)
    page = feed_server.add("/", _page_linking_to("/feed.xml"), HTML)
    result = run_cli("add", page, "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"error: the feed {feed_server.url('/feed.xml')} that ")
    assert "is not a feed" in result.stderr and len(result.stderr.splitlines()) == 1
    assert config.read_text(encoding="utf-8") == MINE


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"\x00\x01\x02 not a feed", "application/octet-stream", "neither a feed"),
        (b'{"version": "https://jsonfeed.org/version/1.1"}', "application/json", "JSON"),
        (b"<?xml version='1.0'?><note><to>you</to></note>", "application/xml", "not an RSS"),
    ],
    ids=["binary", "json", "other-xml"],
)
def test_add_of_a_url_that_is_no_feed_writes_nothing(
    tmp_path: Path, feed_server: FeedServer, body: bytes, content_type: str, reason: str
) -> None:
    config = _config(tmp_path)
    url = feed_server.add("/thing", body, content_type)
    result = run_cli("add", url, "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"error: no feed found at {url}: "), result.stderr
    assert reason in result.stderr and len(result.stderr.splitlines()) == 1
    assert config.read_text(encoding="utf-8") == MINE


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("The Daily Example: News & Views", "the-daily-example-news-views"),
        ("बीबीसी हिंदी", "bibisi-himdi"),
    ],
)
def test_add_names_the_source_from_the_feeds_title(
    tmp_path: Path, feed_server: FeedServer, title: str, name: str
) -> None:
    config = _config(tmp_path)
    first = feed_server.add("/one.xml", rss2(title, "https://n.example/", []))
    second = feed_server.add("/two.xml", rss2(title, "https://n.example/", []))
    result = run_cli("add", first, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f'added "{name}": {first} to {config}\n'
    again = run_cli("add", second, "--config", str(config))  # the same title: a suffix
    assert f'added "{name}-2": {second}' in again.stdout, again.stderr
    sources = load_config(config).sources
    assert [(s.name, s.url) for s in sources] == [(name, first), (f"{name}-2", second)]


def test_add_to_a_missing_feeds_toml_says_it_creates_it(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    url = feed_server.add("/feed.xml", rss2("News", "https://n.example/", []))
    config = tmp_path / "feeds.toml"
    result = run_cli("add", url, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"created {config} (it did not exist)",
        f'added "news": {url} to {config}',
    ]
    assert [s.name for s in load_config(config).sources] == ["news"]
    # Once it exists, no such line.
    other = feed_server.add("/other.xml", rss2("Other", "https://n.example/", []))
    assert "created" not in run_cli("add", other, "--config", str(config)).stdout


def test_import_opml_says_why_it_skipped_each_outline(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[[feeds]]\nurl = "https://a.example/feed.xml"\nname = "a"\n', encoding="utf-8"
    )
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head><body>'
        '<outline text="News">'
        '<outline type="rss" text="A" xmlUrl="https://a.example/feed.xml"/>'
        '<outline type="rss" text="B" xmlUrl="https://b.example/rss"/>'
        '<outline type="rss" text="B again" xmlUrl="https://b.example/rss"/>'
        '<outline type="rss" text="B, shouting" xmlUrl="HTTPS://B.EXAMPLE/rss/"/>'
        '<outline type="rss" text="Local" xmlUrl="file:///etc/passwd"/>'
        '<outline type="link" text="Just a site" htmlUrl="https://c.example/"/>'
        "</outline></body></opml>",
        encoding="utf-8",
    )
    result = run_cli("import-opml", str(opml), "--config", str(config))
    assert result.returncode == 0, result.stderr
    skipped = sorted(line for line in result.stdout.splitlines() if line.startswith("skipped"))
    assert skipped == sorted(
        [
            "skipped  https://b.example/rss: a duplicate of an earlier outline in the file",
            "skipped  file:///etc/passwd: not an http(s) URL",
            "skipped  Just a site: no xmlUrl: not a feed subscription",
            'skipped  https://a.example/feed.xml: already in feeds.toml (source "a")',
            "skipped  HTTPS://B.EXAMPLE/rss/: a duplicate of an earlier outline in the file"
            ' (added as "b-example")',
        ]
    )
    assert "added    b-example" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"1 of 6 feeds in {opml} added to {config} (5 skipped)"
    )


def test_a_title_name_is_ascii_words_within_40_characters() -> None:
    assert name_from_title("नवभारत टाइम्स: ताज़ा ख़बरें") == "nvbhart-taims-taja-khbrem"
    assert name_from_title("Let's Talk — Öffentliche Ä") == "lets-talk-offentliche-a"
    long = name_from_title("A very long title that goes on and on past any column width")
    assert long == "a-very-long-title-that-goes-on-and-on"
    assert name_from_title("¡¿ — !?") is None
    assert name_from_title("") is None


def test_tags_round_trip_from_sources_opml_to_import_opml(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """One digest's sources.opml groups its sources by tag; importing it into another
    feeds.toml gives them those tags back, and a channel there selects by them."""
    feed_server.add("/a.xml", rss2("A", "https://a.example/", []))
    feed_server.add("/b.xml", rss2("B", "https://b.example/", []))
    first = tmp_path / "first"
    first.mkdir()
    (first / "feeds.toml").write_text(
        f'[[feeds]]\nurl = "{feed_server.url("/a.xml")}"\nname = "a"\ntags = ["हिंदी", "news"]\n'
        f'[[feeds]]\nurl = "{feed_server.url("/b.xml")}"\nname = "b"\ntags = ["world"]\n',
        encoding="utf-8",
    )
    published = run_cli("once", "--config", str(first / "feeds.toml"))
    assert published.returncode == 0, published.stderr
    second = tmp_path / "second" / "feeds.toml"
    second.parent.mkdir()
    second.write_text('[aggregator]\ntitle = "Second"\n', encoding="utf-8")
    result = run_cli("import-opml", str(first / "output" / "sources.opml"), "--config", str(second))
    assert result.returncode == 0, result.stderr
    config = load_config(second)
    assert {s.url: s.tags for s in config.sources} == {
        feed_server.url("/a.xml"): ("हिंदी", "news"),
        feed_server.url("/b.xml"): ("world",),
    }
    second.write_text(
        second.read_text(encoding="utf-8") + '\n[[channels]]\nname = "hi"\ntags = ["हिंदी"]\n',
        encoding="utf-8",
    )
    check = run_cli("check", "--config", str(second))
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""  # the tag is there: no warning
    (channel,) = load_config(second).channels
    assert [s.url for s in load_config(second).sources if s.name in channel.sources] == [
        feed_server.url("/a.xml")
    ]

"""aggregator.edit_config (feeds.toml edits) and aggregator.discover (finding the feed to add).

Edits must leave every byte the operator wrote where it was, add only `[[feeds]]` tables, and
leave a file `load_config` accepts. Discovery runs against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.discover import FoundFeed, discover_feed, feed_links
from aggregator.edit_config import add_source, import_opml, poll_settings
from aggregator.errors import (
    AggregatorError,
    ConfigError,
    DiscoveryError,
    DuplicateSourceError,
    EditError,
)
from aggregator.fetch import Fetcher
from aggregator.parse.opml import OpmlFeed, SkippedOutline, parse_opml
from tests.conftest import ROOT
from tests.feedfactory import Item, atom, rss2
from tests.feedserver import FeedServer

OPML = Path(__file__).parent / "data" / "opml"

CONFIG = """\
# aggregator configuration: a Hindi news digest.
#
# Comments, blank lines and odd spacing must survive every edit.

[aggregator]
title   = "हिंदी समाचार डाइजेस्ट"   # aligned on purpose
language = "hi"

[poll]
interval = "15m"
timeout  = "7s"


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------

[[feeds]]
url = "https://feeds.bbci.co.uk/hindi/rss.xml"
name = "bbc-hindi"
title = "बीबीसी हिंदी"
tags = ["hindi", "news"]

[[feeds]]   # no name: derived from the URL ("a-example")
url = 'https://a.example/feed'

# A table after the sources, and a comment at the very end.
[publish]
max_items = 50
# the end"""

NO_FEEDS = """\
# Just the settings so far; sources come from `aggregator add`.
[aggregator]
title = "Empty for now"

[server]
port = 8181
"""


def write(tmp_path: Path, text: str, name: str = "feeds.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def appended(path: Path, original: str) -> str:
    """What an edit added; fails unless the original text is untouched at the start."""
    text = path.read_bytes().decode("utf-8")
    assert text.startswith(original)
    return text[len(original) :]


def no_leftovers(directory: Path) -> None:
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


# --- add_source -------------------------------------------------------------------------


def test_add_appends_one_table_and_keeps_everything_else(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    name = add_source(
        path, "https://www.amarujala.com/rss/breaking-news.xml", name=None, title="अमर उजाला"
    )
    assert name == "amarujala-com-rss-breaking-news"
    assert appended(path, CONFIG) == (
        "\n\n[[feeds]]\n"
        'url = "https://www.amarujala.com/rss/breaking-news.xml"\n'
        'name = "amarujala-com-rss-breaking-news"\n'
        'title = "अमर उजाला"\n'
    )
    config = load_config(path)
    assert [s.name for s in config.sources] == [
        "bbc-hindi",
        "a-example",
        "amarujala-com-rss-breaking-news",
    ]
    assert config.sources[-1].title == "अमर उजाला"
    assert config.publish.max_items == 50  # the table the new one follows is unchanged
    assert config.poll.timeout == timedelta(seconds=7)
    no_leftovers(tmp_path)


def test_add_twice_separates_tables_with_one_blank_line(tmp_path: Path) -> None:
    original = CONFIG + "\n"
    path = write(tmp_path, original)
    add_source(path, "https://one.example/rss", name="one", title=None)
    add_source(path, "https://two.example/rss", name="two", title=None)
    assert appended(path, original) == (
        '\n[[feeds]]\nurl = "https://one.example/rss"\nname = "one"\n'
        '\n[[feeds]]\nurl = "https://two.example/rss"\nname = "two"\n'
    )
    assert [s.name for s in load_config(path).sources][-2:] == ["one", "two"]


def test_a_file_with_no_feeds_yet(tmp_path: Path) -> None:
    path = write(tmp_path, NO_FEEDS)
    with pytest.raises(ConfigError, match="no sources configured"):
        load_config(path)
    assert add_source(path, "https://example.org/", name=None, title=None) == "example-org"
    assert appended(path, NO_FEEDS) == (
        '\n[[feeds]]\nurl = "https://example.org/"\nname = "example-org"\n'
    )
    config = load_config(path)
    assert [(s.name, s.url) for s in config.sources] == [("example-org", "https://example.org/")]
    assert config.server.port == 8181


def test_a_missing_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    assert add_source(path, "https://example.org/rss.xml", name=None, title="T") == "example-org"
    assert path.read_text("utf-8") == (
        '[[feeds]]\nurl = "https://example.org/rss.xml"\nname = "example-org"\ntitle = "T"\n'
    )
    assert load_config(path).sources[0].title == "T"
    assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize(
    "url",
    [
        "https://feeds.bbci.co.uk/hindi/rss.xml",
        "HTTPS://FEEDS.BBCI.CO.UK/hindi/rss.xml",
        "https://feeds.bbci.co.uk/hindi/rss.xml/",
        "https://feeds.bbci.co.uk/hindi/rss.xml#top",
        "https://A.example/feed/",  # the source with no name
    ],
)
def test_duplicate_url_is_refused(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, CONFIG)
    with pytest.raises(DuplicateSourceError, match=r"is already in .* \(as source \"") as caught:
        add_source(path, url, name=None, title=None)
    assert "\n" not in str(caught.value)
    assert path.read_text("utf-8") == CONFIG
    no_leftovers(tmp_path)


def test_a_different_path_case_is_a_different_url(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    assert add_source(path, "https://feeds.bbci.co.uk/HINDI/rss.xml", name="bbc2", title=None)


@pytest.mark.parametrize("name", ["bbc-hindi", "a-example"])
def test_duplicate_name_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, CONFIG)
    with pytest.raises(DuplicateSourceError, match=f'a source named "{name}"'):
        add_source(path, "https://new.example/rss", name=name, title=None)
    assert path.read_text("utf-8") == CONFIG


def test_derived_names_are_made_unique(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    # All three derive to "a-example", which the nameless source already has.
    assert add_source(path, "https://a.example/feed.xml", name=None, title=None) == "a-example-2"
    assert add_source(path, "https://a.example/rss", name=None, title=None) == "a-example-3"
    assert add_source(path, "https://a.example/atom", name=None, title=None) == "a-example-4"
    names = [s.name for s in load_config(path).sources]
    assert names == ["bbc-hindi", "a-example", "a-example-2", "a-example-3", "a-example-4"]


def test_a_long_derived_name_stays_within_64_characters(tmp_path: Path) -> None:
    path = write(tmp_path, NO_FEEDS)
    url = "https://example.org/" + "x" * 100
    first = add_source(path, url, name=None, title=None)
    again = add_source(path, url + "?page=2", name=None, title=None)
    assert len(first) == 64 and len(again) <= 64 and first != again
    load_config(path)


@pytest.mark.parametrize(
    ("url", "name", "message"),
    [
        ("ftp://example.org/feed", None, "expected an http, https or file:// URL"),
        ("not a url", None, "expected an http, https or file:// URL"),
        ("https://example.org:99999/feed", None, "bad port"),
        ("https://example.org/feed", "no spaces", "expected a name of letters"),
        ("https://example.org/feed", "-leading-dash", "expected a name of letters"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, url: str, name: str | None, message: str) -> None:
    path = write(tmp_path, CONFIG)
    with pytest.raises(EditError, match=message):
        add_source(path, url, name=name, title=None)
    assert path.read_text("utf-8") == CONFIG


def test_a_file_url_can_be_added(tmp_path: Path) -> None:
    feed = tmp_path / "local.xml"
    feed.write_bytes(b"<rss/>")
    path = write(tmp_path, NO_FEEDS)
    assert add_source(path, feed.as_uri(), name=None, title=None) == "local"
    assert load_config(path).sources[0].url == feed.as_uri()
    with pytest.raises(DuplicateSourceError):
        add_source(path, feed.as_uri(), name=None, title=None)


def test_an_invalid_file_is_left_alone(tmp_path: Path) -> None:
    broken = CONFIG.replace('interval = "15m"', 'interval = "often"')
    path = write(tmp_path, broken)
    with pytest.raises(ConfigError, match=r"feeds\.toml:\d+: poll\.interval: expected a duration"):
        add_source(path, "https://new.example/rss", name=None, title=None)
    assert path.read_text("utf-8") == broken
    no_leftovers(tmp_path)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[aggregator]\ntitle = \n")
    with pytest.raises(ConfigError, match=r"feeds\.toml:2: invalid TOML"):
        add_source(path, "https://new.example/rss", name=None, title=None)


def test_inline_feeds_array_is_refused(tmp_path: Path) -> None:
    text = '# inline\nfeeds = [{ url = "https://a.example/rss" }]\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r":2: feeds: is not written as \[\[feeds\]\] tables"):
        add_source(path, "https://new.example/rss", name=None, title=None)
    assert path.read_text("utf-8") == text


def test_crlf_line_endings_are_kept(tmp_path: Path) -> None:
    original = CONFIG.replace("\n", "\r\n") + "\r\n"
    path = write(tmp_path, original)
    add_source(path, "https://new.example/rss", name="new", title=None)
    assert appended(path, original) == (
        '\r\n[[feeds]]\r\nurl = "https://new.example/rss"\r\nname = "new"\r\n'
    )
    load_config(path)


def test_titles_with_quotes_and_newlines_are_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, NO_FEEDS)
    title = 'He said "नमस्ते"\\ and\nleft'
    add_source(path, "https://q.example/rss", name=None, title=title)
    assert load_config(path).sources[0].title == title
    assert tomllib.loads(path.read_text("utf-8"))["feeds"][0]["title"] == title


def test_mode_is_kept_and_symlinks_are_written_through(tmp_path: Path) -> None:
    real = write(tmp_path, CONFIG, "real.toml")
    real.chmod(0o640)
    link = tmp_path / "feeds.toml"
    link.symlink_to(real)
    add_source(link, "https://new.example/rss", name=None, title=None)
    assert link.is_symlink()
    assert (real.stat().st_mode & 0o777) == 0o640
    assert "https://new.example/rss" in real.read_text("utf-8")
    no_leftovers(tmp_path)


# --- import_opml ------------------------------------------------------------------------


def test_import_opml(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    feeds = parse_opml((OPML / "nested-categories.opml").read_bytes())
    added, skipped = import_opml(path, feeds)
    assert skipped == [
        SkippedOutline(
            "https://feeds.bbci.co.uk/hindi/rss.xml", 'already in feeds.toml (source "bbc-hindi")'
        )
    ]
    assert added == [
        "amarujala-com-rss-breaking-news",
        "deep-example",
        "aljazeera-com-xml-rss-all",
        "untitled-example",
        "blank-example",
        "atom-example",
    ]
    text = appended(path, CONFIG)
    assert text.count("[[feeds]]") == 6
    config = load_config(path)
    titles = {s.name: s.title for s in config.sources}
    assert titles["amarujala-com-rss-breaking-news"] == "अमर उजाला"
    assert titles["deep-example"] == "Text wins over title"
    assert titles["untitled-example"] is None
    assert len(config.sources) == 8

    # Everything is there now: nothing added, and the file is not even rewritten.
    before = path.stat().st_mtime_ns, path.read_bytes()
    added, skipped = import_opml(path, feeds)
    assert added == [] and len(skipped) == len(feeds)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_import_skips_duplicates_within_the_list_and_local_urls(tmp_path: Path) -> None:
    path = write(tmp_path, NO_FEEDS)
    feeds = [
        OpmlFeed("https://x.example/rss", "X"),
        OpmlFeed("HTTPS://X.EXAMPLE/rss/", "X again"),
        OpmlFeed("file:///etc/passwd", "secrets"),
        OpmlFeed("feeds/relative.xml", None),
        OpmlFeed("https://x.example/rss.xml", "   "),
    ]
    added, skipped = import_opml(path, feeds)
    assert added == ["x-example", "x-example-2"]
    assert skipped == [
        SkippedOutline(
            "HTTPS://X.EXAMPLE/rss/",
            'a duplicate of an earlier outline in the file (added as "x-example")',
        ),
        SkippedOutline("file:///etc/passwd", "not an http(s) URL"),
        SkippedOutline("feeds/relative.xml", "not an http(s) URL"),
    ]
    sources = load_config(path).sources
    assert [(s.name, s.title) for s in sources] == [("x-example", "X"), ("x-example-2", None)]


def test_import_into_a_file_without_feeds(tmp_path: Path) -> None:
    path = write(tmp_path, NO_FEEDS)
    added, skipped = import_opml(path, [OpmlFeed("https://a.example/rss", "A")])
    assert (added, skipped) == (["a-example"], [])
    assert appended(path, NO_FEEDS).startswith("\n[[feeds]]\n")


# --- poll_settings ----------------------------------------------------------------------


def test_poll_settings(tmp_path: Path) -> None:
    assert poll_settings(write(tmp_path, CONFIG)).timeout == timedelta(seconds=7)
    no_feeds = write(tmp_path, NO_FEEDS.replace("[server]", '[poll]\ntimeout = "9s"\n[server]'))
    assert poll_settings(no_feeds).timeout == timedelta(seconds=9)
    assert poll_settings(tmp_path / "absent.toml").timeout == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"poll\.timeout"):
        poll_settings(write(tmp_path, NO_FEEDS + '[poll]\ntimeout = "soon"\n', "bad.toml"))
    no_leftovers(tmp_path)


# --- discover_feed ----------------------------------------------------------------------

FEED_ITEM = Item(
    title="पहली ख़बर",
    link="https://example.org/1",
    guid="tag:example.org,2025:1",
    date=datetime(2025, 7, 13, 10, 0, tzinfo=UTC),
)


def found(url: str) -> FoundFeed:
    async def go() -> FoundFeed:
        async with Fetcher(timeout=10) as fetcher:
            return await discover_feed(url, fetcher)

    return asyncio.run(go())


def discover(url: str) -> str:
    return found(url).url


def page(head: str) -> bytes:
    return (
        f"<!DOCTYPE html>\n<html lang=hi><head><meta charset=utf-8><title>पन्ना</title>{head}"
        "</head><body><p>नमस्ते</p></body></html>"
    ).encode()


HTML = "text/html; charset=utf-8"


def test_a_feed_url_is_its_own_feed(feed_server: FeedServer) -> None:
    rss_url = feed_server.add("/rss.xml", rss2("स्रोत", "https://example.org/", [FEED_ITEM]))
    atom_url = feed_server.add(
        "/atom.xml",
        atom("Atom", "https://example.org/", "tag:example.org,2025:feed", [FEED_ITEM]),
        "application/atom+xml",
    )
    empty_url = feed_server.add("/empty.xml", rss2("No items yet", "https://example.org/", []))
    assert discover(rss_url) == rss_url
    assert discover(atom_url) == atom_url
    assert discover(empty_url) == empty_url  # a version, no entries: still a feed


def test_a_page_links_to_its_feeds_atom_first(feed_server: FeedServer) -> None:
    feed_server.add("/atom.xml", atom("A", "https://e.org/", "tag:e.org,2025:f", [FEED_ITEM]))
    url = feed_server.add(
        "/news/index.html",
        page(
            '<link rel="stylesheet" href="/s.css">'
            '<link rel="alternate" type="application/feed+json" href="/feed.json">'
            '<link rel="alternate" type="application/rss+xml" title="RSS" href="rss.xml">'
            '<link rel="alternate" hreflang="en" type="text/html" href="/en/">'
            '<link rel="Alternate" type="Application/Atom+XML; charset=utf-8" href="../atom.xml">'
            '<link rel="alternate" type="application/atom+xml" href="/second-atom.xml">'
        ),
        HTML,
    )
    assert discover(url) == feed_server.url("/atom.xml")
    assert feed_links(feed_server.resources["/news/index.html"].body, url) == [
        feed_server.url("/atom.xml"),
        feed_server.url("/second-atom.xml"),
        feed_server.url("/news/rss.xml"),
        feed_server.url("/feed.json"),
    ]  # JSON Feed last


def test_rss_when_there_is_no_atom_and_base_href_is_honoured(feed_server: FeedServer) -> None:
    # The feed is fetched too, so the base is on the test server, not a CDN.
    feed_server.add("/site/feeds/all.rss", rss2("स्रोत", "https://example.org/", [FEED_ITEM]))
    url = feed_server.add(
        "/blog/",
        page(
            f'<base href="{feed_server.url("/site/")}">'
            '<link rel="alternate" type="application/rss+xml" href="feeds/all.rss">'
            '<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">'
        ),
        HTML,
    )
    assert discover(url) == feed_server.url("/site/feeds/all.rss")


def test_links_resolve_against_the_final_url_after_redirects(feed_server: FeedServer) -> None:
    feed_server.add("/moved/feed.xml", rss2("स्रोत", "https://example.org/", [FEED_ITEM]))
    target = feed_server.add(
        "/moved/page.html",
        page('<link rel="alternate" type="application/rss+xml" href="feed.xml">'),
        HTML,
    )
    start = feed_server.add("/old", b"", "text/plain", status=302, headers=(("Location", target),))
    assert discover(start) == feed_server.url("/moved/feed.xml")


def test_a_feed_that_moved_permanently_is_added_where_it_is_now(
    feed_server: FeedServer,
) -> None:
    new = feed_server.add("/new.xml", rss2("स्रोत", "https://example.org/", [FEED_ITEM]))
    old = feed_server.add("/old.xml", b"", "text/plain", status=301, headers=(("Location", new),))
    assert discover(old) == new


def test_a_page_without_feeds(feed_server: FeedServer) -> None:
    url = feed_server.add(
        "/plain.html",
        page('<link rel="alternate" hreflang="en" type="text/html" href="/en/">'),
        HTML,
    )
    with pytest.raises(DiscoveryError, match=r"^no feed found at .*: the page has no <link") as e:
        discover(url)
    assert "\n" not in str(e.value)


def test_a_404(feed_server: FeedServer) -> None:
    url = feed_server.url("/missing.xml")
    with pytest.raises(AggregatorError, match=rf"^cannot fetch {url}: HTTP 404"):
        discover(url)


def test_neither_feed_nor_page(feed_server: FeedServer) -> None:
    url = feed_server.add("/data.bin", b"\x00\x01\x02 not a feed", "application/octet-stream")
    with pytest.raises(DiscoveryError, match=r"neither a feed nor an HTML page"):
        discover(url)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DiscoveryError, match="cannot fetch"):
        discover(f"http://127.0.0.1:{port}/")


def test_discover_then_add(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.add("/feed.atom", atom("A", "https://e.org/", "tag:e.org,2025:f", [FEED_ITEM]))
    url = feed_server.add(
        "/", page('<link rel="alternate" type="application/atom+xml" href="/feed.atom">'), HTML
    )
    path = write(tmp_path, NO_FEEDS)
    assert add_source(path, discover(url), name=None, title=None) == "127-0-0-1"
    assert load_config(path).sources[0].url == feed_server.url("/feed.atom")


# --- concurrent edits -------------------------------------------------------------------


@pytest.mark.slow
def test_ten_concurrent_add_runs_all_land(feed_server: FeedServer, tmp_path: Path) -> None:
    """Ten `aggregator add` processes at once: ten "added", ten new sources, comments kept."""
    urls = [
        feed_server.add(
            f"/feed{i}.atom", atom(f"F{i}", "https://e.org/", f"tag:e.org,2025:{i}", [])
        )
        for i in range(10)
    ]
    path = write(tmp_path, CONFIG)
    env = {**os.environ, "PYTHONUTF8": "1", "NO_COLOR": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "aggregator", "add", url, "--config", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert out.startswith("added "), out
    added = tomllib.loads(appended(path, CONFIG))["feeds"]  # what was there is untouched
    assert sorted(f["url"] for f in added) == sorted(urls)
    sources = load_config(path).sources
    assert {s.url for s in sources} >= set(urls)
    assert len({s.name for s in sources}) == len(sources)
    no_leftovers(tmp_path)


def test_concurrent_imports_and_adds_all_land(tmp_path: Path) -> None:
    """Threads hold separate lock descriptors, so they exclude each other as processes do."""
    path = write(tmp_path, CONFIG)
    imports = [
        [OpmlFeed(f"https://i{i}-{j}.example/feed", None) for j in range(3)] for i in range(5)
    ]
    adds = [f"https://a{i}.example/rss" for i in range(5)]

    with ThreadPoolExecutor(max_workers=10) as pool:
        jobs: list[Future[object]] = [pool.submit(import_opml, path, feeds) for feeds in imports]
        jobs += [pool.submit(add_source, path, url) for url in adds]
        for job in jobs:
            job.result()
    urls = {s.url for s in load_config(path).sources}
    assert urls >= {f.url for feeds in imports for f in feeds} | set(adds)
    assert appended(path, CONFIG)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_owner_and_group_are_kept_when_root_edits(tmp_path: Path) -> None:
    """The daemon's user owns its 0600 feeds.toml; root running `add` must not take it."""
    nobody = 65534
    config = write(tmp_path, CONFIG)
    os.chown(config, nobody, nobody)
    config.chmod(0o600)
    add_source(config, "https://new.example/rss", name=None, title=None)
    after = config.stat()
    assert (after.st_uid, after.st_gid, after.st_mode & 0o777) == (nobody, nobody, 0o600)
    assert "https://new.example/rss" in config.read_text("utf-8")
    lock = (tmp_path / f".{config.name}.lock").stat()
    assert (lock.st_uid, lock.st_gid) == (nobody, nobody)  # the daemon's user may lock it
    no_leftovers(tmp_path)

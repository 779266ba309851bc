"""Channels in the real daemon (`aggregator run` in a subprocess, a local feed server):
served at /<name>/ with ETag, 304 and gzip like the root, and added, changed and removed
by editing feeds.toml while it runs (a removed channel's directory leaves output/)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest

from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _free_port, _items, wait_for


def _write(path: Path, port: int, server: FeedServer, channels: str) -> None:
    text = (
        '[aggregator]\ntitle = "Daemon digest"\n'
        f'base_url = "http://127.0.0.1:{port}/"\n'
        '[poll]\ninterval = "1h"\ntimeout = "10s"\nparse_timeout = "120s"\n'
        '[publish]\nmax_age = "3650d"\n'
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[[feeds]]\nname = "a"\nurl = "{server.url("/a.xml")}"\ntags = ["x"]\n'
        f'[[feeds]]\nname = "b"\nurl = "{server.url("/b.xml")}"\ntags = ["y"]\n' + channels
    )
    tmp = path.with_suffix(".tmp")  # write and rename, as editors do
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _links(daemon: Daemon, path: str) -> list[str]:
    response = daemon.get(path)
    if response.status_code != 200:
        return []
    return [e.link for e in feedparser.parse(io.BytesIO(response.content)).entries]


@pytest.fixture
def daemon(tmp_path: Path, feed_server: FeedServer) -> Iterator[Daemon]:
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 3)))
    feed_server.add("/b.xml", rss2("B", "https://b.example.org/", _items("b", 2)))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write(config, port, feed_server, '[[channels]]\nname = "ex"\ntitle = "Ex"\ntags = ["x"]\n')
    running = Daemon(config, port).start()
    try:
        wait_for(lambda: len(_links(running, "/ex/atom.xml")) == 3, 30, "the channel's feed")
        wait_for(lambda: len(_links(running, "/atom.xml")) == 5, 30, "the root's feed")
        yield running
    finally:
        if running.process and running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def test_a_channel_is_served_like_the_root(daemon: Daemon) -> None:
    atom = daemon.get("/ex/atom.xml", **{"Accept-Encoding": "identity"})
    assert atom.status_code == 200
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert "content-encoding" not in atom.headers
    assert all("a.example.org" in link for link in _links(daemon, "/ex/atom.xml"))
    etag = atom.headers["etag"]
    assert daemon.get("/ex/atom.xml", **{"If-None-Match": etag}).status_code == 304
    last_modified = atom.headers["last-modified"]
    assert daemon.get("/ex/atom.xml", **{"If-Modified-Since": last_modified}).status_code == 304
    identity = {"Accept-Encoding": "identity"}
    assert daemon.get("/ex/atom.xml", **identity).headers["etag"] == etag  # the same ETag
    with httpx.stream(
        "GET", daemon.url("/ex/atom.xml"), headers={"Accept-Encoding": "gzip"}, timeout=5
    ) as zipped:
        body = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "Accept-Encoding"
        gzip_etag = zipped.headers["etag"]
    assert gzip.decompress(body) == atom.content
    assert (
        daemon.get(
            "/ex/atom.xml", **{"Accept-Encoding": "gzip", "If-None-Match": gzip_etag}
        ).status_code
        == 304
    )
    media = {
        "/ex/rss.xml": "application/rss+xml; charset=utf-8",
        "/ex/feed.json": "application/feed+json; charset=utf-8",
        "/ex/sources.opml": "text/x-opml; charset=utf-8",
        "/ex/": "text/html; charset=utf-8",
    }
    for path, media_type in media.items():
        assert daemon.get(path).headers["content-type"] == media_type, path
    moved = httpx.get(daemon.url("/ex"), timeout=5)
    assert (moved.status_code, moved.headers["location"]) == (301, "ex/")  # relative
    assert httpx.get(daemon.url("/ex"), timeout=5, follow_redirects=True).url.path == "/ex/"
    page = daemon.get("/").text
    assert f'<a href="{daemon.url("/ex/")}"' in page
    for probe in ("/ex/../feeds.toml", "/ex/.published.json", "/ex/%2e%2e/feeds.toml", "/nope/"):
        assert daemon.get(probe).status_code == 404, probe


def test_reload_adds_changes_and_removes_channels(daemon: Daemon, feed_server: FeedServer) -> None:
    config, port = daemon.config, daemon.port
    output = config.parent / "output"
    ex = '[[channels]]\nname = "ex"\ntitle = "Ex"\ntags = ["x"]\n'
    why = '[[channels]]\nname = "why"\ntitle = "Why"\ntags = ["y"]\n'

    _write(config, port, feed_server, ex + why)  # add
    wait_for(lambda: len(_links(daemon, "/why/atom.xml")) == 2, 30, "the added channel")
    assert all("b.example.org" in link for link in _links(daemon, "/why/atom.xml"))
    wait_for(lambda: daemon.url("/why/") in daemon.get("/").text, 30, "the root to list it")
    ex_etag = daemon.get("/ex/atom.xml").headers["etag"]
    why_file = output / "why" / "atom.xml"
    why_version = (why_file.stat().st_ino, why_file.stat().st_mtime_ns)

    changed = '[[channels]]\nname = "ex"\ntitle = "Ex and why"\ntags = ["x", "y"]\n'
    _write(config, port, feed_server, changed + why)  # change
    wait_for(lambda: len(_links(daemon, "/ex/atom.xml")) == 5, 30, "the changed channel")
    assert b"<title>Ex and why</title>" in daemon.get("/ex/atom.xml").content
    assert daemon.get("/ex/atom.xml").headers["etag"] != ex_etag
    assert (why_file.stat().st_ino, why_file.stat().st_mtime_ns) == why_version  # untouched

    _write(config, port, feed_server, changed)  # remove
    wait_for(lambda: not (output / "why").exists(), 30, "the removed channel's directory to go")
    assert daemon.get("/why/atom.xml").status_code == 404
    assert daemon.url("/why/") not in daemon.get("/").text
    assert (output / "ex" / "atom.xml").exists()
    log = daemon.log_text()
    assert "(added why)" in log and "(removed why)" in log
    assert "Traceback" not in log
    assert daemon.get("/healthz").status_code == 200

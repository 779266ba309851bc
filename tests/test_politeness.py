"""Politeness, against a real server on 127.0.0.1: validators, Retry-After, caching hints,
per-host limits, permanent redirects, 410 Gone, backoff and the User-Agent."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import load_config
from aggregator.cycle import CycleReport, run_cycle
from aggregator.parse.pool import ParsePool
from aggregator.settings import Config
from aggregator.store import SourceState
from aggregator.store.sqlite import SqliteStore
from aggregator.types import ParsedFeed
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer

NOW = datetime.now(UTC).replace(microsecond=0)
BODY = rss2(
    "S",
    "https://s.example.org/",
    [Item("Story", "https://s.example.org/1", "1", NOW - timedelta(hours=1))],
)


def _config(tmp_path: Path, feeds: dict[str, str], extra: str = "") -> Path:
    path = tmp_path / "feeds.toml"
    lines = ['[publish]\nmax_age = "3650d"', extra]
    lines += [f'[[feeds]]\nname = "{name}"\nurl = "{url}"' for name, url in feeds.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cycle(path: Path, **kw: object) -> CycleReport:
    config = load_config(path)
    store = SqliteStore.open(config.store.path)
    try:
        return asyncio.run(run_cycle(config, store, **kw))  # type: ignore[arg-type]
    finally:
        store.close()


def _state(path: Path, name: str) -> SourceState:
    config: Config = load_config(path)
    store = SqliteStore.open(config.store.path)
    try:
        state = store.source_state(name)
    finally:
        store.close()
    assert state is not None
    return state


def _respond(
    status: int, headers: dict[str, str], body: bytes = b""
) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(request: BaseHTTPRequestHandler) -> None:
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return handler


def test_new_validators_are_saved_even_from_a_304(tmp_path: Path, feed_server: FeedServer) -> None:
    responses = iter(
        [
            _respond(200, {"ETag": '"v1"', "Content-Type": "application/xml"}, BODY),
            _respond(304, {"ETag": '"v2"'}),
            _respond(304, {"ETag": '"v2"'}),
        ]
    )

    def handler(request: BaseHTTPRequestHandler) -> None:
        next(responses)(request)  # one scripted answer per request

    feed_server.handlers["/f.xml"] = handler
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    for _ in range(3):
        _cycle(path)
    sent = [r.headers.get("if-none-match") for r in feed_server.seen("/f.xml")]
    assert sent == [None, '"v1"', '"v2"']


def test_an_unchanged_body_is_not_parsed_again(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.handlers["/f.xml"] = _respond(200, {"Content-Type": "application/xml"}, BODY)
    calls = []

    class CountingPool(ParsePool):
        async def parse(self, *args: Any, **kw: Any) -> ParsedFeed:
            calls.append(1)
            return await super().parse(*args, **kw)

    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    parsers = CountingPool()
    try:
        first = _cycle(path, parsers=parsers)
        second = _cycle(path, parsers=parsers)
    finally:
        parsers.close()
    assert first.sources[0].new == 1
    assert second.sources[0].outcome == "unchanged"
    assert len(calls) == 1


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_honoured_by_once_force_and_the_daemon(
    tmp_path: Path, feed_server: FeedServer, status: int, form: str
) -> None:
    until = datetime.now(UTC) + timedelta(hours=2)
    value = "7200" if form == "seconds" else format_datetime(until, usegmt=True)
    feed_server.handlers["/f.xml"] = _respond(status, {"Retry-After": value})
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    report = _cycle(path)
    assert report.sources[0].outcome == "failed"
    assert "Retry-After" in (report.sources[0].error or "")
    state = _state(path, "s")
    assert state.next_poll is not None and state.next_poll >= until - timedelta(seconds=5)
    # `once` again, even with --force: skipped, and it says why.
    for args in ((), ("--force",)):
        result = run_cli("once", *args, "--config", str(path))
        assert result.returncode == 0, result.stderr
        assert "skipped: the server asked us not to return before" in result.stdout
    assert len(feed_server.seen("/f.xml")) == 1


def test_retry_after_is_capped_at_a_day(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.handlers["/f.xml"] = _respond(429, {"Retry-After": str(30 * 86400)})
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    _cycle(path)
    state = _state(path, "s")
    assert state.next_poll is not None
    assert state.next_poll <= datetime.now(UTC) + timedelta(hours=24, minutes=1)


@pytest.mark.parametrize(
    ("headers", "at_least", "at_most"),
    [
        ({"Cache-Control": "max-age=7200"}, timedelta(hours=2), timedelta(hours=2.3)),
        ({"Cache-Control": "max-age=60"}, timedelta(minutes=15), timedelta(minutes=17)),
        ({"Cache-Control": "max-age=604800"}, timedelta(hours=24), timedelta(hours=26.5)),
        ({}, timedelta(minutes=15), timedelta(minutes=17)),
    ],
)
def test_cache_hints_lengthen_but_never_shorten_the_interval(
    tmp_path: Path,
    feed_server: FeedServer,
    headers: dict[str, str],
    at_least: timedelta,
    at_most: timedelta,
) -> None:
    feed_server.handlers["/f.xml"] = _respond(
        200, {"Content-Type": "application/xml", **headers}, BODY
    )
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")}, '[poll]\ninterval = "15m"')
    before = datetime.now(UTC)
    _cycle(path)
    state = _state(path, "s")
    assert state.next_poll is not None
    assert before + at_least <= state.next_poll <= datetime.now(UTC) + at_most


def test_the_feeds_own_ttl_lengthens_the_interval(tmp_path: Path, feed_server: FeedServer) -> None:
    body = BODY.replace(b"<language>", b"<ttl>180</ttl><language>")
    feed_server.handlers["/f.xml"] = _respond(200, {"Content-Type": "application/xml"}, body)
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")}, '[poll]\ninterval = "15m"')
    _cycle(path)
    state = _state(path, "s")
    assert state.next_poll is not None and state.next_poll >= NOW + timedelta(hours=3)


def test_at_most_per_host_requests_to_one_host(tmp_path: Path, feed_server: FeedServer) -> None:
    lock = threading.Lock()
    active = [0]
    peak = [0]

    def slow(request: BaseHTTPRequestHandler) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        _respond(200, {"Content-Type": "application/xml"}, BODY)(request)

    feeds = {}
    for n in range(8):
        feed_server.handlers[f"/f{n}.xml"] = slow
        feeds[f"s{n}"] = feed_server.url(f"/f{n}.xml")
    path = _config(tmp_path, feeds, "[poll]\nconcurrency = 8\nper_host = 2")
    _cycle(path)
    assert peak[0] == 2
    assert len(feed_server.seen()) == 8


def test_a_permanent_redirect_chain_moves_the_source(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.handlers["/old.xml"] = _respond(301, {"Location": "/older.xml"})
    feed_server.handlers["/older.xml"] = _respond(308, {"Location": "/new.xml"})
    feed_server.add("/new.xml", BODY)
    path = _config(tmp_path, {"s": feed_server.url("/old.xml")})
    _cycle(path)
    assert _state(path, "s").moved_to == feed_server.url("/new.xml")
    feed_server.clear()
    _cycle(path)
    assert [r.path for r in feed_server.seen()] == ["/new.xml"]  # straight to the new place
    status = run_cli("status", "--json", "--config", str(path))
    assert json.loads(status.stdout)[0]["moved_to"] == feed_server.url("/new.xml")
    assert path.read_text().count("/old.xml") == 1  # the operator's file is not rewritten


def test_a_temporary_redirect_does_not_move_the_source(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.handlers["/old.xml"] = _respond(301, {"Location": "/tmp.xml"})
    feed_server.handlers["/tmp.xml"] = _respond(302, {"Location": "/new.xml"})
    feed_server.add("/new.xml", BODY)
    path = _config(tmp_path, {"s": feed_server.url("/old.xml")})
    _cycle(path)
    assert _state(path, "s").moved_to is None


def test_gone_disables_the_source_loudly_until_its_url_changes(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.handlers["/gone.xml"] = _respond(410, {})
    feed_server.add("/here.xml", BODY)
    path = _config(tmp_path, {"s": feed_server.url("/gone.xml")})
    first = run_cli("once", "--config", str(path))
    assert "disabled: HTTP 410 Gone" in first.stdout
    assert "the feed is gone (HTTP 410)" in first.stderr
    again = run_cli("once", "--force", "--config", str(path))
    assert "disabled: HTTP 410 Gone" in again.stdout
    assert len(feed_server.seen("/gone.xml")) == 1
    status = json.loads(run_cli("status", "--json", "--config", str(path)).stdout)
    assert status[0]["disabled"].startswith("HTTP 410 Gone")
    _config(tmp_path, {"s": feed_server.url("/here.xml")})  # the operator fixes the url
    fixed = run_cli("once", "--config", str(path))
    assert "1 new" in fixed.stdout


def test_errors_back_off_and_force_overrides_only_that(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.handlers["/f.xml"] = _respond(500, {})
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    assert "error: HTTP 500" in run_cli("once", "--config", str(path)).stdout
    backing_off = run_cli("once", "--config", str(path)).stdout
    assert "skipped: backing off after 1 failure(s)" in backing_off
    assert "error: HTTP 500" in run_cli("once", "--force", "--config", str(path)).stdout
    assert _state(path, "s").failures == 2
    assert len(feed_server.seen("/f.xml")) == 2
    feed_server.handlers["/f.xml"] = _respond(200, {"Content-Type": "application/xml"}, BODY)
    run_cli("once", "--force", "--config", str(path))
    assert _state(path, "s").failures == 0  # the first success resets it


def test_user_agent_names_project_version_and_url_and_can_be_overridden(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/f.xml", BODY)
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    _cycle(path)
    agent = feed_server.seen("/f.xml")[0].headers["user-agent"]
    assert agent.startswith("aggregator/") and "(+https://" in agent
    path = _config(
        tmp_path, {"s": feed_server.url("/f.xml")}, '[poll]\nuser_agent = "MyDigest/2.0"'
    )
    _cycle(path, force=True)
    assert feed_server.seen("/f.xml")[-1].headers["user-agent"] == "MyDigest/2.0"


def _no_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kw: object) -> bytes:
        raise AssertionError("rendered an unchanged timeline")

    for module, name in (
        ("aggregator.render.feeds", "render_rss"),
        ("aggregator.render.feeds", "render_atom"),
        ("aggregator.render.jsonfeed", "render_json_feed"),
        ("aggregator.render.page", "render_html"),
        ("aggregator.render.opml", "render_opml"),
    ):
        monkeypatch.setattr(f"{module}.{name}", boom)


def test_an_unchanged_timeline_is_not_rendered_again(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle of 304s costs no rendering; a change of input, or a file gone, renders."""
    feed_server.add("/f.xml", BODY)
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    first = _cycle(path)
    assert first.publish.changed  # everything written the first time
    output = load_config(path).publish.output_dir
    before = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    with monkeypatch.context() as patched:
        _no_rendering(patched)
        second = _cycle(path)
    assert second.publish.changed == ()
    assert second.publish.items == first.publish.items
    assert {p.name: p.stat().st_mtime_ns for p in output.iterdir()} == before
    assert not any(p.name.endswith(".tmp") for p in output.iterdir())
    # A file deleted behind our back: rendered and written again.
    (output / "atom.xml").unlink()
    assert _cycle(path).publish.changed == ("atom.xml",)
    # The site's title is part of the input: a new one renders everything that shows it.
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "[publish]", '[aggregator]\ntitle = "New"\n[publish]'
        ),
        encoding="utf-8",
    )
    assert "atom.xml" in _cycle(path).publish.changed


FAR = "Fri, 31 Dec 9999 23:59:59 -2359"  # past year 9999 once in UTC


@pytest.mark.parametrize(
    "headers",
    [
        {"Expires": FAR},
        {"Date": FAR, "Expires": "Sun, 13 Jul 2025 14:00:00 GMT"},
        {"Cache-Control": "max-age=" + "9" * 5000},
    ],
)
def test_a_hint_out_of_any_range_is_no_hint_and_the_items_are_stored(
    tmp_path: Path, feed_server: FeedServer, headers: dict[str, str]
) -> None:
    """A date UTC cannot hold (OverflowError) or a max-age of 5,000 digits (Python refuses to
    convert it) made every poll of a valid feed an "unexpected error" with a traceback, its
    items never stored. A hint it cannot read is ignored (the max-age: the longest, capped)."""
    feed_server.handlers["/f.xml"] = _respond(
        200, {"Content-Type": "application/xml", **headers}, BODY
    )
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    report = _cycle(path)
    assert [(s.outcome, s.new) for s in report.sources] == [("updated", 1)]
    state = _state(path, "s")
    assert state.next_poll is not None
    assert state.next_poll <= datetime.now(UTC) + timedelta(hours=26.5)


@pytest.mark.parametrize("header", ["1000000000000", "9" * 40, FAR])
def test_a_retry_after_beyond_any_range_waits_the_longest_honoured(
    tmp_path: Path, feed_server: FeedServer, header: str
) -> None:
    """13 digits and more were not read at all (ordinary backoff, minutes); a date past
    year 9999 in UTC raised. Each waits the day that is the most honoured."""
    feed_server.handlers["/f.xml"] = _respond(503, {"Retry-After": header})
    path = _config(tmp_path, {"s": feed_server.url("/f.xml")})
    _cycle(path)
    state = _state(path, "s")
    assert state.next_poll is not None
    assert state.next_poll >= datetime.now(UTC) + timedelta(hours=23)

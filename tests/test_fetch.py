"""`aggregator.fetch.Fetcher` against a real HTTP server on 127.0.0.1 (and file:// URLs).

Every test drives the fetcher with `asyncio.run` from a plain test function, and every
outcome is checked as a value: `Fetched`, `NotModified` or `Failed`, never an exception.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import brotli
import pytest

from aggregator.fetch import Fetcher
from aggregator.fetch_cookies import FetchCookies
from aggregator.types import Failed, Fetched, FetchOutcome, NotModified, Validators
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer

Handler = Callable[[BaseHTTPRequestHandler], None]

FEED = rss2(
    "स्रोत",
    "https://example.org/",
    [
        Item(
            title="पहली ख़बर",
            link="https://example.org/1",
            guid="tag:example.org,2025:1",
            date=datetime(2025, 7, 13, 10, 0, tzinfo=UTC),
            summary_html="<p>नमस्ते</p>",
        )
    ],
)


def fetch(
    url: str,
    validators: Validators | None = None,
    *,
    timeout: float = 30.0,
    max_bytes: int = 10 * 1024 * 1024,
) -> FetchOutcome:
    """One fetch with a fresh `Fetcher`, run to completion on a new event loop."""

    async def go() -> FetchOutcome:
        async with Fetcher(timeout=timeout, max_bytes=max_bytes) as fetcher:
            if validators is None:
                return await fetcher.fetch(url)
            return await fetcher.fetch(url, validators)

    return asyncio.run(go())


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    reason: str | None = None,
) -> None:
    """A complete raw response with a correct Content-Length (`reason`: the status line's
    phrase, if not the usual one)."""
    handler.send_response(status, reason)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        try:
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


def redirect(status: int, location: str) -> Handler:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, status, headers=(("Location", location),))

    return handle


# -- 200 and conditional GET -------------------------------------------------------------


def test_200_returns_body_final_url_and_validators(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    outcome = fetch(url)
    assert isinstance(outcome, Fetched), outcome
    assert outcome.status == 200
    assert outcome.body == FEED
    assert outcome.url == url
    assert outcome.final_url == url
    assert outcome.permanent_redirect is None
    assert outcome.validators.etag is not None
    assert outcome.validators.etag.startswith('"')
    assert outcome.validators.last_modified == "Sun, 13 Jul 2025 09:46:40 GMT"
    assert outcome.headers["content-type"] == "application/xml; charset=utf-8"
    assert outcome.headers["etag"] == outcome.validators.etag


def test_second_fetch_with_validators_is_not_modified(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    first = fetch(url)
    assert isinstance(first, Fetched), first
    feed_server.clear()

    second = fetch(url, first.validators)
    assert isinstance(second, NotModified), second
    assert second.url == url
    assert second.validators == first.validators

    (request,) = feed_server.seen("/feed.xml")
    assert request.status == 304
    assert request.headers["if-none-match"] == first.validators.etag
    assert request.headers["if-modified-since"] == first.validators.last_modified


def test_first_fetch_is_unconditional(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    assert isinstance(fetch(url), Fetched)
    (request,) = feed_server.seen("/feed.xml")
    assert "if-none-match" not in request.headers
    assert "if-modified-since" not in request.headers


def test_last_modified_alone_gives_not_modified(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    first = fetch(url)
    assert isinstance(first, Fetched), first
    only_date = Validators(last_modified=first.validators.last_modified)
    second = fetch(url, only_date)
    assert isinstance(second, NotModified), second
    # The server sent its validators again with the 304; the ETag is picked up.
    assert second.validators.last_modified == first.validators.last_modified
    assert second.validators.etag == first.validators.etag


def test_user_agent_names_the_project(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    assert isinstance(fetch(url), Fetched)
    (request,) = feed_server.seen("/feed.xml")
    assert request.headers["user-agent"].startswith("aggregator/")


# -- content encoding and size limits ----------------------------------------------------


def test_gzip_body_is_decoded(feed_server: FeedServer) -> None:
    url = feed_server.add("/feed.xml", FEED)
    outcome = fetch(url)
    assert isinstance(outcome, Fetched), outcome
    (request,) = feed_server.seen("/feed.xml")
    assert "gzip" in request.headers["accept-encoding"]
    assert outcome.headers["content-encoding"] == "gzip"  # the server did compress it
    assert outcome.body == FEED


def test_gzip_bomb_fails_as_too_large(feed_server: FeedServer) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 1_000_000  # the bomb itself is under the limit; only inflated it is not

    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(
            handler,
            200,
            bomb,
            (("Content-Type", "application/xml"), ("Content-Encoding", "gzip")),
        )

    feed_server.handlers["/bomb.xml"] = handle
    outcome = fetch(feed_server.url("/bomb.xml"), max_bytes=1_000_000)
    assert isinstance(outcome, Failed), outcome
    assert "too large" in outcome.error


def test_declared_content_length_over_limit_fails(feed_server: FeedServer) -> None:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", "5000000")
        handler.end_headers()
        handler.close_connection = True

    feed_server.handlers["/huge.xml"] = handle
    outcome = fetch(feed_server.url("/huge.xml"), max_bytes=1_000_000)
    assert isinstance(outcome, Failed), outcome
    assert "too large" in outcome.error


def test_plain_body_over_limit_without_content_length_fails(feed_server: FeedServer) -> None:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        try:
            for _ in range(40):
                handler.wfile.write(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass

    feed_server.handlers["/stream.xml"] = handle
    outcome = fetch(feed_server.url("/stream.xml"), max_bytes=1_000_000)
    assert isinstance(outcome, Failed), outcome
    assert "too large" in outcome.error


# -- HTTP errors and network failures ----------------------------------------------------


def test_404_fails_with_status(feed_server: FeedServer) -> None:
    outcome = fetch(feed_server.url("/missing.xml"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("HTTP 404")
    assert outcome.status == 404


def test_500_fails_with_status(feed_server: FeedServer) -> None:
    url = feed_server.add("/broken.xml", b"oops", "text/plain", status=500)
    outcome = fetch(url)
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("HTTP 500")
    assert outcome.status == 500


def test_connection_refused_fails() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = fetch(f"http://127.0.0.1:{port}/feed.xml", timeout=5)
    assert isinstance(outcome, Failed), outcome
    assert "connection refused" in outcome.error
    assert outcome.status is None


# -- redirects ---------------------------------------------------------------------------


def test_301_chain_reports_permanent_redirect(feed_server: FeedServer) -> None:
    final = feed_server.add("/feed.xml", FEED)
    feed_server.handlers["/old.xml"] = redirect(301, feed_server.url("/older.xml"))
    feed_server.handlers["/older.xml"] = redirect(308, final)
    outcome = fetch(feed_server.url("/old.xml"))
    assert isinstance(outcome, Fetched), outcome
    assert outcome.body == FEED
    assert outcome.url == feed_server.url("/old.xml")
    assert outcome.final_url == final
    assert outcome.permanent_redirect == final


def test_302_is_not_a_permanent_redirect(feed_server: FeedServer) -> None:
    final = feed_server.add("/feed.xml", FEED)
    feed_server.handlers["/moved.xml"] = redirect(302, final)
    outcome = fetch(feed_server.url("/moved.xml"))
    assert isinstance(outcome, Fetched), outcome
    assert outcome.final_url == final
    assert outcome.permanent_redirect is None


def test_301_then_302_is_not_a_permanent_redirect(feed_server: FeedServer) -> None:
    final = feed_server.add("/feed.xml", FEED)
    feed_server.handlers["/a.xml"] = redirect(301, feed_server.url("/b.xml"))
    feed_server.handlers["/b.xml"] = redirect(302, final)
    outcome = fetch(feed_server.url("/a.xml"))
    assert isinstance(outcome, Fetched), outcome
    assert outcome.final_url == final
    assert outcome.permanent_redirect is None


def test_redirect_loop_fails(feed_server: FeedServer) -> None:
    feed_server.handlers["/ping.xml"] = redirect(301, feed_server.url("/pong.xml"))
    feed_server.handlers["/pong.xml"] = redirect(302, feed_server.url("/ping.xml"))
    outcome = fetch(feed_server.url("/ping.xml"))
    assert isinstance(outcome, Failed), outcome
    assert "redirects" in outcome.error
    assert 1 < len(feed_server.seen()) <= 10


# -- cookies -----------------------------------------------------------------------------


def cookie_check(feed_server: FeedServer, path: str, cookie: str, body: bytes) -> list[str]:
    """`path` sets `cookie` and redirects to itself with `?checked`, which serves `body` only
    to a request carrying the cookie (a site's cookie check). Returns the Cookie headers seen."""
    seen: list[str] = []

    def handle(handler: BaseHTTPRequestHandler) -> None:
        sent = handler.headers.get("Cookie", "")
        seen.append(sent)
        if not handler.path.endswith("?checked"):
            headers = (("Set-Cookie", f"{cookie}; Path=/"), ("Location", f"{path}?checked"))
            send(handler, 302, headers=headers)
        elif sent == cookie:
            send(handler, 200, body, (("Content-Type", "application/rss+xml"),))
        else:
            send(handler, 403, b"no cookie")

    feed_server.handlers[path] = handle
    feed_server.handlers[f"{path}?checked"] = handle
    return seen


def test_a_cookie_set_on_a_redirect_is_sent_on_that_fetch_and_no_later_one(
    feed_server: FeedServer,
) -> None:
    """A cookie check (set, redirect, check) passes; the next fetch starts with no cookie,
    as every fetch does: nothing a source sets outlives its fetch."""
    seen = cookie_check(feed_server, "/checked.xml", "ok=1", FEED)
    url = feed_server.url("/checked.xml")

    async def go() -> list[FetchOutcome]:
        async with Fetcher() as fetcher:
            return [await fetcher.fetch(url), await fetcher.fetch(url)]

    outcomes = asyncio.run(go())
    assert all(isinstance(o, Fetched) and o.body == FEED for o in outcomes), outcomes
    assert seen == ["", "ok=1", "", "ok=1"]


def test_concurrent_fetches_of_one_host_keep_their_cookies_apart(
    feed_server: FeedServer,
) -> None:
    """Each poll is a task with its own jar: two cookie checks on one host at once each see
    their own cookie only."""
    seen = {
        name: cookie_check(feed_server, f"/{name}.xml", f"{name}=1", FEED)
        for name in ("a", "b", "c", "d")
    }

    async def go() -> list[FetchOutcome]:
        async with Fetcher(per_host=4) as fetcher:
            return list(
                await asyncio.gather(*(fetcher.fetch(feed_server.url(f"/{n}.xml")) for n in seen))
            )

    outcomes = asyncio.run(go())
    assert all(isinstance(o, Fetched) for o in outcomes), outcomes
    assert seen == {name: ["", f"{name}=1"] for name in seen}


def test_a_server_setting_many_cookies_on_every_poll_leaves_nothing_behind(
    feed_server: FeedServer,
) -> None:
    """100 new cookies, valid for years, on each of 30 polls: none is kept or sent back.
    With one jar for the fetcher's life (the daemon's), they piled up without bound and
    every later poll of the host carried all of them."""
    polls = 0
    sent: list[str | None] = []

    def handle(handler: BaseHTTPRequestHandler) -> None:
        nonlocal polls
        polls += 1
        sent.append(handler.headers.get("Cookie"))
        cookies = tuple(
            ("Set-Cookie", f"c{polls}x{n}={'v' * 100}; Path=/; Max-Age=315360000")
            for n in range(100)
        )
        send(handler, 200, FEED, cookies)

    feed_server.handlers["/jar.xml"] = handle
    url = feed_server.url("/jar.xml")

    async def go() -> tuple[list[FetchOutcome], int]:
        async with Fetcher() as fetcher:
            outcomes = [await fetcher.fetch(url) for _ in range(30)]
            gc.collect()
            # The fetches' jars, wherever they are still referred to (a timer aiohttp armed
            # keeps a copy of the fetch's context until its own deadline): empty.
            kept = sum(len(o.jar) for o in gc.get_objects() if isinstance(o, FetchCookies))
            return outcomes, kept

    outcomes, kept = asyncio.run(go())
    assert all(isinstance(o, Fetched) for o in outcomes), outcomes[:1]
    assert sent == [None] * 30
    assert kept == 0


# -- slow and broken servers -------------------------------------------------------------


@pytest.mark.timeout(30)
def test_dripping_server_times_out(feed_server: FeedServer) -> None:
    stop = threading.Event()

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.close_connection = True
        try:
            handler.wfile.flush()
            for _ in range(100):
                if stop.wait(0.5):
                    return
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    feed_server.handlers["/drip.xml"] = handle
    try:
        outcome = fetch(feed_server.url("/drip.xml"), timeout=2)
    finally:
        stop.set()
    assert isinstance(outcome, Failed), outcome
    assert "timed out" in outcome.error


@pytest.mark.timeout(30)
def test_server_that_sends_nothing_times_out(feed_server: FeedServer) -> None:
    stop = threading.Event()

    def handle(handler: BaseHTTPRequestHandler) -> None:
        stop.wait(20)
        handler.close_connection = True

    feed_server.handlers["/silent.xml"] = handle
    try:
        outcome = fetch(feed_server.url("/silent.xml"), timeout=1)
    finally:
        stop.set()
    assert isinstance(outcome, Failed), outcome
    assert "timed out" in outcome.error


@pytest.mark.timeout(60)
def test_dripping_headers_do_not_outlast_the_deadline(feed_server: FeedServer) -> None:
    # Each header line arrives well inside the read timeout, so only the fetcher's own
    # deadline on the whole request can stop this; it must apply before the body too.
    stop = threading.Event()

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n")
            handler.wfile.flush()
            for n in range(40):  # 20 s of headers unless the client goes away
                if stop.wait(0.5):
                    return
                handler.wfile.write(b"X-Slow-%d: still coming\r\n" % n)
                handler.wfile.flush()
            handler.wfile.write(b"Content-Length: %d\r\n\r\n%s" % (len(FEED), FEED))
        except (BrokenPipeError, ConnectionResetError):
            pass

    feed_server.handlers["/slow-headers.xml"] = handle
    started = time.monotonic()
    try:
        outcome = fetch(feed_server.url("/slow-headers.xml"), timeout=2)
    finally:
        elapsed = time.monotonic() - started
        stop.set()
    assert isinstance(outcome, Failed), outcome
    assert "timed out" in outcome.error
    assert elapsed < 10, f"a 2 s deadline took {elapsed:.1f} s"


def test_connection_closed_mid_body_fails(feed_server: FeedServer) -> None:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(FEED) + 1000))
        handler.end_headers()
        handler.wfile.write(FEED[: len(FEED) // 2])
        handler.wfile.flush()
        handler.close_connection = True

    feed_server.handlers["/cut.xml"] = handle
    outcome = fetch(feed_server.url("/cut.xml"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error


@pytest.mark.parametrize("coding", ["deflate", "br"])
def test_other_content_encodings_are_decoded(feed_server: FeedServer, coding: str) -> None:
    encoded = zlib.compress(FEED) if coding == "deflate" else brotli.compress(FEED)

    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, encoded, (("Content-Encoding", coding),))

    feed_server.handlers["/encoded.xml"] = handle
    outcome = fetch(feed_server.url("/encoded.xml"))
    assert isinstance(outcome, Fetched), outcome
    assert outcome.body == FEED


def test_brotli_bomb_fails_as_too_large(feed_server: FeedServer) -> None:
    bomb = brotli.compress(b"\0" * 50_000_000)

    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, bomb, (("Content-Encoding", "br"),))

    feed_server.handlers["/bomb.br"] = handle
    outcome = fetch(feed_server.url("/bomb.br"), max_bytes=1_000_000)
    assert isinstance(outcome, Failed), outcome
    assert "too large" in outcome.error


def test_corrupt_gzip_body_fails(feed_server: FeedServer) -> None:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, b"this is not gzip at all", (("Content-Encoding", "gzip"),))

    feed_server.handlers["/corrupt.xml"] = handle
    outcome = fetch(feed_server.url("/corrupt.xml"))
    assert isinstance(outcome, Failed), outcome
    assert "gzip" in outcome.error


# -- file:// sources ---------------------------------------------------------------------


def test_file_url_fetched_then_not_modified(tmp_path: Path) -> None:
    path = tmp_path / "ख़बरें feed.xml"
    path.write_bytes(FEED)
    url = path.as_uri()

    first = fetch(url)
    assert isinstance(first, Fetched), first
    assert first.body == FEED
    assert first.final_url == url
    assert first.validators.etag and first.validators.last_modified

    second = fetch(url, first.validators)
    assert isinstance(second, NotModified), second
    assert second.validators == first.validators


def test_file_url_changed_is_fetched_again(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(FEED)
    first = fetch(path.as_uri())
    assert isinstance(first, Fetched), first
    path.write_bytes(FEED + b"\n<!-- changed -->\n")
    second = fetch(path.as_uri(), first.validators)
    assert isinstance(second, Fetched), second
    assert second.body.endswith(b"<!-- changed -->\n")


def test_missing_file_fails(tmp_path: Path) -> None:
    outcome = fetch((tmp_path / "nope.xml").as_uri())
    assert isinstance(outcome, Failed), outcome
    assert "file not found" in outcome.error


# -- concurrency -------------------------------------------------------------------------


def test_concurrency_is_bounded(feed_server: FeedServer) -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    def handle(handler: BaseHTTPRequestHandler) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.3)
        finally:
            with lock:
                active -= 1
        send(handler, 200, FEED, (("Content-Type", "application/xml"),))

    paths = [f"/slow/{n}.xml" for n in range(6)]
    for path in paths:
        feed_server.handlers[path] = handle

    async def go() -> list[FetchOutcome]:
        async with Fetcher(concurrency=2) as fetcher:
            return await asyncio.gather(*(fetcher.fetch(feed_server.url(p)) for p in paths))

    outcomes = asyncio.run(go())
    assert all(isinstance(o, Fetched) and o.body == FEED for o in outcomes), outcomes
    assert len(feed_server.seen()) == 6
    assert peak <= 2
    assert peak == 2  # and it did run two at a time


def test_a_304_leaves_its_connection_open_for_the_next_poll(feed_server: FeedServer) -> None:
    """Polls of one host that answer 304 share one connection: no handshake per poll."""
    ports: list[int] = []

    def not_modified(handler: BaseHTTPRequestHandler) -> None:
        ports.append(handler.client_address[1])
        handler.send_response(304)
        handler.send_header("ETag", '"v1"')
        handler.end_headers()

    feed_server.handlers["/f.xml"] = not_modified
    url = feed_server.url("/f.xml")

    async def go() -> list[FetchOutcome]:
        async with Fetcher(concurrency=1, per_host=1) as fetcher:
            return [await fetcher.fetch(url, Validators(etag='"v1"')) for _ in range(3)]

    outcomes = asyncio.run(go())
    assert all(isinstance(o, NotModified) for o in outcomes)
    assert len(ports) == 3 and len(set(ports)) == 1, ports


def test_fetched_bodies_in_hand_are_bounded_by_concurrency(feed_server: FeedServer) -> None:
    """A body waiting for the parser keeps its slot: never more than `concurrency` in hand,
    however many sources are due and however fast the server answers."""
    url = feed_server.add("/f.xml", rss2("S", "https://s.example.org/", []))
    in_hand = most = 0

    async def go() -> None:
        async with Fetcher(concurrency=2, per_host=10) as fetcher:

            async def poll() -> None:
                nonlocal in_hand, most
                async with fetcher.polling(url) as outcome:
                    assert isinstance(outcome, Fetched)
                    in_hand += 1
                    most = max(most, in_hand)
                    await asyncio.sleep(0.02)  # the parser is busy
                    in_hand -= 1

            await asyncio.gather(*(poll() for _ in range(8)))

    asyncio.run(go())
    assert most == 2
    assert len(feed_server.seen("/f.xml")) == 8


def test_a_reason_phrase_is_shown_without_control_characters_and_capped(
    feed_server: FeedServer,
) -> None:
    """A server's reason phrase went into the error as sent: its escape sequences reached
    the log, `once` and `status` (recolouring, retitling or clearing the operator's
    terminal), and 12,000 characters of it were stored and printed."""
    reason = "\x1b[31mRED\x1b[0m\x1b]0;pwned\x07 \x1b[2J" + "x" * 12_000

    feed_server.handlers["/r.xml"] = lambda handler: send(handler, 503, reason=reason)
    outcome = fetch(feed_server.url("/r.xml"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("HTTP 503 [31mRED[0m]0;pwned")
    assert outcome.error.isprintable()
    assert len(outcome.error) <= len("HTTP 503 ") + 200


@pytest.mark.parametrize(
    "url", ["http://[zz]/feed.xml", "http://[::1", "https://[example.com]/rss"]
)
def test_a_url_with_a_broken_host_is_a_failed_fetch_not_an_exception(url: str) -> None:
    """`fetch` never raises for what it is given: `aggregator add` passed such URLs on, and
    urlsplit's ValueError came out as a traceback."""
    outcome = fetch(url)
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("not a valid URL: ")


def test_add_says_a_url_with_a_broken_host_cannot_be_fetched(tmp_path: Path) -> None:
    from tests.conftest import run_cli  # noqa: PLC0415

    result = run_cli("add", "http://[zz]/feed.xml", "--config", "feeds.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot fetch http://[zz]/feed.xml: not a valid URL")


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml"])
def test_a_redirect_away_from_http_is_refused_and_says_so(
    feed_server: FeedServer, location: str
) -> None:
    """Nothing is read there; the error said only "NetworkError: file://127.0.0.1/etc/passwd"
    (httpx had put the feed's host into the URL)."""
    feed_server.handlers["/moved.xml"] = redirect(301, location)
    outcome = fetch(feed_server.url("/moved.xml"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("refused a redirect to a URL that is not http or https: ")
    assert location.partition(":")[0] + "://" in outcome.error


@pytest.mark.timeout(30)
def test_a_local_source_that_is_a_fifo_fails_without_blocking(tmp_path: Path) -> None:
    """A local source is read on the event loop: a FIFO there (or one swapped in after the
    `stat`) would block the loop, every poll and the web server, until a writer came."""
    fifo = tmp_path / "feed.xml"
    os.mkfifo(fifo)
    outcome = fetch(fifo.as_uri())
    assert isinstance(outcome, Failed), outcome
    assert outcome.error == f"not a regular file: {fifo}"


def _raw(status_line: bytes, headers: bytes, body: bytes = b"") -> Handler:
    """A response written byte for byte (the standard library's writes headers as Latin-1)."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(
            status_line + b"\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

    return handle


@pytest.mark.parametrize(
    ("etag", "last_modified"),
    [
        ('"समाचार-v1"'.encode(), b""),
        (b'W/"caf\xe9"', b""),  # Latin-1
        (b"", "रवि, 13 जुल॰ 2025 10:00:00 GMT".encode()),
        (b'"a\x01b"', b"Sun, 13 Jul 2025 10:00:00 GMT\x7f"),  # no client may send these
    ],
)
def test_validators_that_are_not_ascii_go_back_as_they_came(
    feed_server: FeedServer, etag: bytes, last_modified: bytes
) -> None:
    """A server's non-ASCII ETag or Last-Modified was kept as text, which httpx refused to
    send: every later poll of the source failed before any request (UnicodeEncodeError),
    for good. It goes back as the bytes it came as; a 304 is a 304."""
    body = rss2("A", "https://a.example/", [])
    headers = b"Content-Type: application/rss+xml\r\n"
    headers += (b"ETag: " + etag + b"\r\n") if etag else b""
    headers += (b"Last-Modified: " + last_modified + b"\r\n") if last_modified else b""
    feed_server.handlers["/v.xml"] = _raw(b"HTTP/1.1 200 OK", headers, body)
    first = fetch(feed_server.url("/v.xml"))
    assert isinstance(first, Fetched), first
    feed_server.handlers["/v.xml"] = _raw(b"HTTP/1.1 304 Not Modified", headers)
    again = fetch(feed_server.url("/v.xml"), first.validators)
    assert isinstance(again, NotModified), again
    sent = feed_server.seen("/v.xml")[-1].headers  # as http.server reads them: Latin-1

    def as_sent(value: bytes) -> bytes:  # UTF-8 comes back byte for byte; Latin-1 as UTF-8
        try:
            return value.decode("utf-8").encode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1").encode("utf-8")

    for name, value in (("if-none-match", etag), ("if-modified-since", last_modified)):
        if value and re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
            assert name not in sent  # left out: aiohttp refused the request, poll after poll
        elif value:
            assert sent[name].encode("latin-1") == as_sent(value)


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("HTTP/1.1 503 सेवा अनुपलब्ध".encode(), "HTTP 503 सेवा अनुपलब्ध"),
        (b"HTTP/1.1 404 N\xe3o Encontrado", "HTTP 404 Não Encontrado"),  # Latin-1
    ],
)
def test_a_reason_phrase_that_is_not_ascii_is_shown_as_sent(
    feed_server: FeedServer, line: bytes, shown: str
) -> None:
    """httpx's `reason_phrase` drops every byte that is not ASCII: the operator read
    "HTTP 503 ???? ????????"."""
    feed_server.handlers["/r.xml"] = _raw(line, b"Content-Type: text/plain\r\n")
    outcome = fetch(feed_server.url("/r.xml"))
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith(shown), outcome.error


@pytest.mark.parametrize(
    "cookie",
    [
        "city=नई दिल्ली; Path=/".encode(),
        b"name=Jos\xe9; Path=/",
        b"a=b\x7fc; Path=/",  # a control character: aiohttp refused the request
        b"ok=1; Path=/",
    ],
)
def test_a_redirect_setting_a_cookie_that_is_not_ascii_still_reaches_the_feed(
    feed_server: FeedServer, cookie: bytes
) -> None:
    """A cookie check (set a cookie, redirect to itself) whose value is not ASCII: httpx
    raised making the redirect's request, and the feed was never fetched. Such a cookie is
    dropped; an ASCII one still goes with the redirect."""
    body = rss2("A", "https://a.example/", [])
    feed_server.handlers["/check"] = _raw(
        b"HTTP/1.1 302 Found", b"Set-Cookie: " + cookie + b"\r\nLocation: /feed.xml\r\n"
    )
    feed_server.handlers["/feed.xml"] = _raw(
        b"HTTP/1.1 200 OK", b"Content-Type: application/rss+xml\r\n", body
    )
    outcome = fetch(feed_server.url("/check"))
    assert isinstance(outcome, Fetched), outcome
    sent = feed_server.seen("/feed.xml")[-1].headers.get("cookie")
    assert sent == ("ok=1" if cookie.startswith(b"ok=") else None)

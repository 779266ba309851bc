"""The fetcher's aiohttp transport (`aggregator.transport`) keeps what httpcore gave it.

Requests go out as httpx built them, nothing added; connections are reused, and one a
response was abandoned on is never reused; a request cancelled at its deadline leaves the
pool usable; every aiohttp error becomes an httpx error with a one-line message. The body
bounds, decompression, deadlines and redirects are tests/test_fetch.py's, run on this
transport.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import http_exceptions

from aggregator.fetch import ACCEPT, Fetcher
from aggregator.transport import MAX_HEADER_LINE, _tls_context, _translated
from aggregator.types import Failed, Fetched, FetchOutcome, NotModified, Validators
from tests.feedfactory import rss2
from tests.feedserver import FeedServer

FEED = rss2("S", "https://s.example.org/", [])


def fetch_all(urls: list[tuple[str, Validators]], **options: float) -> list[FetchOutcome]:
    """Fetch `urls` one after another with one `Fetcher` (one pool)."""

    async def go() -> list[FetchOutcome]:
        async with Fetcher(**options) as fetcher:  # type: ignore[arg-type]
            return [await fetcher.fetch(url, validators) for url, validators in urls]

    return asyncio.run(go())


def raw(lines: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A handler that writes `lines` as they are, then ends the connection."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(lines)
        handler.close_connection = True

    return handle


def test_requests_go_out_as_httpx_built_them(feed_server: FeedServer) -> None:
    """No header of aiohttp's: one of each, ours; no cookie jar of its own (a cookie lives
    for one fetch: aggregator/fetch_cookies.py)."""
    sent: list[list[tuple[str, str]]] = []

    def handle(handler: BaseHTTPRequestHandler) -> None:
        sent.append([(k.lower(), v) for k, v in handler.headers.items()])
        handler.send_response(200)
        handler.send_header("Set-Cookie", "session=abc; Path=/")
        handler.send_header("Content-Length", str(len(FEED)))
        handler.end_headers()
        handler.wfile.write(FEED)

    feed_server.handlers["/f.xml"] = handle
    url = feed_server.url("/f.xml")
    outcomes = fetch_all([(url, Validators()), (url, Validators(etag='"v1"'))])
    assert all(isinstance(o, Fetched) for o in outcomes), outcomes
    first, second = (dict(headers) for headers in sent)
    for headers in sent:
        names = [name for name, _ in headers]
        assert len(names) == len(set(names)), headers
    assert first["user-agent"].startswith("aggregator/")
    assert first["accept"] == ACCEPT
    assert first["accept-encoding"] == "gzip, deflate, br"
    assert set(first) == {"host", "accept", "accept-encoding", "connection", "user-agent"}
    assert second["if-none-match"] == '"v1"'
    assert "cookie" not in second  # kept neither by aiohttp nor past its fetch


def test_the_url_goes_out_as_httpx_encoded_it(feed_server: FeedServer) -> None:
    """Signed feed URLs break if a byte of them changes: no quoting again, no unquoting."""
    paths: list[str] = []

    def handle(handler: BaseHTTPRequestHandler) -> None:
        paths.append(handler.path)
        handler.send_response(304)
        handler.end_headers()

    path = "/f%2Bx.xml"
    query = "?token=a%2Bb%3D&q=%7E~&s=%e0%a4%95"
    feed_server.handlers[path + query] = handle  # the server's handlers go by the whole target
    (outcome,) = fetch_all([(feed_server.url(path + query), Validators(etag='"v1"'))])
    assert isinstance(outcome, NotModified), outcome
    assert paths == [str(httpx.URL(feed_server.url(path + query)).raw_path, "ascii")]
    assert paths == [path + query]


def test_credentials_in_the_url_go_once_as_basic_auth(feed_server: FeedServer) -> None:
    sent: list[list[str]] = []

    def handle(handler: BaseHTTPRequestHandler) -> None:
        sent.append(handler.headers.get_all("Authorization") or [])
        handler.send_response(304)
        handler.end_headers()

    feed_server.handlers["/private.xml"] = handle
    url = feed_server.url("/private.xml").replace("://", "://reader:pw%40x@")
    (outcome,) = fetch_all([(url, Validators(etag='"v1"'))])
    assert isinstance(outcome, NotModified), outcome
    assert sent == [["Basic " + base64.b64encode(b"reader:pw@x").decode()]]


def test_connections_are_kept_alive_and_reused(feed_server: FeedServer) -> None:
    ports: list[int] = []

    def not_modified(handler: BaseHTTPRequestHandler) -> None:
        ports.append(handler.client_address[1])
        handler.send_response(304)
        handler.end_headers()

    feed_server.handlers["/f.xml"] = not_modified
    url = feed_server.url("/f.xml")
    outcomes = fetch_all([(url, Validators(etag='"v1"'))] * 20, concurrency=1, per_host=1)
    assert all(isinstance(o, NotModified) for o in outcomes), outcomes
    assert len(ports) == 20 and len(set(ports)) == 1, ports


def test_a_connection_left_mid_body_is_never_reused(feed_server: FeedServer) -> None:
    """A body over the limit is abandoned mid-way: the next request must not read its rest
    as a response, so it goes over a new connection."""
    ports: list[int] = []

    def big(handler: BaseHTTPRequestHandler) -> None:
        ports.append(handler.client_address[1])
        body = b"<rss>" + b"x" * 3_000_000
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    feed_server.handlers["/big.xml"] = big
    small = feed_server.add("/small.xml", FEED)
    big_url = feed_server.url("/big.xml")
    outcomes = fetch_all(
        [(big_url, Validators()), (small, Validators()), (small, Validators())],
        concurrency=1,
        per_host=1,
        max_bytes=1_000_000,
    )
    assert isinstance(outcomes[0], Failed) and "too large" in outcomes[0].error, outcomes[0]
    assert all(isinstance(o, Fetched) and o.body == FEED for o in outcomes[1:]), outcomes
    (request,) = feed_server.seen("/big.xml")
    assert request.status == 0  # answered by the handler, once


@pytest.mark.timeout(60)
def test_requests_cancelled_at_their_deadline_leave_the_pool_usable(
    feed_server: FeedServer,
) -> None:
    """httpcore #1093's trap, on this transport: deadlines cut requests off mid-response,
    many times over, and every request after them still gets its answer."""
    release = threading.Event()

    def silent(handler: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        handler.close_connection = True

    feed_server.handlers["/silent.xml"] = silent
    good = feed_server.add("/good.xml", FEED)
    silent_url = feed_server.url("/silent.xml")

    async def go() -> tuple[list[FetchOutcome], list[FetchOutcome]]:
        async with Fetcher(timeout=0.3, concurrency=2, per_host=2) as fetcher:
            cut = await asyncio.gather(*(fetcher.fetch(silent_url) for _ in range(6)))
            after = await asyncio.gather(*(fetcher.fetch(good) for _ in range(6)))
            return cut, after

    try:
        cut, after = asyncio.run(go())
    finally:
        release.set()
    assert all(isinstance(o, Failed) and "timed out" in o.error for o in cut), cut
    assert all(isinstance(o, Fetched) and o.body == FEED for o in after), after


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nNo colon in this header\r\n\r\n", "broke the HTTP protocol"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "broke the HTTP protocol"),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_LINE + 10) + b"\r\n\r\n",
            "broke the HTTP protocol",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"", "broke the HTTP protocol"),  # closed without a word
    ],
    ids=["header-without-colon", "bad-status", "header-too-long", "bad-chunk", "nothing"],
)
def test_a_server_breaking_http_fails_in_one_line(
    feed_server: FeedServer, response: bytes, expected: str
) -> None:
    feed_server.handlers["/bad.xml"] = raw(response)
    (outcome,) = fetch_all([(feed_server.url("/bad.xml"), Validators())])
    assert isinstance(outcome, Failed), outcome
    assert expected in outcome.error, outcome.error
    assert "\n" not in outcome.error and len(outcome.error) <= 200, outcome.error
    assert "aiohttp" not in outcome.error and "Error" not in outcome.error, outcome.error


def test_long_headers_that_httpcore_accepted_still_pass(feed_server: FeedServer) -> None:
    cookie = "c=" + "v" * 12_000  # over aiohttp's default 8 KiB line, under 16 KiB

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Set-Cookie", cookie)
        handler.send_header("Content-Length", str(len(FEED)))
        handler.end_headers()
        handler.wfile.write(FEED)

    feed_server.handlers["/f.xml"] = handle
    (outcome,) = fetch_all([(feed_server.url("/f.xml"), Validators())])
    assert isinstance(outcome, Fetched) and outcome.body == FEED, outcome


def test_a_refused_connection_names_the_os_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    (outcome,) = fetch_all([(f"http://127.0.0.1:{port}/f.xml", Validators())], timeout=5)
    assert isinstance(outcome, Failed), outcome
    assert outcome.error == "connection refused by 127.0.0.1"
    assert time.monotonic() - started < 5


_REQUEST = httpx.Request("GET", "http://example.org/")


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (aiohttp.ClientConnectorError(None, ConnectionRefusedError(111, "refused")),  # type: ignore[arg-type]
         httpx.ConnectError),
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientResponseError(None, (), message="Bad status line:\n  b'SSH'"),  # type: ignore[arg-type]
         httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("Response payload is not completed"), httpx.ReadError),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
         httpx.NetworkError),
        (aiohttp.InvalidURL("nowhere"), httpx.UnsupportedProtocol),
    ],
    ids=lambda value: type(value).__name__,
)  # fmt: skip
def test_no_aiohttp_error_leaves_the_transport(
    theirs: aiohttp.ClientError, ours: type[httpx.TransportError]
) -> None:
    with pytest.raises(httpx.TransportError) as caught, _translated(_REQUEST):
        raise theirs
    assert type(caught.value) is ours
    message = str(caught.value)
    assert message and "\n" not in message and len(message) <= 120, message


def test_a_cut_body_names_how_it_was_cut() -> None:
    cut = aiohttp.ClientPayloadError("Response payload is not completed")
    cut.__cause__ = http_exceptions.ContentLengthError(
        "Not enough data to satisfy content length header."
    )
    with pytest.raises(httpx.ReadError, match=r"^Not enough data"), _translated(_REQUEST):
        raise cut
    with pytest.raises(httpx.ReadError, match="Connection reset by peer"), _translated(_REQUEST):
        raise aiohttp.ClientOSError(104, "Connection reset by peer")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A feed over https on 127.0.0.1 with a self-signed certificate: (url, certificate)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(FEED)))
            self.end_headers()
            self.wfile.write(FEED)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/f.xml", cert
    finally:
        server.shutdown()
        server.server_close()


_DEFAULT_CONTEXTS = """
import asyncio, ssl, sys
import aggregator.transport, aiohttp, httpx
from aggregator.fetch import Fetcher

async def main(url):
    async with Fetcher() as fetcher:  # ours: its own context for https
        print(type(await fetcher.fetch(url)).__name__)
    async with aiohttp.ClientSession() as session:  # aiohttp's default context
        try:
            await session.get(url)
            print("trusted")
        except aiohttp.ClientConnectorCertificateError:
            print("refused")
    print(ssl.create_default_context().cert_store_stats()["x509_ca"])

asyncio.run(main(sys.argv[1]))
"""


def _fresh_process(script: str, certificate: Path, *args: str) -> str:
    """What `script` prints in a new interpreter (where nothing imported aiohttp first),
    trusting `certificate` alone (`SSL_CERT_FILE`)."""
    found = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "SSL_CERT_FILE": str(certificate)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    return found.stdout


def test_aiohttp_default_contexts_are_made_without_roots_and_no_other_is(
    tls_server: tuple[str, Path],
) -> None:
    """Importing the transport spares aiohttp's two default TLS contexts the reading of the
    system's roots (~50 ms at each start): ours, given to every https request, still
    trusts what the roots hold; aiohttp's, never used, would refuse every server; a context
    made after the import reads the roots again. A fresh process, where nothing imported
    aiohttp first."""
    url, cert = tls_server
    assert _fresh_process(_DEFAULT_CONTEXTS, cert, url).split() == ["Fetched", "refused", "1"]


def test_with_another_thread_running_aiohttp_is_imported_as_it_is(
    tls_server: tuple[str, Path],
) -> None:
    """Another thread could make a TLS context while aiohttp imports: then the roots are not
    spared, aiohttp's contexts are made as aiohttp makes them."""
    script = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "import aggregator.transport, aiohttp.connector as c\n"
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'])\n"
    )
    assert int(_fresh_process(script, tls_server[1])) == 1  # the one SSL_CERT_FILE holds


def test_https_verifies_the_certificate_as_httpx_does(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's verification (its default roots, `SSL_CERT_FILE`): an unknown certificate
    is refused and named; one the roots include is accepted."""
    url, cert = tls_server
    _tls_context.cache_clear()
    try:
        (refused,) = fetch_all([(url, Validators())])
        assert isinstance(refused, Failed), refused
        assert refused.error.startswith("cannot connect to 127.0.0.1: [SSL: CERTIFICATE_VERIFY")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        _tls_context.cache_clear()
        (trusted,) = fetch_all([(url, Validators())])
        assert isinstance(trusted, Fetched) and trusted.body == FEED, trusted
    finally:
        _tls_context.cache_clear()

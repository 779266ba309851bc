"""The Starlette app that serves `output/` (in-process), and `aggregator serve` (real CLI).

Shows: media types and exact bodies, stable ETags (a hash of the bytes, not the mtime),
304s by If-None-Match / If-Modified-Since (and that they never read the file), HEAD, gzip,
no byte from outside the output directory nor any hidden file, `/`, `/healthz`, `/metrics`,
and `aggregator serve` answering on 127.0.0.1 and stopping on SIGTERM without polling.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import Message, Scope

from aggregator.cli import RateLimitedWarnings
from aggregator.server import PublishedFiles, create_app, listen_socket, media_type_of
from aggregator.server import app as server_app
from aggregator.server import files as server_files
from tests.conftest import start_serve

with warnings.catch_warnings():
    # Starlette >= 1.x prefers `httpx2` for its test client; `httpx` is what is installed.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}

ATOM = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<feed xmlns="http://www.w3.org/2005/Atom"><title>aggregator — ख़बर</title>'
    + "".join(f"<entry><title>entry {i} – ünïcödé</title></entry>" for i in range(40))
    + "</feed>\n"
).encode()
RSS = (
    '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
    + "".join(f"<item><title>item {i} — ✓</title></item>" for i in range(40))
    + "</channel></rss>\n"
).encode()
FEED_JSON = (
    json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "aggregator",
            "items": [{"id": str(i), "title": f"item {i} ✓"} for i in range(30)],
        },
        ensure_ascii=False,
    )
    + "\n"
).encode()
INDEX = "<!doctype html><title>aggregator</title><p>Feeds — ख़बर</p>\n".encode()

MTIME = 1_700_000_000  # a fixed, whole-second modification time


def _write(path: Path, body: bytes, mtime: int | None = None) -> None:
    """Write as publish does: a temporary file, then os.replace (a new inode, a new mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(body)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    tmp.replace(path)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    for name, body in (
        ("atom.xml", ATOM),
        ("rss.xml", RSS),
        ("feed.json", FEED_JSON),
        ("index.html", INDEX),
    ):
        _write(tmp_path / name, body, MTIME)
    return tmp_path


@pytest.fixture
def client(out: Path) -> TestClient:
    return TestClient(create_app(out))


# -- media types and bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "media_type"),
    [
        ("/rss.xml", RSS, "application/rss+xml; charset=utf-8"),
        ("/atom.xml", ATOM, "application/atom+xml; charset=utf-8"),
        ("/feed.json", FEED_JSON, "application/feed+json; charset=utf-8"),
        ("/index.html", INDEX, "text/html; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_media_type_and_exact_bytes(
    client: TestClient, path: str, body: bytes, media_type: str
) -> None:
    response = client.get(path, headers=IDENTITY)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert "content-encoding" not in response.headers
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["etag"].startswith('"')
    assert response.headers["etag"].endswith('"')
    assert response.headers["last-modified"] == formatdate(MTIME, usegmt=True)


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("rss.xml", "application/rss+xml; charset=utf-8"),
        ("atom.xml", "application/atom+xml; charset=utf-8"),
        ("feed.json", "application/feed+json; charset=utf-8"),
        ("feeds.opml", "text/x-opml; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("tag/python.xml", "application/xml; charset=utf-8"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("logo.png", "image/png"),
        ("blob", "application/octet-stream"),
    ],
)
def test_media_type_of(name: str, media_type: str) -> None:
    assert media_type_of(name) == media_type


def test_a_file_in_a_subdirectory_is_served(tmp_path: Path) -> None:
    _write(tmp_path / "out" / "sub" / "x.xml", b"<x>sub</x>\n")
    response = TestClient(create_app(tmp_path / "out")).get("/sub/x.xml", headers=IDENTITY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml; charset=utf-8"
    assert response.content == b"<x>sub</x>\n"


def test_a_missing_file_is_404(client: TestClient) -> None:
    assert client.get("/nope.xml").status_code == 404
    assert client.get("/atom.xml/").status_code == 404


# -- ETag and Last-Modified -------------------------------------------------------------


def test_etag_is_a_hash_of_the_bytes_not_of_the_mtime(client: TestClient, out: Path) -> None:
    first = client.get("/atom.xml", headers=IDENTITY)
    etag = first.headers["etag"]
    assert first.headers["last-modified"] == formatdate(MTIME, usegmt=True)
    assert client.get("/atom.xml", headers=IDENTITY).headers["etag"] == etag

    # The same bytes, rewritten: a new mtime (so a new Last-Modified), the same ETag.
    _write(out / "atom.xml", ATOM, MTIME + 60)
    same = client.get("/atom.xml", headers=IDENTITY)
    assert same.headers["last-modified"] == formatdate(MTIME + 60, usegmt=True)
    assert same.headers["etag"] == etag
    assert same.content == ATOM

    # Different bytes of the same length: a different ETag and the new body.
    changed = ATOM.replace(b"entry 0 ", b"ENTRY 0 ")
    assert len(changed) == len(ATOM)
    _write(out / "atom.xml", changed, MTIME + 120)
    new = client.get("/atom.xml", headers=IDENTITY)
    assert new.content == changed
    assert new.headers["etag"] != etag
    assert client.get("/atom.xml", headers=IDENTITY).headers["etag"] == new.headers["etag"]

    # Different length too.
    _write(out / "atom.xml", ATOM + b"\n", MTIME + 180)
    longer = client.get("/atom.xml", headers=IDENTITY)
    assert longer.content == ATOM + b"\n"
    assert longer.headers["etag"] not in (etag, new.headers["etag"])


def test_etags_differ_between_files(client: TestClient) -> None:
    tags = {client.get(p, headers=IDENTITY).headers["etag"] for p in ("/atom.xml", "/rss.xml")}
    assert len(tags) == 2


# -- conditional requests ---------------------------------------------------------------


def test_if_none_match_with_the_etag_is_304_without_a_body(client: TestClient) -> None:
    etag = client.get("/atom.xml", headers=IDENTITY).headers["etag"]
    response = client.get("/atom.xml", headers={**IDENTITY, "If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["last-modified"] == formatdate(MTIME, usegmt=True)
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ("{etag}", 304),
        ('"x", {etag}', 304),
        ('"x",{etag} , "y"', 304),
        ("W/{etag}", 304),  # weak comparison, as RFC 9110 requires for If-None-Match
        ("*", 304),
        ('"x"', 200),
        ('"not-the-etag"', 200),
        ("", 200),
    ],
)
def test_if_none_match(client: TestClient, if_none_match: str, status: int) -> None:
    etag = client.get("/atom.xml", headers=IDENTITY).headers["etag"]
    header = if_none_match.format(etag=etag)
    response = client.get("/atom.xml", headers={**IDENTITY, "If-None-Match": header})
    assert response.status_code == status
    assert response.headers["etag"] == etag
    assert response.content == (ATOM if status == 200 else b"")


def test_if_modified_since(client: TestClient) -> None:
    last_modified = client.get("/atom.xml", headers=IDENTITY).headers["last-modified"]
    assert last_modified == formatdate(MTIME, usegmt=True)

    equal = client.get("/atom.xml", headers={**IDENTITY, "If-Modified-Since": last_modified})
    assert equal.status_code == 304
    assert equal.content == b""

    later = formatdate(MTIME + 3600, usegmt=True)
    assert client.get("/atom.xml", headers={"If-Modified-Since": later}).status_code == 304

    older = formatdate(MTIME - 1, usegmt=True)
    response = client.get("/atom.xml", headers={**IDENTITY, "If-Modified-Since": older})
    assert response.status_code == 200
    assert response.content == ATOM

    garbage = client.get("/atom.xml", headers={**IDENTITY, "If-Modified-Since": "yesterday"})
    assert garbage.status_code == 200
    assert garbage.content == ATOM


def test_if_none_match_takes_precedence_over_if_modified_since(client: TestClient) -> None:
    first = client.get("/atom.xml", headers=IDENTITY)
    fresh = first.headers["last-modified"]
    wrong = client.get(
        "/atom.xml", headers={**IDENTITY, "If-None-Match": '"wrong"', "If-Modified-Since": fresh}
    )
    assert wrong.status_code == 200
    assert wrong.content == ATOM

    older = formatdate(MTIME - 3600, usegmt=True)
    right = client.get(
        "/atom.xml",
        headers={**IDENTITY, "If-None-Match": first.headers["etag"], "If-Modified-Since": older},
    )
    assert right.status_code == 304


def test_an_unchanged_file_is_not_read_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get("/atom.xml", headers=IDENTITY)
    assert first.status_code == 200
    etag = first.headers["etag"]

    def no_reading(path: Path, name: str) -> None:
        raise AssertionError(f"read {path} again")

    monkeypatch.setattr(server_files, "_load_version", no_reading)
    not_modified = client.get("/atom.xml", headers={**IDENTITY, "If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == etag
    by_date = client.get(
        "/atom.xml", headers={**IDENTITY, "If-Modified-Since": first.headers["last-modified"]}
    )
    assert by_date.status_code == 304
    again = client.get("/atom.xml", headers=IDENTITY)
    assert again.status_code == 200
    assert again.content == ATOM
    assert again.headers["etag"] == etag
    monkeypatch.undo()
    assert client.get("/rss.xml", headers=IDENTITY).content == RSS


# -- HEAD -------------------------------------------------------------------------------


def test_head_has_the_headers_and_no_body(client: TestClient) -> None:
    get = client.get("/atom.xml", headers=IDENTITY)
    head = client.head("/atom.xml", headers=IDENTITY)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(ATOM))
    assert head.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["last-modified"] == get.headers["last-modified"]

    conditional = client.head(
        "/atom.xml", headers={**IDENTITY, "If-None-Match": get.headers["etag"]}
    )
    assert conditional.status_code == 304
    assert client.head("/missing.xml").status_code == 404


# -- gzip -------------------------------------------------------------------------------


def test_gzip(client: TestClient) -> None:
    identity = client.get("/atom.xml", headers=IDENTITY)
    assert identity.headers["vary"] == "Accept-Encoding"

    zipped = client.get("/atom.xml", headers=GZIP)
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in zipped.headers["vary"].lower()
    assert zipped.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert zipped.content == identity.content == ATOM  # httpx decodes it

    with client.stream("GET", "/atom.xml", headers=GZIP) as streamed:
        raw = b"".join(streamed.iter_raw())
    assert raw != ATOM
    assert len(raw) < len(ATOM)
    assert gzip.decompress(raw) == ATOM
    assert streamed.headers["content-length"] == str(len(raw))

    gzip_etag = zipped.headers["etag"]
    assert gzip_etag != identity.headers["etag"]
    assert client.get("/atom.xml", headers=GZIP).headers["etag"] == gzip_etag

    not_modified = client.get("/atom.xml", headers={**GZIP, "If-None-Match": gzip_etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == gzip_etag
    assert "content-encoding" not in not_modified.headers

    head = client.head("/atom.xml", headers=GZIP)
    assert head.headers["content-encoding"] == "gzip"
    assert head.headers["content-length"] == str(len(raw))


@pytest.mark.parametrize("size", [0, 1, 100, 255])
def test_small_files_are_sent_uncompressed(tmp_path: Path, size: int) -> None:
    body = (b"<x>" + b"y" * size)[:size]
    _write(tmp_path / "small.xml", body)
    response = TestClient(create_app(tmp_path)).get("/small.xml", headers=GZIP)
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.content == body
    assert response.headers["content-length"] == str(size)


def test_a_file_of_256_bytes_is_compressed(tmp_path: Path) -> None:
    _write(tmp_path / "edge.xml", b"a" * 256)
    response = TestClient(create_app(tmp_path)).get("/edge.xml", headers=GZIP)
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == b"a" * 256


# -- never a byte outside the output directory ------------------------------------------


def _raw_get(app: Starlette, raw_path: bytes) -> tuple[int, bytes]:
    """GET `raw_path` exactly as uvicorn passes it (no dot-segment removal, unlike httpx)."""
    messages = _raw_messages(app, raw_path)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(status), body


def _raw_messages(app: Starlette, raw_path: bytes) -> list[Message]:
    """The ASGI messages `app` sends for GET `raw_path`."""
    messages: list[Message] = []
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"accept-encoding", b"identity")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    async def call() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            if not messages:  # the error middleware normally answers 500 first
                messages.append({"type": "http.response.start", "status": 500})

    asyncio.run(call())
    return messages


SECRET = b"the secret outside the output directory\n"


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """tmp_path/out to serve, with secret.txt beside it and tricks inside it."""
    out = tmp_path / "out"
    (tmp_path / "secret.txt").write_bytes(SECRET)
    _write(out / "atom.xml", ATOM)
    _write(out / "sub" / "x.xml", b"<x/>\n")
    (out / ".hidden").write_bytes(b"hidden\n")
    (out / ".atom.xml.abc.tmp").write_bytes(b"partial\n")
    (out / "link.xml").symlink_to(tmp_path / "secret.txt")
    (out / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    return out


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/sub/../../secret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt",
    "/./../secret.txt",
    "/.hidden",
    "/.atom.xml.abc.tmp",
    "/sub/../.hidden",
    "//etc/passwd",
    "/%2fetc/passwd",
    "/link.xml",
    "/linkdir/secret.txt",
    "/sub",
    "/sub/",
    "/%00",
    "/atom.xml%00",
    "/atom.xml%00.html",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_output_dir_nor_hidden_is_served(jail: Path, path: str) -> None:
    app = create_app(jail)
    status, body = _raw_get(app, path.encode("ascii"))
    assert (status, body) == (404, b"not found\n")

    # Through the test client too, for the paths httpx sends as they are.
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get(f"http://testserver{path}", headers=IDENTITY)
    assert response.status_code == 404
    assert SECRET not in response.content


def test_the_raw_request_helper_does_serve_files(jail: Path) -> None:
    """So the 404s above are the server refusing, not the helper failing."""
    app = create_app(jail)
    assert _raw_get(app, b"/sub/x.xml") == (200, b"<x/>\n")
    assert _raw_get(app, b"/sub/./x.xml") == (404, b"not found\n")  # '.' is refused too
    assert _raw_get(app, b"/atom.xml") == (200, ATOM)


def test_published_files_path_of(jail: Path) -> None:
    files = PublishedFiles(jail)
    assert files.path_of("atom.xml") == (jail / "atom.xml").resolve()
    assert files.path_of("sub/x.xml") == (jail / "sub" / "x.xml").resolve()
    for name in ("", "../secret.txt", "sub/../../secret.txt", ".hidden", "link.xml", "sub"):
        assert files.path_of(name) is None, name
    assert asyncio.run(files.get("../secret.txt")) is None


# -- / ----------------------------------------------------------------------------------


def test_root_without_index_lists_the_feeds(tmp_path: Path) -> None:
    _write(tmp_path / "atom.xml", ATOM)
    response = TestClient(create_app(tmp_path)).get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "/atom.xml" in response.text
    assert "/rss.xml" in response.text


def test_root_serves_index_html(client: TestClient) -> None:
    response = client.get("/", headers=IDENTITY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == INDEX
    assert response.headers["etag"] == client.get("/index.html").headers["etag"]


# -- /healthz and /metrics --------------------------------------------------------------


async def _healthy() -> None:
    return None


def test_healthz_ok(tmp_path: Path) -> None:
    response = TestClient(create_app(tmp_path, health=_healthy)).get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}
    assert TestClient(create_app(tmp_path)).get("/healthz").json() == {"status": "ok"}


def test_healthz_unavailable_with_the_reason(tmp_path: Path) -> None:
    async def stopped() -> str:
        return "the scheduler is not running"

    app = create_app(tmp_path, health=stopped)
    response = TestClient(app).get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "the scheduler is not running"}


def test_healthz_unavailable_without_the_output_dir(tmp_path: Path) -> None:
    response = TestClient(create_app(tmp_path / "missing", health=_healthy)).get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert isinstance(body["reason"], str)
    assert body["reason"]


def test_metrics(tmp_path: Path) -> None:
    exposition = b'# HELP polls_total Polls.\n# TYPE polls_total counter\npolls_total{x="y"} 3.0\n'
    response = TestClient(create_app(tmp_path, metrics=lambda: exposition)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == exposition


# -- aggregator serve (the real CLI) ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw_status(port: int, path: str) -> tuple[int, bytes]:
    """GET `path` byte for byte (http.client does not normalise it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_aggregator_serve(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "feeds.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
        '[publish]\noutput_dir = "out"\n\n'
        '[[feeds]]\nurl = "https://example.org/feed.xml"\n',
        encoding="utf-8",
    )
    _write(tmp_path / "out" / "atom.xml", ATOM, MTIME)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    process, log = start_serve(tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/atom.xml"
        deadline = time.monotonic() + 20
        response: httpx.Response | None = None
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text("utf-8", "replace")
            try:
                response = httpx.get(url, headers=IDENTITY, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, "serve did not answer within 20 s\n" + log.read_text(
            "utf-8", "replace"
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
        assert response.content == ATOM
        assert response.headers["last-modified"] == formatdate(MTIME, usegmt=True)

        etag = response.headers["etag"]
        again = httpx.get(url, headers={**IDENTITY, "If-None-Match": etag}, timeout=5)
        assert again.status_code == 304
        zipped = httpx.get(url, headers=GZIP, timeout=5)
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == ATOM

        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/.hidden"):
            status, body = _raw_status(port, path)
            assert status == 404, path
            assert SECRET not in body

        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("aggregator serve did not exit within 10 s of SIGTERM")
    assert returncode == 0, log.read_text("utf-8", "replace")

    # It served and nothing else: no poll, no publish, no store.
    assert (tmp_path / "out" / "atom.xml").read_bytes() == ATOM
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == sorted([*before, Path("serve.log")])


def test_accepted_connections_send_without_waiting_for_acks() -> None:
    """TCP_NODELAY on every connection: headers then body must not wait ~40 ms for an ACK.

    asyncio (and so uvicorn) sets it only on sockets that say they are TCP, which
    `socket.create_server` does not; `listen_socket` must.
    """
    seen: list[int] = []

    async def scenario() -> None:
        listener = listen_socket("127.0.0.1", 0)
        port = listener.getsockname()[1]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(scenario())
    assert seen and seen[0] != 0


# -- bounded cost -------------------------------------------------------------------------


def test_a_body_is_sent_in_slices_not_one_copy(tmp_path: Path) -> None:
    """A slow reader then holds one slice beyond the transport's buffer, not the file."""
    body = os.urandom(5 * server_app.SEND_CHUNK_BYTES + 7)
    _write(tmp_path / "big.html", body)
    parts = [
        m
        for m in _raw_messages(create_app(tmp_path), b"/big.html")
        if m["type"] == "http.response.body"
    ]
    assert len(parts) == 6
    assert all(len(m["body"]) <= server_app.SEND_CHUNK_BYTES for m in parts)
    assert [m["more_body"] for m in parts] == [True] * 5 + [False]
    assert b"".join(bytes(m["body"]) for m in parts) == body


def test_concurrent_requests_for_a_new_version_load_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing and gzip of a big file cost seconds: done once however many ask meanwhile."""
    _write(tmp_path / "rss.xml", RSS)
    loads: list[str] = []
    load = server_files._load_version

    def counting(path: Path, name: str) -> server_files.FileVersion | None:
        loads.append(name)
        return load(path, name)

    monkeypatch.setattr(server_files, "_load_version", counting)
    files = PublishedFiles(tmp_path)

    async def twenty() -> list[server_files.FileVersion | None]:
        return await asyncio.gather(*(files.get("rss.xml") for _ in range(20)))

    versions = asyncio.run(twenty())
    assert loads == ["rss.xml"]
    assert all(v is not None and v.body == RSS for v in versions)
    _write(tmp_path / "rss.xml", RSS + b"<!-- new -->", mtime=MTIME + 60)
    asyncio.run(twenty())
    assert loads == ["rss.xml", "rss.xml"]


def test_rate_limited_warnings_pass_one_a_minute_with_a_count() -> None:
    now = [0.0]
    limit = RateLimitedWarnings(60.0, clock=lambda: now[0])

    def passes(msg: str, level: int = logging.WARNING) -> bool:
        record = logging.LogRecord("uvicorn.error", level, __file__, 1, msg, None, None)
        return limit.filter(record) and bool(record.getMessage())

    assert passes("Invalid HTTP request received.")
    assert not any(passes("Invalid HTTP request received.") for _ in range(99))
    assert passes("Exceeded concurrency limit.")  # each kind has its own allowance
    assert passes("Exception in ASGI application", logging.ERROR)  # errors are not limited
    now[0] = 61.0
    record = logging.LogRecord(
        "uvicorn.error", logging.WARNING, __file__, 1, "Invalid HTTP request received.", None, None
    )
    assert limit.filter(record)
    assert record.getMessage() == "Invalid HTTP request received. (99 more like it not logged)"


def test_the_cache_of_served_files_is_bounded(tmp_path: Path) -> None:
    """Archives are thousands of files: serving them all keeps only the most recently
    served within the byte budget, and a file dropped from the cache is read again."""
    bodies = {f"archive/2025/07/{n:02d}.atom": bytes([65 + n]) * 1000 for n in range(10)}
    for name, body in bodies.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body)
    files = PublishedFiles(tmp_path, cache_bytes=3500)  # bodies of 1000 B and their gzip

    async def serve_all() -> None:
        for name, body in bodies.items():
            version = await files.get(name)
            assert version is not None and version.body == body
            assert version.media_type == "application/atom+xml; charset=utf-8"
        assert sum(v.size for v in files._cache.values()) <= 3500
        assert list(files._cache)[-1] == "archive/2025/07/09.atom"
        first = await files.get("archive/2025/07/00.atom")
        assert first is not None and first.body == bodies["archive/2025/07/00.atom"]

    asyncio.run(serve_all())


def test_a_file_gone_leaves_the_cache_with_its_bytes(tmp_path: Path) -> None:
    """An archive day removed (retention), a channel removed: its cached version is dropped,
    and the cache's byte count with it, so the budget keeps holding what is served."""
    gone, kept = tmp_path / "archive/2025/07/01.atom", tmp_path / "atom.xml"
    gone.parent.mkdir(parents=True)
    gone.write_bytes(b"A" * 1000)
    kept.write_bytes(b"B" * 1000)
    files = PublishedFiles(tmp_path)

    async def serve() -> None:
        assert await files.get("archive/2025/07/01.atom") is not None
        both = files.cached_bytes
        assert await files.get("atom.xml") is not None
        gone.unlink()
        assert await files.get("archive/2025/07/01.atom") is None
        shutil.rmtree(tmp_path / "archive")
        assert await files.get("archive/2025/07/01.atom") is None  # no such path at all now
        assert files.cached_bytes == both == sum(v.size for v in files._cache.values())

    asyncio.run(serve())

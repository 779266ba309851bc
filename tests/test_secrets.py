"""No secret leaves the machine: a source URL's password and token are used only to fetch.

A real server on 127.0.0.1 that refuses any request without the user's password (Basic auth)
and the token (a query parameter); sources that work, move (301) and fail (HTTP 500, and a
refused connection). The real daemon (`aggregator run`), `aggregator once`, `status` and
`status --json` run over them; then neither string may appear in any file under output/,
in any log line (the daemon's at info level, `once` at debug: more than the default), in
`/metrics`, or in what `status` prints.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from aggregator.cli import _setup_logging
from tests.conftest import run_cli
from tests.feedfactory import Item, atom, rss2
from tests.feedserver import FeedServer
from tests.published import published_bytes
from tests.test_daemon import Daemon, _free_port, wait_for
from tests.test_fetch import send

PASSWORD = "pw-Hunter2-5f3a"
TOKEN = "tok-9c1e-53cr3t"  # lower case: a derived name would keep it as it is
USER = "reader"
NOW = datetime.now(UTC).replace(microsecond=0)


GRANTED: list[str] = []  # the paths answered 200: the fetch really carried the secrets


def _guarded(body: bytes, content_type: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """A handler that answers 401 unless the request carries the user's password (the token
    is in the path it is registered under: any other query answers 404)."""
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def handle(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") != expected:
            send(handler, 401, b"who are you?", (("WWW-Authenticate", 'Basic realm="x"'),))
            return
        GRANTED.append(handler.path)
        send(handler, 200, body, (("Content-Type", content_type),))

    return handle


def _secret_url(server: FeedServer, path: str, port: int | None = None) -> str:
    return f"http://{USER}:{PASSWORD}@127.0.0.1:{port or server.port}{path}"


@pytest.fixture
def setup(tmp_path: Path, feed_server: FeedServer) -> Iterator[tuple[Path, int, FeedServer]]:
    private = _secret_url(feed_server, f"/private.xml?token={TOKEN}&page=1")
    # The channel's <link> and one item's link are relative: resolved against the fetched
    # URL they would carry its user info. Another item links to the feed URL itself.
    items = [
        Item("Private one", "/articles/1", "p1", NOW - timedelta(minutes=1), '<a href="x">x</a>'),
        Item("Private two", private, "p2", NOW - timedelta(minutes=2)),
    ]
    feed_server.handlers[f"/private.xml?token={TOKEN}&page=1"] = _guarded(
        rss2("Private feed", "/", items), "application/rss+xml"
    )
    # A permanent redirect to where the feed lives now, token and all; its Atom id is that
    # URL (a publisher's own feed id, here with the token in it).
    new_path = f"/new.atom?token={TOKEN}"
    feed_server.handlers[f"/old.atom?token={TOKEN}"] = lambda h: send(
        h, 301, b"", (("Location", new_path),)
    )
    feed_server.handlers[new_path] = _guarded(
        atom(
            "Moved feed",
            "/",
            feed_server.url(new_path),
            [Item("Moved one", "https://moved.example.org/1", "m1", NOW - timedelta(minutes=3))],
        ),
        "application/atom+xml",
    )
    feed_server.handlers[f"/broken.xml?auth_token={TOKEN}"] = lambda h: send(h, 500, b"oops", ())
    feed_server.add("/plain.xml", rss2("Plain", "https://plain.example.org/", []))
    # Old servers' separators: ";" between query parameters, a `;jsessionid=` path parameter.
    semicolons = f"/semi.xml?auth=X;tok=x&a=1;token={TOKEN}"
    feed_server.handlers[semicolons] = _guarded(
        rss2("Semi", "/", [Item("Semi one", "/s/1", "s1", NOW - timedelta(minutes=4))]),
        "application/rss+xml",
    )
    feed_server.handlers[f"/jsess.xml;jsessionid={TOKEN}"] = _guarded(
        rss2("Jsess", "/", [Item("Jsess one", "/j/1", "j1", NOW - timedelta(minutes=5))]),
        "application/rss+xml",
    )
    # A temporary redirect, followed at every poll, to a relative Location with a token: at
    # debug level the HTTP library logs that header, no "://" in it.
    hop_target = f"/hop-target.xml?access_token={TOKEN}"
    feed_server.handlers["/hop.xml"] = lambda h: send(h, 302, b"", (("Location", hop_target),))
    feed_server.handlers[hop_target] = _guarded(
        rss2("Hop", "/", [Item("Hop one", "/h/1", "h1", NOW - timedelta(minutes=6))]),
        "application/rss+xml",
    )
    port = _free_port()
    nobody = _free_port()  # nothing listens there: connection refused
    sources = [
        private,
        _secret_url(feed_server, f"/old.atom?token={TOKEN}"),
        _secret_url(feed_server, f"/broken.xml?auth_token={TOKEN}"),
        _secret_url(feed_server, f"/refused.xml?api_key={TOKEN}", port=nobody),
        _secret_url(feed_server, semicolons),
        _secret_url(feed_server, f"/jsess.xml;jsessionid={TOKEN}"),
        _secret_url(feed_server, "/hop.xml"),
    ]
    lines = [
        "[aggregator]",
        'title = "Secrets"',
        f'base_url = "http://127.0.0.1:{port}/"',
        "[poll]",
        'interval = "1h"',
        'timeout = "10s"',
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
    ]
    for url in sources:  # no names: each is derived from its URL, and shown in /metrics
        lines += ["[[feeds]]", f'url = "{url}"']
    config = tmp_path / "feeds.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    GRANTED.clear()
    yield config, port, feed_server


def _status(config: Path) -> dict[str, dict[str, object]]:
    result = run_cli("status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def _assert_clean(where: str, text: str | bytes) -> None:
    data = (text.encode() if isinstance(text, str) else text).lower()
    for secret in (PASSWORD, TOKEN):
        assert secret.lower().encode() not in data, f"{secret!r} leaked into {where}"


@pytest.mark.slow
def test_no_secret_in_outputs_logs_metrics_or_status(
    setup: tuple[Path, int, FeedServer],
) -> None:
    config, port, server = setup
    daemon = Daemon(config, port)
    daemon.start()
    try:
        # The daemon: polls everything at start, publishes the two feeds that work.
        def polled() -> bool:
            outcomes = {name: row["outcome"] for name, row in _status(config).items()}
            return (
                list(outcomes.values()).count("failed") == 2
                and list(outcomes.values()).count("updated") == 5
            )

        wait_for(polled, 30, "every source polled once")
        wait_for(lambda: b"Moved one" in daemon.get("/atom.xml").content, 20, "the publish")
        metrics = daemon.get("/metrics").text
        healthz = daemon.get("/healthz").text
        served = {
            name: daemon.get(f"/{name}").content
            for name in ("atom.xml", "rss.xml", "feed.json", "index.html", "sources.opml")
        }
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    # The fetches really used the secrets (the server refuses any request without them).
    assert f"/private.xml?token={TOKEN}&page=1" in GRANTED, GRANTED
    assert f"/new.atom?token={TOKEN}" in GRANTED, GRANTED
    assert f"/jsess.xml;jsessionid={TOKEN}" in GRANTED, GRANTED
    assert f"/hop-target.xml?access_token={TOKEN}" in GRANTED, GRANTED
    once = run_cli("--log-level", "debug", "once", "--force", "--config", str(config))
    status_table = run_cli("status", "--config", str(config))
    status_json = run_cli("status", "--json", "--config", str(config))
    check = run_cli("check", "--config", str(config))

    # What was published is real: the private items, credited to a secret-free source URL.
    atom_xml = served["atom.xml"].decode()
    assert "Private one" in atom_xml and "Moved one" in atom_xml
    public_private = f"http://127.0.0.1:{server.port}/private.xml?page=1"
    assert public_private in served["sources.opml"].decode()
    assert f"127.0.0.1:{server.port}/semi.xml?tok=x&amp;a=1" in served["sources.opml"].decode()
    assert f'127.0.0.1:{server.port}/jsess.xml"' in served["sources.opml"].decode()
    assert "Semi one" in atom_xml and "Jsess one" in atom_xml and "Hop one" in atom_xml
    assert f"http://127.0.0.1:{server.port}/articles/1" in atom_xml
    assert 'aggregator_source_last_success_timestamp_seconds{source="127-0-0-1-private' in metrics
    # What was hidden from the operator is marked, so they know something was.
    rows = json.loads(status_json.stdout)
    masked = f"http://***@127.0.0.1:{server.port}/private.xml?token=***&page=1"
    assert masked in [row["url"] for row in rows], rows
    semi = f"http://***@127.0.0.1:{server.port}/semi.xml?auth=***;tok=x&a=1;token=***"
    assert semi in [row["url"] for row in rows], rows
    # httpcore logged the 302's headers at debug level, the relative Location and its token
    # redacted; aiohttp, under httpx since issue 17, logs no headers. If one is logged, it
    # is redacted (tests/test_urls.py); no token in any log, checked below.
    debug_log = once.stderr + once.stdout
    assert "hop-target" not in debug_log or "hop-target.xml?access_token=***" in debug_log
    moved = [row for row in rows if row["moved_to"]]
    assert moved and "token=***" in moved[0]["moved_to"], rows
    errors = " | ".join(str(row["error"]) for row in rows)
    assert "HTTP 500" in errors and "refused" in errors, errors

    for name, body in served.items():
        _assert_clean(f"served {name}", body)
    output = config.parent / "output"
    files = published_bytes(output)  # dotfiles and gzipped siblings included
    assert len(files) >= 5, files
    for name, data in files.items():
        _assert_clean(name, data)
    daemon_log = daemon.log_text()
    assert "HTTP 500" in daemon_log and "moved permanently" in daemon_log, daemon_log
    _assert_clean("the daemon's log", daemon_log)
    _assert_clean("/metrics", metrics)
    _assert_clean("/healthz", healthz)
    for what, result in (
        ("once", once),
        ("status", status_table),
        ("status --json", status_json),
        ("check", check),
    ):
        assert result.returncode in (0, 1), (what, result.stderr)
        _assert_clean(f"`{what}` output", result.stdout + result.stderr)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_log_line_is_redacted(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The net under every logger, a traceback's text included: whatever a library or a
    future log call puts in a line, a URL's secrets are masked (the daemon's own lines
    already redact what they know is a URL)."""
    url = f"http://{USER}:{PASSWORD}@127.0.0.1/feed?token={TOKEN}"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        _setup_logging("debug", log_format)
        logging.getLogger("some.library").debug("GET %s", url)
        try:
            raise ValueError(f"for url '{url}'")
        except ValueError:
            logging.getLogger("aggregator").exception("poll failed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "GET http://***@127.0.0.1/feed?token=***" in err
    assert "ValueError" in err
    _assert_clean("the log", err)

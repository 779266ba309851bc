"""The real daemon (`aggregator run`) as a subprocess against a local feed server.

Shows: media types, 304s, gzip, /healthz, /metrics, live reload (add, remove, broken edit),
SIGTERM within 10 s, SIGKILL mid-cycle losing nothing and never exposing a partial file,
and per-source intervals honoured with no concurrent polls of one source.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import feedparser
import httpx
import pytest
from lxml import etree

from tests.conftest import ROOT
from tests.feedfactory import Item, atom, rss2
from tests.feedserver import FeedServer

NOW = datetime.now(UTC).replace(microsecond=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _items(prefix: str, count: int) -> list[Item]:
    return [
        Item(
            f"{prefix} ख़बर {i}",
            f"https://{prefix}.example.org/{i}",
            f"tag:{prefix}.example.org,2025:{i}",
            NOW - timedelta(minutes=5 * i + 1),
            f"<p>{prefix} सारांश {i}</p>",
        )
        for i in range(count)
    ]


class Daemon:
    """`python -m aggregator run` in a subprocess, with its log captured."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log = config.parent / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "aggregator", "--log-level", "info"),
                    *("run", "--config", str(self.config)),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for(lambda: self.get("/healthz").status_code == 200, 30, "daemon to become healthy")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.url(path), headers=headers, timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=15)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def _write_config(
    path: Path, port: int, feeds: list[tuple[str, str]], interval: str = "1h"
) -> None:
    lines = [
        "[aggregator]",
        'title = "Daemon test"',
        f'base_url = "http://127.0.0.1:{port}/"',
        "[poll]",
        f'interval = "{interval}"',
        'timeout = "10s"',
        # Parse budgets are tests/test_parse_budget.py's; a crowded machine (tests in
        # parallel) must not fail a 20,000-item feed's parse here for want of CPU.
        'parse_timeout = "120s"',
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
    ]
    for name, url in feeds:
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    # Write-and-rename, as editors do, so the daemon never reads half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def _atom_links(daemon: Daemon) -> list[str]:
    parsed = feedparser.parse(io.BytesIO(daemon.get("/atom.xml").content))
    return [e.link for e in parsed.entries]


@contextmanager
def _running_daemon(directory: Path, feed_server: FeedServer) -> Iterator[Daemon]:
    """A daemon polling two sources ("a", RSS, and "b", Atom; 3 items each), once published."""
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 3)))
    feed_server.add(
        "/b.atom",
        atom(
            "B",
            "https://b.example.org/",
            "urn:uuid:6f1d3c1e-6c55-4a8e-9d0b-2f4f7f6a9a11",
            _items("b", 3),
        ),
    )
    port = _free_port()
    config = directory / "feeds.toml"
    _write_config(
        config, port, [("a", feed_server.url("/a.xml")), ("b", feed_server.url("/b.atom"))]
    )
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(_atom_links(daemon)) == 6, 20, "the first publish")
        yield daemon
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def running(tmp_path: Path, feed_server: FeedServer) -> Iterator[tuple[Daemon, FeedServer, Path]]:
    """A daemon of the test's own, to edit, signal or stop."""
    with _running_daemon(tmp_path, feed_server) as daemon:
        yield daemon, feed_server, daemon.config


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon shared by the tests that only read from it (a start-up costs ~2 s); they
    change nothing it serves or counts: no config edit, no signal, no poll (interval 1 h)."""
    server = FeedServer().start()
    try:
        with _running_daemon(tmp_path_factory.mktemp("watched"), server) as daemon:
            yield daemon
    finally:
        server.stop()


def test_serves_feeds_for_readers(watched: Daemon) -> None:
    daemon = watched
    rss = daemon.get("/rss.xml", **{"Accept-Encoding": "identity"})
    assert rss.status_code == 200
    assert "content-encoding" not in rss.headers
    assert rss.headers["content-type"] == "application/rss+xml; charset=utf-8"
    atom_response = daemon.get("/atom.xml")
    assert atom_response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    etag = atom_response.headers["etag"]
    assert daemon.get("/atom.xml", **{"If-None-Match": etag}).status_code == 304
    last_modified = atom_response.headers["last-modified"]
    assert daemon.get("/atom.xml", **{"If-Modified-Since": last_modified}).status_code == 304
    # An unchanged feed keeps its ETag.
    assert daemon.get("/atom.xml").headers["etag"] == etag
    # gzip when asked, and the bytes are the same document.
    raw = httpx.get(daemon.url("/atom.xml"), headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == atom_response.content  # httpx decoded it
    head = httpx.head(daemon.url("/rss.xml"), headers={"Accept-Encoding": "identity"}, timeout=5)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(rss.content)
    # Nothing outside output/ is reachable.
    for probe in (
        "/../feeds.toml",
        "/..%2ffeeds.toml",
        "/%2e%2e/feeds.toml",
        "/.atom.xml.tmp",
        "/state/aggregator.db",
    ):
        assert daemon.get(probe).status_code == 404, probe


def test_health_and_metrics(watched: Daemon) -> None:
    daemon = watched
    health = daemon.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    metrics = daemon.get("/metrics").text
    assert 'aggregator_polls_total{outcome="updated"} 2.0' in metrics
    assert "aggregator_items_stored_total 6.0" in metrics
    # One publish at start, then one for both sources' new items (debounced), not one each.
    assert "aggregator_publishes_total 2.0" in metrics
    assert "aggregator_publish_duration_seconds_count" in metrics
    assert 'aggregator_source_last_success_timestamp_seconds{source="a"}' in metrics


def test_live_reload_add_remove_and_broken_edit(running: tuple[Daemon, FeedServer, Path]) -> None:
    daemon, server, config = running
    port = daemon.port
    server.add("/c.xml", rss2("C", "https://c.example.org/", _items("c", 2)))
    feeds = [("a", server.url("/a.xml")), ("b", server.url("/b.atom")), ("c", server.url("/c.xml"))]
    _write_config(config, port, feeds)
    wait_for(lambda: "https://c.example.org/0" in _atom_links(daemon), 30, "the added source")

    _write_config(config, port, feeds[1:])  # remove "a"
    wait_for(
        lambda: not any("a.example.org" in link for link in _atom_links(daemon)),
        30,
        "the removed source to leave the feed",
    )
    before = daemon.get("/atom.xml").content

    config.write_text(config.read_text() + '\n[poll]\ninterval = "often"\n', encoding="utf-8")
    wait_for(
        lambda: "configuration not reloaded" in daemon.log_text(),
        30,
        "the broken edit to be reported",
    )
    assert "feeds.toml" in daemon.log_text() and "Traceback" not in daemon.log_text()
    assert daemon.process is not None and daemon.process.poll() is None
    assert daemon.get("/atom.xml").content == before  # still serving the last good feeds
    assert daemon.get("/healthz").status_code == 200

    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert "stopped" in daemon.log_text()


def test_sighup_reloads(running: tuple[Daemon, FeedServer, Path]) -> None:
    daemon, server, config = running
    server.add("/d.xml", rss2("D", "https://d.example.org/", _items("d", 1)))
    text = config.read_text() + f'[[feeds]]\nname = "d"\nurl = "{server.url("/d.xml")}"\n'
    config.write_text(text, encoding="utf-8")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "https://d.example.org/0" in _atom_links(daemon), 30, "SIGHUP reload")
    assert daemon.stop(signal.SIGINT) == 0


def test_sigkill_mid_cycle_loses_nothing_and_never_shows_a_partial_file(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    names = [f"s{n}" for n in range(24)]
    release = threading.Event()

    def slow(body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
        def handler(request: BaseHTTPRequestHandler) -> None:
            release.wait(0.4)
            request.send_response(200)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)

        return handler

    for n, name in enumerate(names):
        body = rss2(name, f"https://{name}.example.org/", _items(name, 5))
        if n < 4:
            feed_server.add(f"/{name}.xml", body)  # fast: stored before the kill
        else:
            feed_server.handlers[f"/{name}.xml"] = slow(body)
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write_config(config, port, [(n, feed_server.url(f"/{n}.xml")) for n in names])
    output = tmp_path / "output"
    database = tmp_path / "state" / "aggregator.db"

    partial: list[str] = []
    reading = threading.Event()
    reading.set()

    def reader() -> None:
        while reading.is_set():
            for name in ("rss.xml", "atom.xml"):
                try:
                    data = (output / name).read_bytes()
                except FileNotFoundError:
                    continue
                try:
                    etree.fromstring(data)
                except etree.XMLSyntaxError as e:
                    partial.append(f"{name}: {e}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    daemon = Daemon(config, port).start()
    try:

        def stored() -> int:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])

        wait_for(lambda: stored() >= 20, 30, "the fast sources to be stored")
        assert daemon.process is not None
        daemon.process.kill()  # SIGKILL, mid-cycle: the slow sources are still in flight
        daemon.process.wait()
        before = stored()
        assert before < len(names) * 5

        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        release.set()
        daemon = Daemon(config, port).start()
        wait_for(lambda: stored() == len(names) * 5, 60, "every source after the restart")
        wait_for(lambda: len(_atom_links(daemon)) == len(names) * 5, 30, "the full publish")
        for path in ("/atom.xml", "/rss.xml"):
            parsed = feedparser.parse(io.BytesIO(daemon.get(path).content))
            ids = [e.id for e in parsed.entries]
            assert len(ids) == len(set(ids)) == len(names) * 5
        assert stored() >= before
        assert daemon.stop() == 0
    finally:
        reading.clear()
        thread.join()
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
    assert partial == []


def test_interval_is_honoured_and_a_slow_source_is_never_polled_twice_at_once(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    body = rss2("S", "https://s.example.org/", _items("s", 2))
    lock = threading.Lock()
    active = [0]
    peak = [0]
    starts: dict[str, list[float]] = {"/fast.xml": [], "/slow.xml": []}

    def handler_for(path: str, delay: float) -> Callable[[BaseHTTPRequestHandler], None]:
        def handler(request: BaseHTTPRequestHandler) -> None:
            with lock:
                starts[path].append(time.monotonic())
                if path == "/slow.xml":
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
            time.sleep(delay)
            request.send_response(200)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            if path == "/slow.xml":
                with lock:
                    active[0] -= 1

        return handler

    feed_server.handlers["/fast.xml"] = handler_for("/fast.xml", 0.0)
    feed_server.handlers["/slow.xml"] = handler_for("/slow.xml", 3.0)  # slower than its interval
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write_config(
        config,
        port,
        [("fast", feed_server.url("/fast.xml")), ("slow", feed_server.url("/slow.xml"))],
        interval="2s",
    )
    daemon = Daemon(config, port).start()
    try:
        time.sleep(9)
    finally:
        assert daemon.stop() == 0
    fast = starts["/fast.xml"]
    gaps = [b - a for a, b in itertools.pairwise(fast)]
    assert len(fast) >= 3
    # 2 s interval, at most 10% jitter early; never sooner.
    assert min(gaps) >= 2 * 0.9 - 0.05, gaps
    assert peak[0] == 1
    assert len(starts["/slow.xml"]) >= 2


def test_status_while_running(watched: Daemon) -> None:
    config = watched.config
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "status", "--config", str(config), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["items"] == 3 and rows["a"]["outcome"] == "updated"
    assert rows["a"]["failures"] == 0 and rows["a"]["next_poll"] is not None
    table = subprocess.run(
        [sys.executable, "-m", "aggregator", "status", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0 and "updated" in table.stdout


def test_gzip_body_matches(watched: Daemon) -> None:
    daemon = watched
    with (
        httpx.Client(headers={"Accept-Encoding": "gzip"}) as client,
        client.stream("GET", daemon.url("/rss.xml")) as response,
    ):
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw) == daemon.get("/rss.xml").content


def test_restart_resumes_the_stored_schedule(running: tuple[Daemon, FeedServer, Path]) -> None:
    """Stopped and started again, the daemon does not re-poll sources that are not due."""
    daemon, server, config = running
    assert daemon.stop() == 0
    server.clear()
    restarted = Daemon(config, daemon.port).start()
    try:
        time.sleep(3)
        assert server.seen() == []  # interval 1 h: nothing is due yet
        assert len(_atom_links(restarted)) == 6
    finally:
        assert restarted.stop() == 0

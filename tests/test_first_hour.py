"""The operator's first hour, with the real CLI: `run` and `serve` say where they serve
(and `--host`/`--port` choose it), the daemon's periodic summary, a reverted bad edit
logged as fixed, `once` on a terminal (a whole progress bar, each failure once), the
`source` field of JSON logs, `make once FORCE=1`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.test_daemon import NOW, _free_port, wait_for


def _feed(prefix: str, count: int) -> bytes:
    items = [
        Item(f"{prefix} {i}", f"https://{prefix}.example.org/{i}", f"{prefix}-{i}", NOW, "<p>x</p>")
        for i in range(count)
    ]
    return rss2(prefix, f"https://{prefix}.example.org/", items)


def _config(path: Path, feeds: dict[str, str], *server_lines: str) -> Path:
    lines = ["[poll]", 'interval = "1h"', "[server]", *server_lines]
    for name, url in feeds.items():
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def _daemon(config: Path, *args: str, log_level: str | None = None) -> Iterator[Path]:
    """`aggregator [--log-level L] run --config CONFIG ARGS` in a subprocess; yields its log."""
    log = config.parent / "daemon.log"
    level = ("--log-level", log_level) if log_level else ()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *level, "run", "--config", str(config), *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        yield log
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _text(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


def test_run_says_where_it_serves_and_port_overrides_server(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    url = feed_server.add("/a.xml", _feed("a", 2))
    file_port, port = _free_port(), _free_port()
    config = _config(tmp_path / "feeds.toml", {"a": url}, f"port = {file_port}")
    with _daemon(config, "--port", str(port)) as log:  # the default log level
        started = time.monotonic()
        wait_for(lambda: f"http://127.0.0.1:{port}/" in _text(log), 5, "the start line")
        assert time.monotonic() - started < 5
        line = next(x for x in _text(log).splitlines() if f"http://127.0.0.1:{port}/" in x)
        assert "1 source" in line
        assert str(tmp_path / "state" / "aggregator.db") in line
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        wait_for(
            lambda: "a.example.org/1" in httpx.get(f"http://127.0.0.1:{port}/atom.xml").text,
            20,
            "the first publish",
        )
        # The default base_url follows the port the feeds are served on.
        atom = httpx.get(f"http://127.0.0.1:{port}/atom.xml", timeout=5).text
        assert f"http://127.0.0.1:{port}/atom.xml" in atom
        assert str(file_port) not in atom
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{file_port}/healthz", timeout=5)


def test_serve_says_where_it_serves(tmp_path: Path) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "index.html").write_text("<p>hello</p>", encoding="utf-8")
    config = _config(tmp_path / "feeds.toml", {"a": "https://a.example.org/feed.xml"})
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "aggregator", "serve", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        wait_for(lambda: f"http://127.0.0.1:{port}/" in _text(log), 5, "the start line")
        assert "hello" in httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def test_the_daemon_logs_a_summary_every_summary_interval(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    urls = {"a": feed_server.add("/a.xml", _feed("a", 3)), "b": feed_server.url("/missing.xml")}
    port = _free_port()
    config = _config(tmp_path / "feeds.toml", urls, f"port = {port}", 'summary_interval = "1s"')
    pattern = re.compile(
        r"summary: (\d+) polls, (\d+) new items, (\d+) failed; "
        r"next poll due \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ (?:h|min)\)$"
    )

    def totals(log: Path) -> list[int]:
        """Polls, new items and failures over the summaries so far (a summary may fall
        between the two polls)."""
        found = [pattern.search(x) for x in _text(log).splitlines() if "summary:" in x]
        assert all(found), _text(log)
        return [sum(int(m.group(k)) for m in found if m) for k in (1, 2, 3)]

    with _daemon(config, log_level="info") as log:
        wait_for(lambda: totals(log) == [2, 3, 1], 20, "the summary of both polls")
        count = _text(log).count("summary:")
        wait_for(lambda: _text(log).count("summary:") > count, 10, "the next summary")
        assert totals(log) == [2, 3, 1]  # nothing polled since: nothing counted twice


def test_summary_interval_below_a_second_is_refused(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "feeds.toml", {"a": "https://a.example.org/f"}, 'summary_interval = "10ms"'
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert "feeds.toml:4: server.summary_interval: expected a duration of at least 1s" in (
        result.stderr
    )


def test_a_reverted_bad_edit_logs_configuration_ok_again(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    port = _free_port()
    config = _config(
        tmp_path / "feeds.toml", {"a": feed_server.add("/a.xml", _feed("a", 1))}, f"port = {port}"
    )
    good = config.read_text(encoding="utf-8")
    with _daemon(config) as log:  # the default level shows the error: it shows the end too
        healthy = lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200  # noqa: E731
        wait_for(healthy, 30, "the start")
        config.write_text(good + '[poll]\ninterval = "often"\n', encoding="utf-8")
        wait_for(lambda: "configuration not reloaded" in _text(log), 20, "the refusal")
        assert "configuration OK again" not in _text(log)
        config.write_text(good, encoding="utf-8")  # the very content running
        wait_for(lambda: "configuration OK again" in _text(log), 20, "the recovery")
        last = [x for x in _text(log).splitlines() if "configuration" in x][-1]
        assert "configuration OK again" in last


def _on_a_terminal(args: list[str], cwd: Path) -> bytes:
    """Run the CLI with stdout and stderr on a pseudo-terminal 100 columns wide; all it wrote."""
    leader, follower = os.openpty()
    chunks = []
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "PYTHONPATH": str(ROOT)},
        )
        os.close(follower)
        follower = -1
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the last writer closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    return b"".join(chunks)


def test_once_on_a_terminal_reports_each_failure_once_and_keeps_the_bar_whole(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:  # keeps the bar up a while
        time.sleep(1.5)
        body = _feed("slow", 1)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    feed_server.handlers["/slow.xml"] = slow
    feeds = {
        "good": feed_server.add("/good.xml", _feed("good", 2)),
        "slow": feed_server.url("/slow.xml"),
        "refused": "http://127.0.0.1:9/feed.xml",
        "missing": feed_server.url("/missing.xml"),
    }
    _config(tmp_path / "feeds.toml", feeds)
    output = _on_a_terminal(["once", "--config", "feeds.toml"], tmp_path).decode()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert plain.count("connection refused") == 1, plain
    assert plain.count("404") == 1, plain
    assert "published 3 items" in plain
    bar_lines = [x for x in re.split(r"[\r\n]", plain) if "polling" in x]
    assert bar_lines, plain
    for line in bar_lines:  # nothing but the bar on its line
        assert re.fullmatch(r"\s*polling [━╸╺─ ]*\d/4 \d:\d\d:\d\d\s*", line), line


def test_json_logs_have_a_source_field(tmp_path: Path) -> None:
    _config(tmp_path / "feeds.toml", {"down": "http://127.0.0.1:9/feed.xml"})
    result = run_cli("--log-format", "json", "once", "--config", "feeds.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    about = [e for e in events if e["message"].startswith("down: connection refused")]
    assert about and all(e["source"] == "down" for e in about)
    assert all("source" not in e for e in events if not e["message"].startswith("down:"))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_once_force_passes_force() -> None:
    def once(*args: str) -> str:
        result = subprocess.run(
            ["make", "-n", "once", *args],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return next(x for x in result.stdout.splitlines() if " once " in x)

    assert once("FORCE=1").endswith("--force")
    assert "--force" not in once()

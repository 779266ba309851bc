"""The real daemon (`aggregator run`) against feeds that cost CPU: nothing stalls it.

Two feeds with ~1 MB titles shaped to be quadratic for a pattern that restarts at every "<"
(tests/hostile.py), and one that is slow for feedparser itself, beside a good feed: the good
feed is published, /healthz answers throughout, the titles are cut, the slow feed fails with
the budget's reason and backs off; and a stop during a runaway parse ends the process and
its parser processes within 10 s.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aggregator.parse.fields import TITLE_LIMIT
from aggregator.policy import JITTER, delay
from tests import hostile
from tests.conftest import ROOT, run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.test_daemon import NOW, _free_port, wait_for
from tests.test_parse_pool import _session_members

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PARSE_TIMEOUT = 3  # seconds: a 1 MB hostile title parses well within it, the slow feed never
INTERVAL = 4  # seconds: short, so a source polled without backoff would come back often
GOOD = [
    Item(f"Good story {n}", f"https://good.example.org/{n}", f"good-{n}", NOW - timedelta(hours=n))
    for n in range(3)
]


def _config(path: Path, port: int, feeds: dict[str, str], parse_timeout: int) -> Path:
    lines = [
        "[aggregator]",
        f'base_url = "http://127.0.0.1:{port}/"',
        "[poll]",
        f'interval = "{INTERVAL}s"',
        'timeout = "10s"',
        f'parse_timeout = "{parse_timeout}s"',
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
    ]
    for name, url in feeds.items():
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    config = path / "feeds.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _start(config: Path) -> subprocess.Popen[bytes]:
    """`aggregator run` in a session of its own, so its parser processes can be found."""
    with (config.parent / "daemon.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--log-level",
                "info",
                "run",
                "--config",
                str(config),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


def _status(config: Path) -> dict[str, dict[str, object]]:
    result = run_cli("status", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def served() -> Iterator[FeedServer]:
    server = FeedServer().start()
    server.add("/good.xml", rss2("Good", "https://good.example.org/", GOOD))
    server.add("/escaped.xml", hostile.escaped_markup_title())
    server.add("/unclosed.xml", hostile.unclosed_tag_title())
    # Three times the usual slow document: over twice the budget on a fast machine too (a
    # parse submitted while every worker is busy may take twice the budget).
    server.add("/slow.xml", hostile.slow_to_parse(3 * hostile.SLOW_ELEMENTS))
    server.add("/runaway.xml", hostile.slow_to_parse(hostile.RUNAWAY_ELEMENTS))
    try:
        yield server
    finally:
        server.stop()


def _end(process: subprocess.Popen[bytes]) -> None:
    for pid in _session_members(process.pid):
        if pid != process.pid:
            os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait()


def test_hostile_titles_and_a_runaway_parse_stall_nothing(
    tmp_path: Path, served: FeedServer
) -> None:
    port = _free_port()
    feeds = {name: served.url(f"/{name}.xml") for name in ("escaped", "unclosed", "slow", "good")}
    config = _config(tmp_path, port, feeds, PARSE_TIMEOUT)
    process = _start(config)
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_for(lambda: httpx.get(health, timeout=2).status_code == 200, 30, "the daemon")
        started = time.monotonic()
        published = False
        while time.monotonic() - started < 60:
            # /healthz answers, and within 2 s, all along.
            answer = httpx.get(health, timeout=2)
            assert answer.status_code == 200, answer.text
            if not published:
                feed = httpx.get(f"http://127.0.0.1:{port}/feed.json", timeout=2).json()
                published = {i["title"] for i in feed["items"]} >= {g.title for g in GOOD}
            rows = _status(config)
            settled = all(rows[n]["outcome"] for n in ("escaped", "unclosed"))
            if published and settled and rows["slow"]["error"]:
                break
            time.sleep(0.3)
        assert published, "the good feed was not published within 60 s"
        reason = f"parse took longer than {PARSE_TIMEOUT} s"
        assert rows["slow"]["outcome"] == "failed" and rows["slow"]["error"] == reason
        # The hostile titles are cheap now (or, on a crowded machine, cut short by the budget).
        for name, fine in (("escaped", "Escaped fine"), ("unclosed", "Unclosed fine")):
            parsed = rows[name]["items"] == 2  # the hostile item and the fine one
            assert parsed or rows[name]["error"] == reason, rows[name]
            if parsed:
                wait_for(functools.partial(_published, port, fine), 10, f"{name} published")
        titles = _titles(port)
        assert all(len(t) <= TITLE_LIMIT for t in titles)
        assert _status_text(config).count(reason) >= 1  # what an operator reads

        # The slow source backs off: each failure pushes its next poll further than the
        # interval, and it is not fetched more often than that allows.
        time.sleep(2 * INTERVAL)
        row = _status(config)["slow"]
        failures = int(str(row["failures"]))
        assert failures >= 1 and row["error"] == reason
        last, later = (datetime.fromisoformat(str(row[k])) for k in ("last_poll", "next_poll"))
        assert later - last >= delay(timedelta(seconds=INTERVAL), failures)
        # (last_poll is kept to the whole second: a second of slack)
        slack = timedelta(seconds=1)
        assert later - last <= delay(timedelta(seconds=INTERVAL), failures) * (1 + JITTER) + slack
        elapsed = time.monotonic() - started
        assert len(served.seen("/slow.xml")) <= _polls_allowed(elapsed)
        assert len(served.seen("/good.xml")) >= 2  # the daemon did poll again meanwhile
    finally:
        _end(process)


def _published(port: int, title: str) -> bool:
    return title in _titles(port)


def _titles(port: int) -> set[str]:
    feed = httpx.get(f"http://127.0.0.1:{port}/feed.json", timeout=2).json()
    return {str(i["title"]) for i in feed["items"]}


def _status_text(config: Path) -> str:
    result = run_cli("status", "--config", str(config), env={"COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def _polls_allowed(seconds: float) -> int:
    """How many polls of a source that fails each time fit in `seconds`: waits of 2, 4, 8 ×
    the interval (at least; parsing takes the budget on top)."""
    polls, at = 1, 0.0
    while True:
        at += delay(timedelta(seconds=INTERVAL), polls).total_seconds()
        if at > seconds:
            return polls
        polls += 1


def test_a_stop_during_a_runaway_parse_ends_everything_within_10_s(
    tmp_path: Path, served: FeedServer
) -> None:
    port = _free_port()
    config = _config(tmp_path, port, {"slow": served.url("/runaway.xml")}, parse_timeout=120)
    process = _start(config)
    try:
        wait_for(lambda: bool(served.seen("/runaway.xml")), 30, "the slow feed to be fetched")
        # The daemon, the fork server and a worker: the parse is under way.
        wait_for(lambda: len(_session_members(process.pid)) >= 3, 30, "parser processes")
        time.sleep(1.0)
        parsers = [pid for pid in _session_members(process.pid) if pid != process.pid]
        assert parsers
        assert _status(config)["slow"]["outcome"] is None  # still parsing: nothing recorded
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 10
        wait_for(lambda: not set(parsers) & set(_session_members(process.pid)), 2, "no parsers")
        assert "stopped" in (tmp_path / "daemon.log").read_text(encoding="utf-8")
    finally:
        _end(process)

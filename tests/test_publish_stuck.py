"""The daemon against a feed of 20,000 copies of one story, and with a publish that never
ends: it stays healthy and publishes the other feeds' items, and a stop never waits for
a publish longer than its grace."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.config import load_config
from aggregator.daemon import Daemon as InProcessDaemon
from aggregator.daemon import DaemonOptions, publishing
from aggregator.publish import PublishReport, publish_timeline
from tests.conftest import ROOT
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _atom_links, _free_port, _write_config, wait_for
from tests.test_publish_cost import _good, _same_story


def test_a_feed_of_one_story_twenty_thousand_times_stalls_nothing(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/h.xml", rss2("H", "https://h.example/", _same_story(20_000)))
    feed_server.add("/g.xml", rss2("G", "https://g.example/", _good(3)))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write_config(config, port, [("h", feed_server.url("/h.xml"))])
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(_atom_links(daemon)) == 1, 60, "the hostile story published")
        # A good feed added now: its items are published while /healthz answers, and says
        # 200, within 2 s every time it is asked.
        _write_config(
            config, port, [("h", feed_server.url("/h.xml")), ("g", feed_server.url("/g.xml"))]
        )
        deadline = time.monotonic() + 30
        while len(_atom_links(daemon)) < 4:
            assert time.monotonic() < deadline, "the good feed's items were not published"
            assert httpx.get(daemon.url("/healthz"), timeout=2).status_code == 200
            time.sleep(0.2)
        assert sum("g.example" in link for link in _atom_links(daemon)) == 3
        assert daemon.stop() == 0
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


# `aggregator run` whose publishes, after the first, never end (a test hook: the real CLI,
# with publish_timeline replaced before it starts).
_STUCK_RUN = """
import sys, threading, pathlib
import aggregator.daemon.publishing as daemon

def stuck(*args, real=daemon.publish_timeline, calls=[]):
    calls.append(1)
    if len(calls) > 1:
        MARKER.touch()
        threading.Event().wait()
    return real(*args)

if __name__ == "__main__":  # not in the parser processes, which import __main__ again
    MARKER = pathlib.Path(sys.argv[1])
    daemon.publish_timeline = stuck
    sys.argv = ["aggregator", "--log-level", "info", "run", "--config", sys.argv[2]]
    from aggregator.cli import main
    main()
"""


def test_sigterm_with_a_publish_stuck_exits_within_ten_seconds(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/g.xml", rss2("G", "https://g.example/", _good(3)))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write_config(config, port, [("g", feed_server.url("/g.xml"))])
    marker = tmp_path / "stuck"
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", _STUCK_RUN, str(marker), str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(marker.exists, 30, "a publish to get stuck")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        text = log.read_text(encoding="utf-8")
        assert "a publish is still running after 5 s; stopping without it" in text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_healthz_reports_a_publish_running_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "g.xml").write_bytes(rss2("G", "https://g.example/", _good(3)))
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nname = "g"\nurl = "g.xml"\n', encoding="utf-8")
    release = threading.Event()
    calls: list[int] = []

    def stuck(*args: Any) -> PublishReport:
        calls.append(1)
        if len(calls) > 1:
            release.wait(30)
        return publish_timeline(*args)

    monkeypatch.setattr(publishing, "publish_timeline", stuck)
    monkeypatch.setattr(publishing, "PUBLISH_STUCK_SECONDS", 0.5)
    options = DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=0.1, serve=False)
    daemon = InProcessDaemon(config, load_config(config), options=options)
    problems: list[str | None] = []

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        for _ in range(200):  # until the publish after the poll has been stuck a while
            await asyncio.sleep(0.1)
            problem = await daemon.health()
            if problem == "the scheduler is not running":
                continue  # not started yet: a crowded machine (parallel tests) is slow to
            problems.append(problem)
            if problem is not None:
                break
        release.set()
        await asyncio.sleep(0.5)
        problems.append(await daemon.health())
        daemon.stop()
        await asyncio.wait_for(running, 10)

    asyncio.run(scenario())
    assert problems[-2] is not None and problems[-2].startswith("a publish has been running for")
    assert problems[-1] is None  # over once the publish ended

"""Issue 15's end-to-end line: two daemons, one the hub of its own feed, the other its
subscriber, both real `aggregator run` processes on loopback.

A polls a local feed and is the WebSub hub for its `atom.xml`; B has A's `atom.xml` as a
source polled every 6 hours. B discovers A's hub in the feed, subscribes, A verifies B's
intent; then a new item at the local feed reaches B's `atom.xml` within 5 s of A's publish,
with no poll of A by B in between.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest

from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _free_port, wait_for
from tests.test_websub_subscriber import _config as subscriber_config

pytestmark = pytest.mark.slow
NOW = datetime.now(UTC).replace(microsecond=0)
SITE = "https://local.example.org/"


def _items(count: int) -> list[Item]:
    return [
        Item(
            f"स्थानीय ख़बर {n}",
            f"{SITE}{n}",
            f"local-{n}",
            NOW - timedelta(minutes=60 - n),
            f"<p>सारांश {n}</p>",
        )
        for n in range(count)
    ]


def _config(directory: Path, port: int, source: str, *, interval: str, websub: str) -> Path:
    directory.mkdir()
    return subscriber_config(directory, port, source, interval=interval, websub=websub)


def _links(daemon: Daemon) -> list[str]:
    return [e.link for e in feedparser.parse(io.BytesIO(daemon.get("/atom.xml").content)).entries]


def _subscription(directory: Path) -> dict[str, object]:
    with sqlite3.connect(directory / "state" / "aggregator.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM websub_subscriptions").fetchone()
    return dict(row) if row is not None else {}


def _last_poll(config: Path) -> str:
    shown = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    return str(shown[0]["last_poll"])


def test_a_new_item_reaches_the_subscriber_daemon_within_seconds_without_a_poll(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/local.xml", rss2("Local", SITE, _items(2)))
    port_a, port_b = _free_port(), _free_port()
    config_a = _config(
        tmp_path / "a",
        port_a,
        feed_server.url("/local.xml"),
        interval="2s",
        websub="allow_private_callbacks = true  # B's callback is on loopback",
    )
    config_b = _config(
        tmp_path / "b",
        port_b,
        f"http://127.0.0.1:{port_a}/atom.xml",
        interval="6h",
        websub='poll_interval = "6h"',
    )
    a = Daemon(config_a, port_a).start()
    try:
        wait_for(lambda: len(_links(a)) == 2, 15, "A's first items")
        assert f"http://127.0.0.1:{port_a}/websub" in a.get("/atom.xml").text
        b = Daemon(config_b, port_b).start()
        try:
            wait_for(lambda: len(_links(b)) == 2, 15, "B's first poll of A")
            wait_for(
                lambda: _subscription(tmp_path / "b").get("state") == "active",
                15,
                "A to verify B's subscription",
            )
            assert _subscription(tmp_path / "b")["hub"] == f"http://127.0.0.1:{port_a}/websub"
            polled = _last_poll(config_b)

            feed_server.add("/local.xml", rss2("Local", SITE, _items(3)))
            wait_for(lambda: len(_links(a)) == 3, 15, "A to poll and publish the new item")
            published = time.monotonic()
            wait_for(lambda: len(_links(b)) == 3, 5, "the new item in B's atom.xml")
            assert time.monotonic() - published < 5
            assert f"{SITE}2" in _links(b)
            assert _last_poll(config_b) == polled  # pushed, not polled
        finally:
            b.stop()
    finally:
        a.stop()

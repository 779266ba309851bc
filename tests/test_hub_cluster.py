"""Two daemons sharing one PostgreSQL database, one public address, one hub: a subscriber
gets each change once, whichever daemon polled and published it (the other only copies the
files), and a subscription made through one daemon is the other's too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aggregator.store import open_store
from tests.hubcallback import CallbackServer
from tests.test_daemon import Daemon, _free_port, wait_for
from tests.test_hub import _write_feed

pytestmark = pytest.mark.slow


def _config(directory: Path, port: int, base_url: str, feed: Path, store_url: str) -> Path:
    directory.mkdir()
    config = directory / "feeds.toml"
    lines = [
        "[aggregator]",
        f'base_url = "{base_url}"',
        "[publish]",
        'max_age = "3650d"',
        "[store]",
        f'url = "{store_url}"',
        "[server]",
        f"port = {port}",
        "[websub]",
        "allow_private_callbacks = true",
        'delivery_timeout = "2s"',
        "[[feeds]]",
        'name = "a"',
        f'url = "{feed}"',
        'interval = "1s"',
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_each_change_is_delivered_once_by_one_daemon(
    tmp_path: Path, pg_url: str, callback: CallbackServer
) -> None:
    _write_feed(tmp_path, 3)
    feed = tmp_path / "a.xml"
    ports = [_free_port(), _free_port()]
    base_url = f"http://127.0.0.1:{ports[0]}/"  # the one public address both serve
    daemons = [
        Daemon(_config(tmp_path / name, port, base_url, feed, pg_url), port)
        for name, port in zip(("a", "b"), ports, strict=True)
    ]
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            wait_for(lambda d=daemon: "https://a.example.org/2" in d.get("/atom.xml").text, 20,  # type: ignore[misc]
                     "the first items published")  # fmt: skip
        form = {
            "hub.mode": "subscribe",
            "hub.topic": base_url + "atom.xml",
            "hub.callback": callback.url("/cb"),
            "hub.secret": "s3cret",
        }
        callback.secrets["/cb"] = "s3cret"
        # Through the second daemon: the subscription is in the shared store.
        answer = httpx.post(daemons[1].url("/websub"), data=form, timeout=10)
        assert answer.status_code == 202, answer.text
        store = open_store(pg_url)
        try:
            wait_for(lambda: len(store.hub_subscribers()) == 1, 15, "the subscription")
        finally:
            store.close()
        for delivered, count in enumerate((4, 5), start=1):
            _write_feed(tmp_path, count)
            link = f"https://a.example.org/{count - 1}"
            callback.wait_for(
                lambda n=delivered: len(callback.requests("POST", "/cb")) == n  # type: ignore[misc]
            )
            delivery = callback.requests("POST", "/cb")[-1]
            assert delivery.signed is True and link.encode() in delivery.body
        time.sleep(3.0)  # a second daemon delivering too would have done so by now
        assert len(callback.requests("POST", "/cb")) == 2
        for daemon in daemons:
            wait_for(lambda d=daemon: d.get("/atom.xml").content == delivery.body, 10,  # type: ignore[misc]
                     "both daemons serving what was delivered")  # fmt: skip
    finally:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.stop()

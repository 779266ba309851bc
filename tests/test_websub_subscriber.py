"""The WebSub subscriber in the real daemon (`aggregator run`), against a real hub on
127.0.0.1 (tests/websubhub.py): subscription and verification of intent, pushes that reach
atom.xml without a poll, pushes that must change nothing, renewal, lapse, status."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest

from aggregator.config import load_config
from aggregator.daemon.subscribing import Hooks, Subscriber
from aggregator.metrics import Metrics
from aggregator.poll import SourceReport
from aggregator.store import open_store
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import PollOutcome, PushState, Subscription
from aggregator.websub.discovery import Discovery
from tests.conftest import run_cli
from tests.feedfactory import Item, atom
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _free_port, wait_for
from tests.websubhub import LoopbackHub, distribute, signature

NOW = datetime.now(UTC).replace(microsecond=0)
FEED_PATH = "/feed.xml"

pytestmark = pytest.mark.slow


def _item(n: int) -> Item:
    return Item(
        f"धक्का {n}",
        f"https://pushed.example.org/{n}",
        f"tag:pushed.example.org,2025:{n}",
        NOW - timedelta(minutes=60 - n),
        f"<p>सारांश {n}</p>",
    )


def _document(count: int) -> bytes:
    items = [_item(n) for n in range(count)]
    return atom("Pushed", "https://pushed.example.org/", "tag:pushed", items)


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    server = LoopbackHub().start()
    try:
        yield server
    finally:
        server.stop()


def _serve_feed(server: FeedServer, hub: LoopbackHub, count: int) -> str:
    """The feed at FEED_PATH, naming `hub` and itself in its Link header."""
    topic = server.url(FEED_PATH)
    links = f'<{hub.url}>; rel="hub", <{topic}>; rel="self"'
    server.add(FEED_PATH, _document(count), "application/atom+xml", headers=(("Link", links),))
    return topic


def _config(tmp_path: Path, port: int, url: str, *, interval: str, websub: str = "") -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(
        f"""
[aggregator]
title = "Push test"
base_url = "http://127.0.0.1:{port}/"
[poll]
interval = "{interval}"
timeout = "10s"
[publish]
max_age = "3650d"
[server]
port = {port}
[websub]
{websub}
[[feeds]]
name = "pushed"
url = "{url}"
""",
        encoding="utf-8",
    )
    return path


def _atom_ids(daemon: Daemon) -> list[str]:
    parsed = feedparser.parse(io.BytesIO(daemon.get("/atom.xml").content))
    return [e.link for e in parsed.entries]


def _stored(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "state" / "aggregator.db") as db:
        return db.execute("SELECT source, entry_id FROM entries ORDER BY 1, 2").fetchall()


def _subscription(tmp_path: Path) -> dict[str, object]:
    with sqlite3.connect(tmp_path / "state" / "aggregator.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM websub_subscriptions").fetchone()
    return dict(row) if row is not None else {}


def _metric(daemon: Daemon, name: str) -> float:
    text = daemon.get("/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_push_reaches_atom_xml_within_seconds_and_without_a_poll(
    tmp_path: Path, feed_server: FeedServer, hub: LoopbackHub
) -> None:
    topic = _serve_feed(feed_server, hub, 2)
    port = _free_port()
    config = _config(tmp_path, port, topic, interval="6h", websub='poll_interval = "6h"')
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(hub.subscriptions(topic)) == 1, 15, "the hub to verify us")
        callback = hub.subscriptions(topic)[0].callback
        assert callback.startswith(f"http://127.0.0.1:{port}/websub/callback/")
        wait_for(lambda: _subscription(tmp_path).get("state") == "active", 5, "active")
        wait_for(lambda: len(_atom_ids(daemon)) == 2, 10, "the first poll's items")
        polls = len(feed_server.seen(FEED_PATH))

        # A new item: the hub pushes the new document; nobody asks the feed server.
        document = _document(3)
        feed_server.add(FEED_PATH, document, "application/atom+xml")
        pushed = time.monotonic()
        assert hub.publish(topic, document, "application/atom+xml") == [202]
        wait_for(lambda: len(_atom_ids(daemon)) == 3, 5, "the pushed item in atom.xml")
        assert time.monotonic() - pushed < 5
        assert "https://pushed.example.org/2" in _atom_ids(daemon)
        assert len(feed_server.seen(FEED_PATH)) == polls  # no poll in between
        assert _metric(daemon, 'aggregator_websub_pushes_total{result="valid"}') == 1
        assert _metric(daemon, 'aggregator_websub_subscriptions{state="active"}') == 1

        # status and status --json show the subscription.
        shown = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        websub = shown[0]["websub"]
        assert websub["hub"] == hub.url
        assert websub["state"] == "active"
        assert websub["callback"].startswith(f"http://127.0.0.1:{port}/websub/callback/")
        assert callback.rsplit("/", 1)[1] not in websub["callback"]  # the token is a secret
        lease = datetime.fromisoformat(websub["lease_expires"])
        assert timedelta(days=9) < lease - datetime.now(UTC) <= timedelta(days=10)
        table = run_cli("status", "--config", str(config)).stdout
        assert "push active" in table

        # A signed ping without a feed in it: the source is polled instead, at once.
        assert hub.publish(topic, b"", "application/atom+xml") == [202]
        wait_for(lambda: len(feed_server.seen(FEED_PATH)) == polls + 1, 5, "a poll")
    finally:
        daemon.stop()


def test_pushes_never_asked_for_or_badly_signed_change_nothing(
    tmp_path: Path, feed_server: FeedServer, hub: LoopbackHub
) -> None:
    topic = _serve_feed(feed_server, hub, 1)
    port = _free_port()
    config = _config(tmp_path, port, topic, interval="6h")
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(hub.subscriptions(topic)) == 1, 15, "the hub to verify us")
        wait_for(lambda: _subscription(tmp_path).get("state") == "active", 5, "active")
        wait_for(lambda: len(_atom_ids(daemon)) == 1, 10, "the first poll's items")
        verified = hub.subscriptions(topic)[0]
        assert verified.secret is not None
        before = (_stored(tmp_path), daemon.get("/atom.xml").content, _subscription(tmp_path))
        polls = len(feed_server.seen(FEED_PATH))
        forged = _document(4)
        other_token = daemon.url("/websub/callback/" + "A" * 43)
        attempts = [
            # (callback, signature header, topic): each must be answered and ignored.
            (verified.callback, "sha256=" + "0" * 64, topic),  # wrong signature
            (verified.callback, signature("not the secret", forged), topic),  # wrong secret
            (verified.callback, "", topic),  # no signature at all
            (verified.callback, signature(verified.secret, forged, "sha1"), topic),  # sha1 off
            (verified.callback, signature(verified.secret, forged, "md5"), topic),
            (verified.callback, signature(verified.secret, forged), "http://127.0.0.1:1/x"),
            (other_token, signature(verified.secret, forged), topic),  # never asked for
        ]
        statuses = [
            distribute(callback, forged, "application/atom+xml", sent_topic, hub.url, None,
                       header=header)
            for callback, header, sent_topic in attempts
        ]  # fmt: skip
        assert statuses == [202, 202, 202, 202, 202, 202, 410]
        # Verification requests for what we never asked: 404.
        asked = {"hub.mode": "subscribe", "hub.topic": topic, "hub.challenge": "c" * 20}
        assert httpx.get(other_token, params=asked).status_code == 404
        wrong_topic = {**asked, "hub.topic": "http://127.0.0.1:1/x"}
        assert httpx.get(verified.callback, params=wrong_topic).status_code == 404
        # ... nor for a subscription already active (no request of ours pending).
        assert httpx.get(verified.callback, params=asked).status_code == 404
        unasked = {**asked, "hub.mode": "unsubscribe"}
        assert httpx.get(verified.callback, params=unasked).status_code == 404
        time.sleep(2)  # what a wrongly accepted push would have needed to be stored
        assert (_stored(tmp_path), daemon.get("/atom.xml").content,
                _subscription(tmp_path)) == before  # fmt: skip
        assert len(feed_server.seen(FEED_PATH)) == polls
        assert _metric(daemon, 'aggregator_websub_pushes_total{result="rejected"}') == 6
        assert daemon.log_text().count("WebSub push ignored") == 1  # once per source and hour

        # The same document, rightly signed, is taken: the refusals were no accident.
        assert hub.publish(topic, forged, "application/atom+xml") == [202]
        wait_for(lambda: len(_atom_ids(daemon)) == 4, 5, "the rightly signed push")
    finally:
        daemon.stop()


def _polls_between(server: FeedServer, start: float, end: float) -> int:
    """Polls of FEED_PATH the server saw from `start` to `end` (time.monotonic())."""
    return sum(1 for at in server_times(server) if start <= at <= end)


def server_times(server: FeedServer) -> list[float]:
    return [r.at for r in server.seen(FEED_PATH)]


def test_a_short_lease_is_renewed_and_a_lapsed_one_returns_to_polling(
    tmp_path: Path, feed_server: FeedServer, hub: LoopbackHub
) -> None:
    hub.lease_seconds = 8
    topic = _serve_feed(feed_server, hub, 1)
    port = _free_port()
    # Polled every second on its own; every hour while pushed to.
    config = _config(tmp_path, port, topic, interval="1s", websub='poll_interval = "1h"')
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(hub.subscriptions(topic)) == 1, 15, "the hub to verify us")
        first = hub.subscriptions(topic)[0]
        wait_for(lambda: _subscription(tmp_path).get("state") == "active", 5, "active")
        first_lease = str(_subscription(tmp_path)["lease_expires"])
        # While pushed to, the source is not polled every second (the poll that follows
        # the verification was scheduled before it).
        time.sleep(max(0.0, first.at + 5.5 - time.monotonic()))
        assert _polls_between(feed_server, first.at + 2.5, first.at + 5.5) == 0

        # Renewed before the lease ends: a second request, verified, a later lease.
        wait_for(lambda: len(hub.subscribe_requests()) >= 2, 8, "the renewal request")
        renewal = hub.subscribe_requests()[1]
        assert renewal.at < first.expires
        assert renewal.callback == first.callback  # the same subscription
        assert renewal.secret == first.secret
        wait_for(lambda: hub.subscriptions(topic)[0].at > first.at, 5, "the renewal verified")
        hub.verifying = False  # from now on the hub takes requests and verifies none
        second = hub.subscriptions(topic)[0]
        wait_for(
            lambda: str(_subscription(tmp_path)["lease_expires"]) > first_lease,
            5,
            "the later lease stored",
        )

        # The next renewal goes unverified: the lease lapses, the source is polled every
        # second again.
        wait_for(lambda: _subscription(tmp_path).get("state") == "expired", 15, "the lapse")
        assert time.monotonic() >= second.expires - 0.5
        lapsed = time.monotonic()
        time.sleep(6)
        # Every second, plus jitter, on a one-second tick: two polls at least in 5 s (an
        # hour's safety net would make none).
        assert _polls_between(feed_server, lapsed + 1, lapsed + 6) >= 2
        shown = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        assert shown[0]["websub"]["state"] == "expired"
        assert "lapsed" in daemon.log_text()
    finally:
        daemon.stop()


async def _step_once(config_path: Path, found: Discovery) -> Subscription | None:
    """One subscriber step after a poll that found `found`, in process; the stored result."""
    config = load_config(config_path)
    store = AsyncStore(open_store(config.store.target))
    spawned: list[asyncio.Task[None]] = []
    hooks = Hooks(
        poller=lambda: None,  # type: ignore[arg-type,return-value]
        claim_soon=lambda: None,
        on_stored=lambda: None,
        spawn=lambda c: spawned.append(asyncio.create_task(c)),
    )
    subscriber = Subscriber(store, config=lambda: config, metrics=Metrics(),
                            clock=lambda: datetime.now(UTC), hooks=hooks)  # fmt: skip
    try:
        source = config.sources[0]
        subscriber.after_poll(source, SourceReport(source.name, PollOutcome.UPDATED, push=found))
        await asyncio.gather(*spawned)
        return await store.subscription(source.name)
    finally:
        await subscriber.close()
        store.close()


@pytest.mark.parametrize("allowed", [False, True])
def test_a_hub_on_a_private_address_is_refused_for_a_public_source(
    tmp_path: Path, hub: LoopbackHub, allowed: bool
) -> None:
    # A source on a public address (never fetched here) names a hub on loopback.
    public = "http://93.184.216.34/feed.xml"
    websub = "allow_private_hubs = true" if allowed else ""
    config = _config(tmp_path, _free_port(), public, interval="1h", websub=websub)
    sub = asyncio.run(_step_once(config, Discovery(hub.url, public)))
    assert sub is not None
    if allowed:
        assert sub.state is PushState.PENDING
        wait_for(lambda: len(hub.subscribe_requests()) == 1, 5, "the request")
    else:
        assert sub.state is PushState.FAILED
        assert "loopback, private or link-local" in (sub.last_error or "")
        time.sleep(0.5)
        assert hub.requests == []  # never asked


def test_without_a_public_address_nothing_is_subscribed(tmp_path: Path, hub: LoopbackHub) -> None:
    config = _config(tmp_path, _free_port(), "http://127.0.0.1:1/feed.xml", interval="1h")
    text = config.read_text(encoding="utf-8").replace("base_url =", "# base_url =")
    config.write_text(text, encoding="utf-8")
    assert load_config(config).websub.callback_base is None
    assert asyncio.run(_step_once(config, Discovery(hub.url, "http://127.0.0.1:1/f"))) is None
    assert hub.requests == []


def test_changing_a_sources_url_unsubscribes(
    tmp_path: Path, feed_server: FeedServer, hub: LoopbackHub
) -> None:
    topic = _serve_feed(feed_server, hub, 1)
    port = _free_port()
    config = _config(tmp_path, port, topic, interval="6h")
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: len(hub.subscriptions(topic)) == 1, 15, "the hub to verify us")
        callback = hub.subscriptions(topic)[0].callback
        # The source's URL changes (a reload): the old subscription is ended, verified.
        moved = feed_server.add("/other.xml", _document(1), "application/atom+xml")
        text = config.read_text(encoding="utf-8").replace(topic, moved)
        tmp = config.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(config)
        wait_for(lambda: any(r.mode == "unsubscribe" for r in hub.requests), 10, "an unsubscribe")
        unsubscribe = next(r for r in hub.requests if r.mode == "unsubscribe")
        assert (unsubscribe.topic, unsubscribe.callback) == (topic, callback)
        wait_for(lambda: hub.subscriptions(topic) == [], 5, "the hub to verify the end")
        assert (200, hub.verification_answers[-1][1]) == hub.verification_answers[-1]
        wait_for(lambda: _subscription(tmp_path) == {}, 5, "the subscription forgotten")
        # A push that still comes for it is answered 410 Gone (the hub may drop it).
        assert distribute(callback, _document(2), "application/atom+xml", topic, hub.url,
                          None, header="sha256=" + "0" * 64) == 410  # fmt: skip
    finally:
        daemon.stop()


def test_a_callback_url_that_is_an_iri_is_sent_to_the_hub_as_a_uri(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """`callback_url` written with a Devanagari path is sent to hubs as the URI it is
    (percent-encoded UTF-8): a hub's HTTP client need not know IRIs to call us back."""
    hub = LoopbackHub(verifying=False).start()
    try:
        topic = _serve_feed(feed_server, hub, 1)
        port = _free_port()
        websub = f'callback_url = "http://127.0.0.1:{port}/समाचार/cb/"'
        config = _config(tmp_path, port, topic, interval="6h", websub=websub)
        daemon = Daemon(config, port).start()
        try:
            wait_for(lambda: len(hub.requests) >= 1, 15, "the subscription request")
            callback = hub.requests[0].callback
            escaped = "%E0%A4%B8%E0%A4%AE%E0%A4%BE%E0%A4%9A%E0%A4%BE%E0%A4%B0"
            assert callback.startswith(f"http://127.0.0.1:{port}/{escaped}/cb/"), callback
            assert callback.isascii()
        finally:
            daemon.stop()
    finally:
        hub.stop()

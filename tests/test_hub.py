"""The built-in WebSub hub in the real daemon (`aggregator run` in a subprocess), against a
real subscriber callback on 127.0.0.1 (tests/hubcallback.py): subscribe, verification of
intent, signed delivery of what a publish changed, retries and drops, leases, refusals, and
a callback that never answers stalling nothing."""

from __future__ import annotations

import hashlib
import hmac
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from aggregator.store.hub import HubSubscriberState
from aggregator.store.sqlite import SqliteStore
from tests.feedfactory import Item, rss2
from tests.hubcallback import CallbackServer, Seen
from tests.test_daemon import Daemon, _free_port, wait_for

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(microsecond=0)
PRIVATE_OK = "allow_private_callbacks = true"


def _items(count: int) -> list[Item]:
    return [
        Item(
            f"ख़बर {i}",
            f"https://a.example.org/{i}",
            f"tag:a.example.org,2025:{i}",
            NOW - timedelta(minutes=i + 1),
            f"<p>सारांश {i}</p>",
        )
        for i in range(count)
    ]


def _write_feed(tmp_path: Path, count: int) -> None:
    tmp = tmp_path / "a.xml.tmp"
    tmp.write_bytes(rss2("A", "https://a.example.org/", _items(count)))
    tmp.replace(tmp_path / "a.xml")


def _write_config(
    tmp_path: Path, port: int, websub: str = PRIVATE_OK, *, base_url: bool = True, extra: str = ""
) -> Path:
    config = tmp_path / "feeds.toml"
    lines = [
        "[aggregator]",
        'title = "Hub test"',
        f'base_url = "http://127.0.0.1:{port}/"' if base_url else "",
        "[poll]",
        'timeout = "10s"',
        extra,
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "[websub]",
        'delivery_timeout = "2s"',
        websub,
        "[[feeds]]",
        'name = "a"',
        'url = "a.xml"',
        'interval = "1s"',
    ]
    tmp = config.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(config)
    return config


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer().start()
    try:
        yield server
    finally:
        server.stop()


class Start(Protocol):
    def __call__(self, websub: str = ..., *, base_url: bool = ..., extra: str = ...) -> Daemon: ...


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """`start(websub=..., ...)`: the daemon on a feed of 3 items, once it has published them;
    stopped after the test."""
    started: list[Daemon] = []

    def start_daemon(websub: str = PRIVATE_OK, *, base_url: bool = True, extra: str = "") -> Daemon:
        _write_feed(tmp_path, 3)
        port = _free_port()
        config = _write_config(tmp_path, port, websub, base_url=base_url, extra=extra)
        daemon = Daemon(config, port).start()
        started.append(daemon)
        wait_for(lambda: "https://a.example.org/2" in daemon.get("/atom.xml").text, 15,
                 "the first poll published")  # fmt: skip
        return daemon

    yield start_daemon
    for daemon in started:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


def _subscribe(daemon: Daemon, callback: str, topic: str = "atom.xml", **fields: str):
    form = {
        "hub.mode": "subscribe",
        "hub.topic": daemon.url("/" + topic),
        "hub.callback": callback,
        **{f"hub.{k}": v for k, v in fields.items()},
    }
    return httpx.post(daemon.url("/websub"), data=form, timeout=10)


def _subscribers(daemon: Daemon) -> list[HubSubscriberState]:
    store = SqliteStore.open(daemon.config.parent / "state" / "aggregator.db")
    try:
        return store.hub_subscribers()
    finally:
        store.close()


def _subscribed(daemon: Daemon, callback: CallbackServer, path: str, secret: str = "") -> None:
    """Subscribe `path` of the callback server to atom.xml, and wait until it is active."""
    fields = {"secret": secret} if secret else {}
    if secret:
        callback.secrets[path] = secret
    answer = _subscribe(daemon, callback.url(path), **fields)
    assert answer.status_code == 202, answer.text
    wait_for(lambda: any(s.callback == callback.url(path) for s in _subscribers(daemon)), 15,
             "the subscription")  # fmt: skip


def _metric(daemon: Daemon, line: str) -> float | None:
    text = daemon.get("/metrics").text
    match = re.search(rf"^{re.escape(line)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_a_subscriber_is_verified_then_gets_each_change_signed(
    start: Start, callback: CallbackServer, tmp_path: Path
) -> None:
    daemon = start(f'{PRIVATE_OK}\nmin_lease = "1m"')
    served = daemon.get("/atom.xml")
    hub, topic = daemon.url("/websub"), daemon.url("/atom.xml")
    assert served.headers["Link"] == f'<{hub}>; rel="hub", <{topic}>; rel="self"'
    assert f'<link href="{hub}" rel="hub"/>' in served.text

    answer = _subscribe(daemon, callback.url("/cb"), secret="s3cret", lease_seconds="5")
    assert answer.status_code == 202, answer.text
    callback.secrets["/cb"] = "s3cret"
    callback.wait_for(lambda: callback.requests("GET", "/cb"))
    [verification] = callback.requests("GET", "/cb")
    assert verification.query["hub.mode"] == "subscribe"
    assert verification.query["hub.topic"] == topic
    assert verification.query["hub.lease_seconds"] == "60"  # 5 s asked, min_lease granted
    assert len(verification.query["hub.challenge"]) >= 32
    wait_for(lambda: len(_subscribers(daemon)) == 1, 10, "the subscription to be stored")
    [subscriber] = _subscribers(daemon)
    assert subscriber.topic == topic and subscriber.state == "active"
    assert callback.requests("POST", "/cb") == []  # nothing changed yet

    _write_feed(tmp_path, 4)  # a new item: the next poll publishes a changed atom.xml
    callback.wait_for(lambda: callback.requests("POST", "/cb"))
    [delivery] = callback.requests("POST", "/cb")
    assert delivery.signed is True
    assert delivery.body == daemon.get("/atom.xml").content
    assert "https://a.example.org/3" in delivery.body.decode()
    assert delivery.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert delivery.headers["Link"] == f'<{hub}>; rel="hub", <{topic}>; rel="self"'
    expected = hmac.new(b"s3cret", delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["X-Hub-Signature"] == f"sha256={expected}"
    wait_for(lambda: _metric(daemon, 'aggregator_websub_hub_deliveries_total{outcome="ok"}')
             == 1, 5, "the delivery counted")  # fmt: skip
    wait_for(lambda: _metric(daemon, 'aggregator_websub_hub_subscribers{state="active"}') == 1,
             10, "the subscriber counted")  # fmt: skip

    # A publish that changes nothing (a reload re-publishes) delivers nothing.
    publishes = _metric(daemon, "aggregator_publishes_total")
    assert publishes is not None
    _write_config(tmp_path, daemon.port, f'{PRIVATE_OK}\nmin_lease = "2m"')
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: (_metric(daemon, "aggregator_publishes_total") or 0) > publishes, 10,
             "the publish after the reload")  # fmt: skip
    time.sleep(2.5)  # a delivery, were there one, would be out by now
    assert len(callback.requests("POST", "/cb")) == 1


def test_a_failing_callback_is_retried_then_dropped(
    start: Start, callback: CallbackServer, tmp_path: Path
) -> None:
    daemon = start(f'{PRIVATE_OK}\nretry_delay = "200ms"\nmax_failures = 3')
    callback.post_status["/down"] = 500
    _subscribed(daemon, callback, "/down")
    _subscribed(daemon, callback, "/up")
    _write_feed(tmp_path, 4)
    callback.wait_for(lambda: len(callback.requests("POST", "/down")) == 3)
    wait_for(lambda: [s.callback for s in _subscribers(daemon)] == [callback.url("/up")], 10,
             "the failing subscriber dropped")  # fmt: skip
    time.sleep(1.0)
    assert len(callback.requests("POST", "/down")) == 3  # no more after the drop
    assert len(callback.requests("POST", "/up")) == 1, daemon.log_text()[-4000:]
    assert "websub: dropped the subscription of" in daemon.log_text()
    assert _metric(daemon, 'aggregator_websub_hub_deliveries_total{outcome="failed"}') == 3


def test_a_gone_callback_is_dropped_at_once(
    start: Start, callback: CallbackServer, tmp_path: Path
) -> None:
    daemon = start(PRIVATE_OK)
    callback.post_status["/gone"] = 410
    _subscribed(daemon, callback, "/gone")
    _write_feed(tmp_path, 4)
    wait_for(lambda: _subscribers(daemon) == [], 10, "the subscriber dropped")
    assert len(callback.requests("POST", "/gone")) == 1


def test_a_lease_ends(start: Start, callback: CallbackServer, tmp_path: Path) -> None:
    daemon = start(f'{PRIVATE_OK}\nmin_lease = "1s"')
    answer = _subscribe(daemon, callback.url("/short"), lease_seconds="1")
    assert answer.status_code == 202
    callback.wait_for(lambda: callback.requests("GET", "/short"))
    assert callback.requests("GET", "/short")[0].query["hub.lease_seconds"] == "1"
    wait_for(lambda: len(_subscribers(daemon)) == 1, 10, "the subscription")
    time.sleep(1.5)
    _write_feed(tmp_path, 4)
    wait_for(
        lambda: "https://a.example.org/3" in daemon.get("/atom.xml").text,
        10,
        "the change published",
    )
    wait_for(lambda: _subscribers(daemon) == [], 10, "the ended lease removed")
    assert callback.requests("POST", "/short") == []
    assert "subscriptions ended with their lease" in daemon.log_text()


def test_private_callbacks_are_refused_by_default(start: Start, callback: CallbackServer) -> None:
    daemon = start("")
    port = callback.url("/").rsplit(":", 1)[1].rstrip("/")
    for host, reason in [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("localhost", "a loopback address (localhost resolves to it)"),
        ("[::1]", "::1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "carries 127.0.0.1, a loopback address"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("169.254.169.254", "a link-local address"),
    ]:
        answer = _subscribe(daemon, f"http://{host}:{port}/cb")
        assert answer.status_code == 403, (host, answer.text)
        assert reason in answer.text and "allow_private_callbacks" in answer.text
    time.sleep(0.5)
    assert callback.seen == []  # not one connection to it


def test_bad_requests_are_refused_with_their_reason(start: Start, callback: CallbackServer) -> None:
    daemon = start(PRIVATE_OK)
    cb = callback.url("/cb")
    cases = [
        (_subscribe(daemon, cb, topic="index.html"), 404, "is not a feed this hub publishes"),
        (_subscribe(daemon, cb, topic="tech/atom.xml"), 404, "is not a feed this hub publishes"),
        (
            httpx.post(daemon.url("/websub"), data={"hub.mode": "subscribe", "hub.callback": cb,
                       "hub.topic": "https://elsewhere.example/atom.xml"}),
            404, "is not a feed this hub publishes",
        ),
        (_subscribe(daemon, cb, secret="x" * 200), 400, "hub.secret must be shorter than 200"),
        (_subscribe(daemon, "gopher://127.0.0.1/cb"), 400, "must be an http or https URL"),
        (_subscribe(daemon, cb, mode="publish"), 400, "hub.mode=publish is not taken"),
        (
            httpx.post(daemon.url("/websub"), content=b"hub.mode=subscribe&" + b"x" * 20_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"}),
            413, "larger than 16384 bytes",
        ),
        (
            httpx.post(daemon.url("/websub"), json={"hub.mode": "subscribe"}),
            415, "expected a application/x-www-form-urlencoded body",
        ),
        (httpx.get(daemon.url("/websub")), 405, "POST a WebSub subscription request"),
    ]  # fmt: skip
    for answer, status, reason in cases:
        assert (answer.status_code, reason in answer.text) == (status, True), answer.text
    time.sleep(0.5)
    assert callback.seen == []
    assert daemon.get("/healthz").status_code == 200


def test_intent_must_be_confirmed_and_unsubscribing_is_verified_too(
    start: Start, callback: CallbackServer
) -> None:
    daemon = start(PRIVATE_OK)
    callback.verify["/wrong"] = "wrong"
    callback.verify["/unknown"] = "404"
    for path in ("/wrong", "/unknown"):
        assert _subscribe(daemon, callback.url(path)).status_code == 202
    callback.wait_for(lambda: callback.requests("GET", "/wrong") and callback.requests("GET",
                      "/unknown"))  # fmt: skip
    _subscribed(daemon, callback, "/cb")
    assert [s.callback for s in _subscribers(daemon)] == [callback.url("/cb")]

    answer = _subscribe(daemon, callback.url("/cb"), mode="unsubscribe")
    assert answer.status_code == 202
    wait_for(lambda: _subscribers(daemon) == [], 10, "the unsubscription")
    last = callback.requests("GET", "/cb")[-1]
    assert last.query["hub.mode"] == "unsubscribe" and "hub.lease_seconds" not in last.query


def test_a_topic_takes_requests_and_subscribers_up_to_its_caps(
    start: Start, callback: CallbackServer
) -> None:
    daemon = start(f"{PRIVATE_OK}\nmax_subscribers = 1\nrequests_per_minute = 3")
    _subscribed(daemon, callback, "/first")
    refused = _subscribe(daemon, callback.url("/second"))
    assert refused.status_code == 403 and "as many subscribers as the hub takes" in refused.text
    renewed = _subscribe(daemon, callback.url("/first"))  # a renewal is no new subscriber
    assert renewed.status_code == 202
    too_many = _subscribe(daemon, callback.url("/first"))
    assert too_many.status_code == 429 and "try again later" in too_many.text
    other_topic = _subscribe(daemon, callback.url("/first"), topic="rss.xml")
    assert other_topic.status_code == 202  # the caps are per topic


def test_a_callback_that_never_answers_stalls_neither_serving_nor_polling(
    start: Start, callback: CallbackServer, tmp_path: Path
) -> None:
    daemon = start(f'{PRIVATE_OK}\nretry_delay = "10s"')
    callback.hang.add("/hang")
    _subscribed(daemon, callback, "/hang")
    _write_feed(tmp_path, 4)
    callback.wait_for(lambda: callback.requests("POST", "/hang"))  # it hangs from here on
    _write_feed(tmp_path, 5)  # polling goes on meanwhile
    slowest = 0.0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        began = time.monotonic()
        assert daemon.get("/healthz").status_code == 200
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(0.05)
    assert slowest < 0.5, slowest
    wait_for(
        lambda: "https://a.example.org/4" in daemon.get("/atom.xml").text,
        10,
        "the next item published",
    )
    # The delivery gave up at delivery_timeout (2 s), to be retried later.
    wait_for(lambda: any(s.state == "retrying" for s in _subscribers(daemon)), 10, "a retry")
    assert "no answer within 2 s" in daemon.log_text()


def test_without_a_public_address_no_hub_is_advertised(
    start: Start, callback: CallbackServer
) -> None:
    daemon = start(PRIVATE_OK, base_url=False)
    served = daemon.get("/atom.xml")
    assert "Link" not in served.headers
    assert 'rel="hub"' not in served.text
    assert '"hubs"' not in daemon.get("/feed.json").text
    answer = _subscribe(daemon, callback.url("/cb"))
    assert answer.status_code == 404 and "set [aggregator] base_url" in answer.text


def test_external_hubs_are_advertised_and_told_of_changes(
    start: Start, callback: CallbackServer, tmp_path: Path
) -> None:
    external = callback.url("/hub")
    daemon = start(f'builtin_hub = false\nhubs = ["{external}"]')
    served = daemon.get("/rss.xml")
    assert served.headers["Link"] == (
        f'<{external}>; rel="hub", <{daemon.url("/rss.xml")}>; rel="self"'
    )
    assert f'<atom:link href="{external}" rel="hub"/>' in served.text
    assert daemon.get("/feed.json").json()["hubs"] == [{"type": "WebSub", "url": external}]
    assert _subscribe(daemon, callback.url("/cb")).status_code == 404  # no built-in hub
    time.sleep(1.0)  # the pings of the first publishes are in
    before = len(callback.requests("POST", "/hub"))
    _write_feed(tmp_path, 4)
    callback.wait_for(lambda: len(callback.requests("POST", "/hub")) >= before + 3)
    time.sleep(0.5)
    pings = sorted(s.body.decode() for s in callback.requests("POST", "/hub")[before:])
    base = daemon.url("/").replace(":", "%3A").replace("/", "%2F")
    assert pings == [
        f"hub.mode=publish&hub.url={base}{name}" for name in ("atom.xml", "feed.json", "rss.xml")
    ]


def test_a_base_url_that_is_an_iri_is_served_and_its_topics_delivered(
    tmp_path: Path, callback: CallbackServer
) -> None:
    """`base_url = "http://…/समाचार/"` (an IRI: a Hindi site's path or host). The feeds publish
    it as a URI; the `Link` header held it as written, which no HTTP header may: every
    request for a feed failed with a 500. Now the header names the feed's own self link, and
    the hub's topic is that URI: asked for with the IRI as written, the same topic (one
    subscription per callback, one delivery each, verified under the self link's name)."""
    _write_feed(tmp_path, 3)
    port = _free_port()
    config = _write_config(tmp_path, port)
    plain = f"http://127.0.0.1:{port}/"
    config.write_text(
        config.read_text(encoding="utf-8").replace(plain, plain + "समाचार/"), encoding="utf-8"
    )
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: "https://a.example.org/2" in daemon.get("/atom.xml").text, 15,
                 "the first poll published")  # fmt: skip
        served = daemon.get("/atom.xml")
        assert served.status_code == 200
        base = plain + "%E0%A4%B8%E0%A4%AE%E0%A4%BE%E0%A4%9A%E0%A4%BE%E0%A4%B0/"
        topic = base + "atom.xml"
        assert served.headers["Link"] == f'<{base}websub>; rel="hub", <{topic}>; rel="self"'
        assert f'<link href="{topic}" rel="self"/>' in served.text

        asked = [("/uri", topic), ("/iri", plain + "समाचार/atom.xml"), ("/iri", topic)]
        for path, named in asked:
            form = {"hub.mode": "subscribe", "hub.topic": named, "hub.callback": callback.url(path)}
            answer = httpx.post(daemon.url("/websub"), data=form, timeout=10)
            assert answer.status_code == 202, answer.text

        def verifications() -> list[Seen]:
            return callback.requests("GET", "/uri") + callback.requests("GET", "/iri")

        wait_for(lambda: len(verifications()) == 3, 15, "three verifications")
        wait_for(lambda: len(_subscribers(daemon)) == 2, 15, "two subscriptions")
        assert {s.topic for s in _subscribers(daemon)} == {topic}
        assert {v.query["hub.topic"] for v in verifications()} == {topic}
        _write_feed(tmp_path, 4)
        callback.wait_for(
            lambda: callback.requests("POST", "/uri") and callback.requests("POST", "/iri")
        )
        time.sleep(1)  # a second delivery to the same callback, were there one
        for path in ("/uri", "/iri"):
            [delivery] = callback.requests("POST", path)
            assert "https://a.example.org/3" in delivery.body.decode()
            assert delivery.headers["Link"] == served.headers["Link"]
    finally:
        daemon.stop()

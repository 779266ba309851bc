"""Interop beyond our own code: Flask-WebSub's subscriber (from the package index) against our
hub, on 127.0.0.1. It discovers the hub from atom.xml's `Link` header, subscribes, answers
our verification, receives the changed feed, and unsubscribes.

Flask-WebSub sends a secret only to an https hub; the signed path is shown by
tests/test_hub.py's own callback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from flask_websub.subscriber import (
    SQLite3SubscriberStorage,
    SQLite3TempSubscriberStorage,
    Subscriber,
    discover,
)
from werkzeug.serving import BaseWSGIServer, make_server

from tests.test_daemon import _free_port, wait_for
from tests.test_hub import PRIVATE_OK, Start, _subscribers, _write_feed, start  # noqa: F401

pytestmark = pytest.mark.slow


@dataclass
class FlaskSubscriber:
    """A Flask app with Flask-WebSub's subscriber blueprint, served by werkzeug in a thread."""

    app: Flask
    subscriber: Subscriber
    server: BaseWSGIServer
    received: list[tuple[str, bytes]] = field(default_factory=list)
    confirmed: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def flask_subscriber(tmp_path: Path) -> Iterator[FlaskSubscriber]:
    port = _free_port()
    app = Flask("websub-subscriber")
    app.config["SERVER_NAME"] = f"127.0.0.1:{port}"
    subscriber = Subscriber(
        SQLite3SubscriberStorage(str(tmp_path / "subscriptions.db")),
        SQLite3TempSubscriberStorage(str(tmp_path / "pending.db")),
    )
    app.register_blueprint(subscriber.build_blueprint(url_prefix="/callbacks"))
    server = make_server("127.0.0.1", port, app, threaded=True)
    running = FlaskSubscriber(app, subscriber, server)
    subscriber.add_listener(lambda topic, _id, body: running.received.append((topic, body)))
    subscriber.add_success_handler(lambda topic, _id, mode: running.confirmed.append((topic, mode)))
    subscriber.add_error_handler(lambda topic, _id, reason: running.errors.append(reason))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        thread.join(10)


def test_flask_websub_subscribes_receives_and_unsubscribes(
    start: Start,  # noqa: F811
    flask_subscriber: FlaskSubscriber,
    tmp_path: Path,
) -> None:
    daemon = start(PRIVATE_OK)
    topic = daemon.url("/atom.xml")
    with flask_subscriber.app.app_context():
        found = discover(topic)
        assert found == {"hub_url": daemon.url("/websub"), "topic_url": topic}
        callback_id = flask_subscriber.subscriber.subscribe(**found, lease_seconds=86400)
    wait_for(lambda: flask_subscriber.confirmed == [(topic, "subscribe")], 15, "verification")
    [subscription] = _subscribers(daemon)
    assert subscription.callback.endswith(f"/callbacks/{callback_id}")

    _write_feed(tmp_path, 4)
    wait_for(lambda: bool(flask_subscriber.received), 15, "the delivery")
    [(delivered_topic, body)] = flask_subscriber.received
    assert delivered_topic == topic
    assert body == daemon.get("/atom.xml").content

    with flask_subscriber.app.app_context():
        flask_subscriber.subscriber.unsubscribe(callback_id)
    wait_for(lambda: _subscribers(daemon) == [], 15, "the unsubscription")
    assert flask_subscriber.confirmed[-1] == (topic, "unsubscribe")
    assert flask_subscriber.errors == []

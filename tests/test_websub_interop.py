"""Interop beyond our own code: the daemon's subscriber against Flask-WebSub's hub (PyPI
`flask-websub`, run with Celery in eager mode, on 127.0.0.1).

Flask-WebSub verifies intent synchronously inside the subscription request (eager Celery),
fetches the topic itself when told to publish (it insists on the topic's `Link` header
naming hub and self), and signs distributions with sha512: three things our own test hub
does differently. Skipped, saying why, where the package is not installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _free_port, wait_for
from tests.test_websub_subscriber import (
    FEED_PATH,
    _atom_ids,
    _config,
    _document,
    _subscription,
)

flask_hub = pytest.importorskip("flask_websub.hub", reason="flask-websub is not installed")
celery_app = pytest.importorskip("celery", reason="celery (flask-websub's hub needs it)")
serving = pytest.importorskip("werkzeug.serving")
flask = pytest.importorskip("flask")

pytestmark = pytest.mark.slow


@pytest.fixture
def flask_websub_hub(tmp_path: Path) -> Iterator[str]:
    """Flask-WebSub's hub at /hub on 127.0.0.1; its URL."""
    celery = celery_app.Celery("hub", broker="memory://", backend="cache+memory://")
    celery.conf.task_always_eager = True
    hub = flask_hub.Hub(flask_hub.SQLite3HubStorage(str(tmp_path / "hub.sqlite3")), celery)
    app = flask.Flask("flask-websub-hub")
    app.config["PUBLISH_SUPPORTED"] = True  # POST hub.mode=publish: tests only
    app.register_blueprint(hub.build_blueprint(url_prefix="/hub"))
    server = serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hub"
    finally:
        server.shutdown()


def test_our_subscriber_against_flask_websubs_hub(
    tmp_path: Path, feed_server: FeedServer, flask_websub_hub: str
) -> None:
    topic = feed_server.url(FEED_PATH)
    links = (("Link", f'<{flask_websub_hub}>; rel="hub", <{topic}>; rel="self"'),)
    feed_server.add(FEED_PATH, _document(1), "application/atom+xml", headers=links)
    port = _free_port()
    config = _config(tmp_path, port, topic, interval="6h")
    daemon = Daemon(config, port).start()
    try:
        wait_for(lambda: _subscription(tmp_path).get("state") == "active", 15, "verification")
        wait_for(lambda: len(_atom_ids(daemon)) == 1, 10, "the first poll's items")
        # The hub grants what we asked for (10 days) within its bounds (at most 31).
        assert _subscription(tmp_path)["lease_seconds"] == 864000
        polls = len(feed_server.seen(FEED_PATH))

        feed_server.add(FEED_PATH, _document(3), "application/atom+xml", headers=links)
        answer = httpx.post(flask_websub_hub, data={"hub.mode": "publish", "hub.topic": topic})
        assert answer.status_code == 202, answer.text
        wait_for(lambda: len(_atom_ids(daemon)) == 3, 5, "the distributed items in atom.xml")
        # Flask-WebSub fetched the topic itself (once); the daemon polled nothing.
        assert len(feed_server.seen(FEED_PATH)) == polls + 1
        assert "aggregator" not in feed_server.seen(FEED_PATH)[-1].headers.get("user-agent", "")
        assert 'aggregator_websub_pushes_total{result="valid"} 1.0' in daemon.get("/metrics").text
    finally:
        daemon.stop()

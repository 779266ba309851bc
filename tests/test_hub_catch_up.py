"""A delivery goes out with the document whose publish owed it, even from a daemon that has
not yet copied that publish: with several daemons on one store, the one holding a
delivery's claim need not be the one that published. In process, with a real SQLite store,
two output/ directories and the daemon's own publishing object."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from aggregator.config import load_config
from aggregator.daemon.publishing import Publishing
from aggregator.hub.client import Answer
from aggregator.hub.deliver import Deliveries
from aggregator.metrics import Metrics
from aggregator.poll import store_entries, sync_sources
from aggregator.publish import publish_timeline
from aggregator.server.files import PublishedFiles
from aggregator.settings import Config
from aggregator.snapshot import follow_published
from aggregator.store import open_store
from aggregator.store.adapter import AsyncStore
from aggregator.store.hub import HubSubscription
from tests.storedata import NOW, entry

BASE = "https://digest.example.org/"


class RecordingClient:
    """A callback client that takes every delivery (204) and keeps its body."""

    concurrency = 2

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def exchange(self, *args: Any, content: bytes = b"", **kwargs: Any) -> Answer:
        self.bodies.append(content)
        return Answer(204, b"")


def _elsewhere(config: Config, output_dir: Path) -> Config:
    return dataclasses.replace(
        config, publish=dataclasses.replace(config.publish, output_dir=output_dir)
    )


def test_a_daemon_delivers_what_another_published_not_its_own_older_copy(tmp_path: Path) -> None:
    config_path = tmp_path / "feeds.toml"
    config_path.write_text(
        f'[aggregator]\nbase_url = "{BASE}"\n[publish]\nmax_age = "3650d"\n'
        '[[feeds]]\nname = "a"\nurl = "https://a.example.org/feed.xml"\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    one = _elsewhere(config, tmp_path / "one")  # publishes
    two = _elsewhere(config, tmp_path / "two")  # holds the delivery's claim
    store = open_store(config.store.target)
    sync_sources(store, config.sources, NOW)
    store_entries(store, "a", [entry("1", published=NOW)], NOW)
    publish_timeline(one, store, NOW)
    follow_published(two.publish.output_dir, store)  # both serve the first version
    store_entries(store, "a", [entry("2", published=NOW + timedelta(minutes=1))], NOW)
    assert "atom.xml" in publish_timeline(one, store, NOW).changed  # two has not copied it
    topic = BASE + "atom.xml"
    store.hub_subscribe(
        HubSubscription(topic, "https://cb.example/x", None, NOW + timedelta(days=1)), NOW
    )
    store.hub_want([topic], NOW)  # what the publish of `one` owes its subscriber
    client = RecordingClient()
    metrics = Metrics()
    publishing = Publishing(
        config.store.target, config=lambda: two, metrics=metrics, clock=lambda: NOW, debounce=1
    )
    deliveries = Deliveries(
        AsyncStore(store),
        client,  # type: ignore[arg-type]
        config=lambda: two,
        files=PublishedFiles(two.publish.output_dir),
        metrics=metrics,
        clock=lambda: NOW,
        owner="two",
    )
    deliveries.catch_up = publishing.catch_up  # as the daemon wires them

    async def scenario() -> None:
        await deliveries._round()  # claims the delivery and sends it
        while deliveries.running:
            await asyncio.gather(*deliveries.running)
        await publishing.close(asyncio.get_running_loop().time() + 5, 5)

    try:
        asyncio.run(scenario())
        published = (one.publish.output_dir / "atom.xml").read_bytes()
        assert b"example.org/2" in published
        assert client.bodies == [published]
        assert (two.publish.output_dir / "atom.xml").read_bytes() == published
        [subscriber] = store.hub_subscribers()
        assert not subscriber.pending and subscriber.failures == 0
    finally:
        store.close()

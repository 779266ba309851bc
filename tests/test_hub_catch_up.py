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

import pytest

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


def _deliveries(
    store: Any, config: Config, client: RecordingClient, *, metrics: Metrics | None = None
) -> Deliveries:
    """The hub's deliveries of a daemon serving `config`'s output/, on `store`."""
    return Deliveries(
        AsyncStore(store),
        client,  # type: ignore[arg-type]
        config=lambda: config,
        files=PublishedFiles(config.publish.output_dir),
        metrics=metrics or Metrics(),
        clock=lambda: NOW,
        owner="me",
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
    deliveries = _deliveries(store, two, client, metrics=metrics)
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


def _one_delivery_owed(tmp_path: Path) -> tuple[Any, Config]:
    config_path = tmp_path / "feeds.toml"
    config_path.write_text(
        f'[aggregator]\nbase_url = "{BASE}"\n[websub]\ndelivery_timeout = "1s"\n'
        '[[feeds]]\nname = "a"\nurl = "https://a.example.org/feed.xml"\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    config.publish.output_dir.mkdir(parents=True)
    (config.publish.output_dir / "atom.xml").write_bytes(b"<feed/>")
    store = open_store(config.store.target)
    topic = BASE + "atom.xml"
    store.hub_subscribe(
        HubSubscription(topic, "https://cb.example/x", None, NOW + timedelta(days=1)), NOW
    )
    store.hub_want([topic], NOW)
    return store, config


@pytest.mark.parametrize("trouble", ["the copy failed", "the copy is slow"])
def test_a_daemon_that_cannot_catch_up_sends_nothing_and_tries_again_soon(
    tmp_path: Path, trouble: str
) -> None:
    """Not caught up (the store away for the copy, or a publish under way here longer than
    the delivery's timeout, past which its claim could run out and another daemon deliver
    it too): nothing is sent, and the delivery comes again at the next scan, no failure of
    the subscriber's."""
    store, config = _one_delivery_owed(tmp_path)
    client = RecordingClient()
    deliveries = _deliveries(store, config, client)

    async def catch_up() -> bool:
        if trouble == "the copy is slow":
            await asyncio.sleep(3)  # past the 1 s delivery timeout
        return trouble != "the copy failed"  # slow, then caught up

    deliveries.catch_up = catch_up

    async def scenario() -> None:
        await deliveries._round()
        while deliveries.running:
            await asyncio.gather(*deliveries.running)

    try:
        asyncio.run(scenario())
        assert client.bodies == []
        [subscriber] = store.hub_subscribers()
        assert subscriber.pending and subscriber.failures == 0
        assert subscriber.next_attempt is not None
        assert subscriber.next_attempt <= NOW + timedelta(seconds=10)
    finally:
        store.close()


def test_a_stop_gives_back_the_claim_of_a_delivery_waiting_to_catch_up(tmp_path: Path) -> None:
    """Stopped while its daemon catches up (a publish under way here): the delivery is not
    sent, and its claim is given back at once, for the next start or another daemon, rather
    than held until it runs out."""
    store, config = _one_delivery_owed(tmp_path)
    client = RecordingClient()
    deliveries = _deliveries(store, config, client)

    async def never() -> bool:
        await asyncio.Event().wait()
        return True

    deliveries.catch_up = never

    async def scenario() -> None:
        await deliveries._round()
        await asyncio.sleep(0.1)
        await deliveries.close()

    try:
        asyncio.run(scenario())
        assert client.bodies == []
        [subscriber] = store.hub_subscribers()
        assert subscriber.pending and subscriber.failures == 0
        later = NOW + timedelta(seconds=10)
        assert [d.topic for d in store.hub_claim(later, "other", later + timedelta(minutes=1), 2)]
    finally:
        store.close()


def test_no_copy_is_begun_once_publishing_stops(tmp_path: Path) -> None:
    """A copy begun for a delivery during a stop would hold the stop for as long as it
    takes (the stop waits for its publishing work): none is begun, and the delivery waits
    for the next start or another daemon."""
    store, config = _one_delivery_owed(tmp_path)
    store.close()
    publishing = Publishing(
        config.store.target,
        config=lambda: config,
        metrics=Metrics(),
        clock=lambda: NOW,
        debounce=1,
    )

    async def scenario() -> tuple[bool, bool, int]:
        before = await publishing.catch_up()
        ends = await publishing.publish_last(1)
        after = await publishing.catch_up()
        begun = len(publishing.running)
        await publishing.close(ends, 1)
        return before, after, begun

    assert asyncio.run(scenario()) == (True, False, 0)

"""A delivery that finds the hub's own host lookups all taken (callbacks whose DNS never
answers hold them) is tried again soon, and not counted against its subscriber: a failure
is the callback's, not ours. In process, with a real SQLite store and output/ directory."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.config import load_config
from aggregator.hub.client import CallbackBusy
from aggregator.hub.deliver import Deliveries
from aggregator.metrics import Metrics
from aggregator.server.files import PublishedFiles
from aggregator.store import open_store
from aggregator.store.adapter import AsyncStore
from aggregator.store.hub import HubSubscription

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
BASE = "https://digest.example.org/"


class BusyClient:
    """A callback client whose lookups are all taken."""

    concurrency = 2

    def __init__(self) -> None:
        self.asked = 0

    async def exchange(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        raise CallbackBusy("too many callback host lookups under way; try again later")


def test_a_busy_lookup_is_no_failure_of_the_subscriber(tmp_path: Path) -> None:
    config_path = tmp_path / "feeds.toml"
    config_path.write_text(
        f'[aggregator]\nbase_url = "{BASE}"\n[websub]\nmax_failures = 1\n'
        '[[feeds]]\nname = "a"\nurl = "https://a.example.org/feed.xml"\n',
        encoding="utf-8",
    )
    config = load_config(config_path)
    output = tmp_path / "output"
    output.mkdir()
    (output / "atom.xml").write_bytes(b"<feed/>")
    store = open_store(tmp_path / "state.db")
    topic = BASE + "atom.xml"
    store.hub_subscribe(
        HubSubscription(topic, "https://cb.example/x", None, NOW + timedelta(days=1)), NOW
    )
    store.hub_want([topic], NOW)
    client = BusyClient()
    deliveries = Deliveries(
        AsyncStore(store),
        client,  # type: ignore[arg-type]
        config=lambda: config,
        files=PublishedFiles(output),
        metrics=Metrics(),
        clock=lambda: NOW,
        owner="me",
    )

    async def scenario() -> None:
        [delivery] = store.hub_claim(NOW, "me", NOW + timedelta(minutes=1), 2)
        await deliveries._deliver(delivery)

    asyncio.run(scenario())
    assert client.asked == 1
    [subscriber] = store.hub_subscribers()  # max_failures = 1: a counted failure drops it
    assert subscriber.failures == 0 and subscriber.pending
    assert subscriber.next_attempt is not None
    assert subscriber.next_attempt <= NOW + timedelta(seconds=10)
    store.close()

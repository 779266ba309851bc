"""The hub as the daemon holds it: the `/websub` route, the `Link` header of each feed it
serves, what a publish changed, its delivery loop, its stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.routing import Route

from aggregator.hub.client import CallbackClient
from aggregator.hub.deliver import Deliveries
from aggregator.hub.endpoint import websub_route
from aggregator.hub.subscribe import Subscriptions
from aggregator.hub.topics import is_feed_file, link_header, topic_url
from aggregator.metrics import Metrics
from aggregator.poll import Clock
from aggregator.server.files import PublishedFiles
from aggregator.settings import HUB_PATH, Config
from aggregator.store.adapter import AsyncStore

log = logging.getLogger("aggregator")


class Hub:
    """The built-in WebSub hub, and the pings of external hubs.

    `delivery_concurrency` is read at start (it sizes the connection pool); the other
    `[websub]` settings follow each reload.
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        config: Callable[[], Config],
        files: PublishedFiles,
        metrics: Metrics,
        clock: Clock,
        owner: str,
    ) -> None:
        self._config = config
        started = config()
        self.client = CallbackClient(
            concurrency=started.websub.delivery_concurrency, user_agent=started.poll.user_agent
        )
        self.subscriptions = Subscriptions(
            store,
            self.client,
            config=config,
            published=lambda name: files.path_of(name) is not None,
            metrics=metrics,
            clock=clock,
        )
        self.deliveries = Deliveries(
            store,
            self.client,
            config=config,
            files=files,
            metrics=metrics,
            clock=clock,
            owner=owner,
        )
        self._loop: asyncio.Task[None] | None = None

    def route(self) -> Route:
        """`/websub`: subscription requests (404 while no hub runs)."""
        return websub_route(self.subscriptions.handle, "/" + HUB_PATH)

    def link_header(self, name: str) -> str | None:
        """The `Link` header of the published file `name`: its hubs and itself, for a feed
        while hubs are advertised; None otherwise."""
        site = self._config().site
        if not site.hubs or not is_feed_file(name):
            return None
        return link_header(site.hubs, topic_url(site.base_url, name))

    def published(self, changed: Sequence[str]) -> None:
        """This daemon's publish rewrote `changed` (names under output/)."""
        self.deliveries.published(changed)

    def start(self) -> None:
        self._loop = asyncio.create_task(self.deliveries.run(), name="websub-deliveries")

    async def close(self) -> None:
        """Stop verifying and delivering, and close the connections."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        await self.subscriptions.close()
        await self.deliveries.close()
        await self.client.close()

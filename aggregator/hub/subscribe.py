"""The `/websub` endpoint's work: a subscription request checked, answered at once, and its
intent verified in the background (WebSub §5).

Answered before any connection to the callback: a malformed request, a topic we do not
publish, a callback that leads to a refused address (each 4xx with its reason), too many
requests for one topic in a minute (429), too many subscribers to it, too many
verifications under way (503). Otherwise 202, and a GET to the callback with `hub.mode`,
`hub.topic`, a random `hub.challenge` and, to subscribe, the `hub.lease_seconds` granted;
the subscription is made (or ended) only if the answer is a 2xx whose body is the challenge.
A newer request for one topic and callback replaces a verification still under way.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from aggregator.errors import AggregatorError
from aggregator.hub.client import (
    CallbackBusy,
    CallbackClient,
    CallbackError,
    CallbackRefused,
    CallbackUnresolved,
)
from aggregator.hub.requests import Refusal, SubscriptionRequest, lease_seconds, read_request
from aggregator.hub.rules import challenge_echoed
from aggregator.hub.topics import topic_file, topic_url
from aggregator.metrics import Metrics
from aggregator.poll import Clock
from aggregator.settings import Config
from aggregator.store.adapter import AsyncStore
from aggregator.store.hub import HubSubscription
from aggregator.urls import redact_url

log = logging.getLogger("aggregator")

MAX_PENDING = 256  # verifications under way at once, all topics together
NO_HUB = (
    "this aggregator runs no WebSub hub: its operator has not set [aggregator] base_url "
    "(or has set [websub] builtin_hub = false)"
)


@dataclass(frozen=True)
class Reply:
    """What `/websub` answers: a status and a line of plain text."""

    status: int
    text: str


class RateWindow:
    """At most `limit` events per key in any `window` seconds (a sliding window)."""

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str, limit: int) -> bool:
        """Count an event for `key` unless `limit` are already in the window."""
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) >= limit:
            return False
        events.append(now)
        return True


def with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """`url` with `params` added to its query, which it keeps (§5.3)."""
    joiner = "&" if "?" in url else "?"
    return url + (joiner if not url.endswith(("?", "&")) else "") + urlencode(params)


class Subscriptions:
    """Subscription requests for the topics `published` says exist, verified in the background."""

    def __init__(
        self,
        store: AsyncStore,
        client: CallbackClient,
        *,
        config: Callable[[], Config],
        published: Callable[[str], bool],
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._store = store
        self._client = client
        self._config = config
        self._published = published
        self._metrics = metrics
        self._clock = clock
        self._rates = RateWindow()
        self.pending: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def handle(self, fields: Sequence[tuple[str, str]]) -> Reply:
        """Check a request; start its verification and answer 202, or refuse it."""
        config = self._config()
        if config.websub.hub_url is None:
            return Reply(404, NO_HUB)
        request = read_request(fields, config.websub)
        if isinstance(request, Refusal):
            return Reply(request.status, request.reason)
        name = topic_file(config.site.base_url, request.topic)
        if name is None or not self._published(name):
            return Reply(404, f"hub.topic {request.topic} is not a feed this hub publishes")
        # One topic per feed, named as its self link names it: an IRI `base_url`'s feed
        # asked for as written is the same feed (its caps, its subscribers, its deliveries).
        request = replace(request, topic=topic_url(config.site.base_url, name))
        refused = await self._too_many(request) or await self._callback_refusal(request, config)
        if refused is not None:
            return refused
        key = (request.topic, request.callback)
        earlier = self.pending.pop(key, None)
        if earlier is not None:
            earlier.cancel()
        task = asyncio.create_task(self._verify_logged(request), name="websub-verify")
        self.pending[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return Reply(202, f"accepted: the hub will verify the intent at {request.callback}")

    async def _too_many(self, request: SubscriptionRequest) -> Reply | None:
        """Too many requests, verifications or subscribers: the request waits for later."""
        websub = self._config().websub
        if not self._rates.allow(request.topic, websub.requests_per_minute):
            return Reply(429, "too many subscription requests for this topic; try again later")
        if (
            len(self.pending) >= MAX_PENDING
            and (request.topic, request.callback) not in self.pending
        ):
            return Reply(503, "too many verifications under way; try again later")
        if request.mode == "subscribe":
            try:
                count = await self._store.run(
                    lambda s: s.hub_subscriber_count(request.topic, self._clock(), request.callback)
                )
            except AggregatorError as e:
                log.error("websub: cannot count the subscribers of %s: %s", request.topic, e)
                return Reply(503, "the hub's store is unavailable; try again later")
            if count >= websub.max_subscribers:
                return Reply(403, "this topic has as many subscribers as the hub takes")
        return None

    async def _callback_refusal(self, request: SubscriptionRequest, config: Config) -> Reply | None:
        """Where the callback leads, checked before we answer: a refused address is the
        subscriber's to know now, not a verification that silently never comes."""
        websub = config.websub
        try:
            async with asyncio.timeout(websub.delivery_timeout.total_seconds()):
                await self._client.resolve(
                    request.callback,
                    allow_private=websub.allow_private_callbacks,
                    verification=True,
                )
        except TimeoutError:
            return Reply(400, "hub.callback: its host did not resolve in time")
        except CallbackBusy as e:
            return Reply(503, str(e))
        except CallbackUnresolved as e:
            return Reply(400, str(e))
        except CallbackRefused as e:
            return Reply(403, str(e))
        return None

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self.pending.get(key) is task:
            del self.pending[key]

    async def _verify_logged(self, request: SubscriptionRequest) -> None:
        try:
            await self._verify(request)
        except Exception:  # a bug: said, and the subscriber may ask again
            log.exception("websub: verifying %s failed", redact_url(request.callback))

    async def _verify(self, request: SubscriptionRequest) -> None:
        """Verify intent (§5.3) and, if confirmed, make or end the subscription."""
        websub = self._config().websub
        challenge = secrets.token_urlsafe(32)
        params = [
            ("hub.mode", request.mode),
            ("hub.topic", request.topic),
            ("hub.challenge", challenge),
        ]
        if request.mode == "subscribe":
            params.append(("hub.lease_seconds", str(lease_seconds(request.lease))))
        shown = redact_url(request.callback)
        try:
            answer = await self._client.exchange(
                "GET",
                with_query(request.callback, params),
                allow_private=websub.allow_private_callbacks,
                timeout=websub.delivery_timeout.total_seconds(),
                verification=True,
            )
        except CallbackError as e:
            self._metrics.websub_verifications.labels(outcome="failed").inc()
            log.info("websub: %s of %s to %s not verified: %s", request.mode, shown,
                     request.topic, e)  # fmt: skip
            return
        answered = 200 <= answer.status < 300
        if not (answered and challenge_echoed(answer.body, challenge)):
            self._metrics.websub_verifications.labels(outcome="refused").inc()
            why = "the challenge not echoed" if answered else f"HTTP {answer.status}"
            log.info("websub: %s of %s to %s not confirmed (%s)", request.mode, shown,
                     request.topic, why)  # fmt: skip
            return
        try:
            await self._confirmed(request)
        except AggregatorError as e:
            log.error(
                "websub: %s of %s to %s not stored: %s", request.mode, shown, request.topic, e
            )
            return
        self._metrics.websub_verifications.labels(outcome="confirmed").inc()
        done = "subscribed to" if request.mode == "subscribe" else "unsubscribed from"
        log.info("websub: %s %s %s", shown, done, request.topic)

    async def _confirmed(self, request: SubscriptionRequest) -> None:
        if request.mode == "unsubscribe":
            await self._store.run(lambda s: s.hub_unsubscribe(request.topic, request.callback))
            return
        now = self._clock()
        subscription = HubSubscription(
            request.topic, request.callback, request.secret, now + request.lease
        )
        await self._store.run(lambda s: s.hub_subscribe(subscription, now))

    async def close(self) -> None:
        """Cancel the verifications under way (a stop); their subscribers ask again."""
        tasks = list(self.pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

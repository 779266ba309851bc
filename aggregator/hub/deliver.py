"""Content distribution (WebSub §7): after a publish that changed a topic, its document to
every subscriber, off the paths of polling and serving.

The daemon that published marks the changed topics' live subscriptions as owed a delivery
(`hub_want`) and claims them at once; every daemon also looks for due deliveries every
`SCAN_SECONDS` (retries, and those a stopped daemon left), so with several daemons on one
database each delivery goes out once, from whichever holds its claim: nearly always the
one that published. A delivery is a POST of the topic's current document as this daemon
serves it, once its output/ has caught up with the store's snapshot (`catch_up`: a daemon
that had not yet copied another's publish sent the document as it was before, the change
left out), its media type, `Link` headers (hubs and `rel="self"`) and, with a secret,
`X-Hub-Signature: sha256=...`; a 2xx is success. At most `delivery_concurrency` run at
once (verifications share the slots), each within `delivery_timeout`; a failure is retried
with backoff, and a subscriber failing `max_failures` times in a row, or answering 410, is
dropped (`rules.after_failure`). Leases that ended are removed here too.

External hubs (`[websub] hubs`) are told of each change (`hub.mode=publish`, `hub.url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from aggregator.errors import AggregatorError
from aggregator.hub.client import CallbackBusy, CallbackClient, CallbackError
from aggregator.hub.rules import Drop, after_failure, signature
from aggregator.hub.topics import changed_topics, link_header, topic_file
from aggregator.metrics import Metrics
from aggregator.poll import Clock
from aggregator.server.files import PublishedFiles
from aggregator.settings import Config
from aggregator.store.adapter import AsyncStore
from aggregator.store.hub import STATES, HubDelivery
from aggregator.urls import redact_url

log = logging.getLogger("aggregator")

SCAN_SECONDS = 2.0  # how often a daemon looks for due deliveries
HOUSEKEEPING_SECONDS = 5.0  # how often ended leases are removed and the gauges counted
MARK_GRACE_SECONDS = 2.0  # at a stop, for the last publish's deliveries to be marked owed


class Deliveries:
    """Delivers what a publish changed; `run()` is its loop, `published()` wakes it."""

    def __init__(
        self,
        store: AsyncStore,
        client: CallbackClient,
        *,
        config: Callable[[], Config],
        files: PublishedFiles,
        metrics: Metrics,
        clock: Clock,
        owner: str,
    ) -> None:
        self._store = store
        self._client = client
        self._config = config
        self._files = files
        # Copies what another daemon sharing the store published into this one's output/
        # (and waits for a publish under way here), False if that failed: what is delivered
        # is at least the version whose publish owed the delivery, which was stored before
        # it was owed. Set by the daemon (`Publishing.catch_up`), which makes the hub first.
        self.catch_up: Callable[[], Coroutine[Any, Any, bool]] | None = None
        self._metrics = metrics
        self._clock = clock
        self._owner = owner
        self._wake = asyncio.Event()
        self._housekept: float | None = None  # time.monotonic() of the last housekeeping
        self.running: set[asyncio.Task[None]] = set()  # deliveries, marks and pings

    def published(self, changed: Sequence[str]) -> None:
        """A publish of this daemon rewrote the files `changed`: deliver the topics among
        them, and tell the external hubs."""
        config = self._config()
        topics = changed_topics(config.site.base_url, changed)
        if not topics or not config.site.hubs:
            return
        if config.websub.hub_url is not None:
            self._keep(self._want(topics), "websub-want")
        for hub in config.websub.hubs:
            self._keep(self._ping(hub, topics), "websub-ping")

    def _keep(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(_logged(work), name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def _want(self, topics: tuple[str, ...]) -> None:
        try:
            owed = await self._store.run(lambda s: s.hub_want(topics, self._clock()))
        except AggregatorError as e:
            log.error("websub: cannot mark deliveries of %s: %s", ", ".join(topics), e)
            return
        if owed:
            self._wake.set()

    async def run(self) -> None:
        """Deliver what is due, when woken and every `SCAN_SECONDS`, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SCAN_SECONDS)
            self._wake.clear()
            try:
                await self._round()
            except AggregatorError as e:  # the store is away: the next round tries again
                log.error("websub: delivering failed: %s", e)
            except Exception:  # a bug: said, and the next round tries again
                log.exception("websub: delivering failed")

    async def _round(self) -> None:
        config = self._config()
        if self._housekept is None or time.monotonic() - self._housekept >= HOUSEKEEPING_SECONDS:
            self._housekept = time.monotonic()
            await self._housekeeping()
        if config.websub.hub_url is None:
            return
        deliveries = [t for t in self.running if t.get_name() == "websub-deliver"]
        room = self._client.concurrency - len(deliveries)  # as many as there are slots
        if room <= 0:
            return
        now = self._clock()
        # A claim outlives its delivery: a wait for a slot (an external hub's ping, at most
        # one timeout) and the delivery's own timeout, with room to record the outcome.
        until = now + config.websub.delivery_timeout * 3 + timedelta(seconds=30)
        claimed = await self._store.run(lambda s: s.hub_claim(now, self._owner, until, room))
        if not claimed:
            return
        # Once for the round's deliveries (not kept with them: `close` cancels those, and
        # the copy is the publishing side's, which awaits it at its stop).
        caught_up = asyncio.ensure_future(self.catch_up()) if self.catch_up else None
        for delivery in claimed:
            self._keep(self._deliver(delivery, caught_up), "websub-deliver")

    async def _housekeeping(self) -> None:
        """Remove the subscriptions whose lease ended; count the rest, by state."""
        now = self._clock()
        expired = await self._store.run(lambda s: s.hub_expire(now))
        if expired:
            log.info("websub: %d subscriptions ended with their lease", expired)
        states = await self._store.run(lambda s: s.hub_states(now))
        for state in STATES:
            self._metrics.websub_subscribers.labels(state=state).set(states.get(state, 0))

    async def _deliver(
        self, delivery: HubDelivery, caught_up: asyncio.Future[bool] | None = None
    ) -> None:
        config = self._config()
        if caught_up is not None:
            # Within the delivery's timeout, so its claim cannot run out meanwhile (another
            # daemon would deliver it too); not caught up (the copy failed, a long publish
            # under way): tried again soon, no failure of the subscriber's.
            wait = config.websub.delivery_timeout.total_seconds()
            try:
                done, _ = await asyncio.wait([caught_up], timeout=wait)  # shared: not cancelled
            except asyncio.CancelledError:  # a stop: the claim is given back, not left to run out
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._later(delivery))
                raise
            if not done or caught_up.cancelled() or caught_up.exception() or not caught_up.result():
                await self._later(delivery)
                return
        name = topic_file(config.site.base_url, delivery.topic)
        version = None if name is None else await self._files.get(name)
        if version is None:
            await self._drop(delivery, "its topic is no longer published")
            return
        headers = {
            "Content-Type": version.media_type,
            "Link": link_header(config.site.hubs, delivery.topic),
        }
        if delivery.secret:
            headers["X-Hub-Signature"] = signature(delivery.secret, version.body)
        try:
            answer = await self._client.exchange(
                "POST",
                delivery.callback,
                allow_private=config.websub.allow_private_callbacks,
                timeout=config.websub.delivery_timeout.total_seconds(),
                content=version.body,
                headers=headers,
            )
        except CallbackBusy:  # our own lookups all taken: no failure of the subscriber's
            await self._later(delivery)
            return
        except CallbackError as e:
            await self._failed(delivery, str(e))
            return
        if 200 <= answer.status < 300:
            self._metrics.websub_deliveries.labels(outcome="ok").inc()
            await self._store.run(lambda s: s.hub_delivered(delivery, self._owner))
        else:
            await self._failed(delivery, f"HTTP {answer.status}", gone=answer.status == 410)

    async def _failed(self, delivery: HubDelivery, why: str, *, gone: bool = False) -> None:
        self._metrics.websub_deliveries.labels(outcome="failed").inc()
        step = after_failure(delivery.failures, self._config().websub, self._clock(), gone=gone)
        if isinstance(step, Drop):
            await self._drop(delivery, f"{step.reason} (the last: {why})")
            return
        await self._store.run(lambda s: s.hub_failed(delivery, self._owner, step.failures, step.at))
        log.info(
            "websub: delivery of %s to %s failed (%s); retrying at %s", delivery.topic,
            redact_url(delivery.callback), why, step.at.isoformat(timespec="seconds"),
        )  # fmt: skip
        wait = (step.at - self._clock()).total_seconds()
        asyncio.get_running_loop().call_later(max(0.0, wait), self._wake.set)

    async def _later(self, delivery: HubDelivery) -> None:
        """Try `delivery` again at the next scan, its failures in a row as they were."""
        at = self._clock() + timedelta(seconds=SCAN_SECONDS)
        await self._store.run(lambda s: s.hub_failed(delivery, self._owner, delivery.failures, at))

    async def _drop(self, delivery: HubDelivery, why: str) -> None:
        await self._store.run(lambda s: s.hub_unsubscribe(delivery.topic, delivery.callback))
        log.warning(
            "websub: dropped the subscription of %s to %s: %s",
            redact_url(delivery.callback), delivery.topic, why,
        )  # fmt: skip

    async def _ping(self, hub: str, topics: tuple[str, ...]) -> None:
        """Tell an external hub the topics changed (one request each: not every hub takes a
        list)."""
        timeout = self._config().websub.delivery_timeout.total_seconds()
        for topic in topics:
            form = urlencode([("hub.mode", "publish"), ("hub.url", topic)]).encode("ascii")
            try:
                answer = await self._client.exchange(
                    "POST",
                    hub,
                    allow_private=True,  # named by the operator, not by a stranger
                    timeout=timeout,
                    content=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
            except CallbackError as e:
                log.warning("websub: hub %s not told of %s: %s", redact_url(hub), topic, e)
                continue
            if not 200 <= answer.status < 300:
                log.warning("websub: hub %s answered HTTP %d for %s", redact_url(hub),
                            answer.status, topic)  # fmt: skip

    async def close(self, grace: float = MARK_GRACE_SECONDS) -> None:
        """Stop what is under way. The marks of the last publish's changes are written first
        (within `grace`), so a stop cannot lose what the subscribers are owed: the next
        start, or another daemon, delivers them. A delivery cut short while it waited for
        this daemon to catch up gives its claim back; one cut short while sending keeps it
        until it runs out, then it is delivered again."""
        marks = [t for t in self.running if t.get_name() == "websub-want"]
        if marks:
            await asyncio.wait(marks, timeout=grace)
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    """`work`, its failure logged: the store away (the delivery's claim runs out and it is
    tried again), or a bug."""
    try:
        await work
    except AggregatorError as e:
        log.error("websub: %s", e)
    except Exception:
        log.exception("websub: a delivery failed")

"""The daemon's WebSub subscriber: subscriptions made, renewed and ended, and the callback
endpoint (`/websub/callback/<token>`) that hubs verify intent at and push content to.

What to do is decided by `websub.rules` (pure); this module does it. After each poll
(`after_poll`), the poll's discovery and the stored subscription give the next step: a
subscription is stored (pending) before its request goes to the hub, so the hub's
verification, which may arrive before the hub's answer does, finds it. Every write is
conditional on the row read (`save_subscription`), so daemons sharing a store never make
two subscriptions for one source; any of them answers the hub, from the store.

A push is read with the bounds of a fetch (`[poll] max_bytes`, after bounded decompression,
within `[poll] timeout`), authenticated (`websub.signature`), parsed and stored through the
poll path (`poll.take_push`), and answered 202; never more than `[poll] concurrency` at
once. A push that is no feed has the source polled instead. A push whose signature is
wrong or missing is answered 202 too (as the spec asks), stored nowhere, and logged once
per source and hour.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aggregator.errors import AggregatorError, FetchError
from aggregator.fetch import BoundedDecoder
from aggregator.metrics import Metrics
from aggregator.poll import Clock, Known, Poller, SourceReport, about, take_push
from aggregator.settings import Config, SourceConfig
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import PushState, Reschedule, Subscription
from aggregator.urls import as_uri, redact_url
from aggregator.websub import rules
from aggregator.websub.discovery import Discovery
from aggregator.websub.hubs import HubClient, HubRequest, resolves_to_special
from aggregator.websub.signature import signature_problem

log = logging.getLogger("aggregator")

CALLBACK_PATH = "/websub/callback/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
REJECTION_LOG_SECONDS = 3600.0  # a source's rejected pushes: one log line an hour


@dataclass(frozen=True)
class Hooks:
    """What the subscriber asks of the rest of the daemon."""

    poller: Callable[[], Poller]  # the poll path's tools, for a push
    claim_soon: Callable[[], None]  # claim due sources now (one was just made due)
    on_stored: Callable[[], None]  # a push stored something: publish soon
    spawn: Callable[[Coroutine[Any, Any, None]], object]  # a background task, cancelled at stop


class Subscriber:
    """Subscriptions to the hubs sources name, and the callback hubs call."""

    def __init__(
        self,
        store: AsyncStore,
        *,
        config: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
        hooks: Hooks,
    ) -> None:
        self.store = store
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._hooks = hooks
        poll = config().poll
        self._hubs = HubClient(timeout=poll.timeout.total_seconds(), user_agent=poll.user_agent)
        self._pushes = asyncio.Semaphore(poll.concurrency)  # pushes read, parsed and stored
        self._rejections: dict[str, float] = {}  # source → when one was last logged
        self._refreshing = False  # a refresh_metrics is under way

    async def close(self) -> None:
        await self._hubs.__aexit__(None, None, None)

    def routes(self) -> list[Route]:
        return [Route(CALLBACK_PATH + "{token}", self.callback, methods=["GET", "POST"])]

    def _source(self, name: str) -> SourceConfig | None:
        return next((s for s in self._config().sources if s.name == name), None)

    # -- after a poll ----------------------------------------------------------------------

    def after_poll(self, source: SourceConfig, report: SourceReport) -> None:
        """Take the next step the poll calls for, in the background (a hub may be slow)."""
        if self._config().websub.subscribing:
            self._hooks.spawn(self._step(source, report.push, report.subscription))

    async def _step(
        self, source: SourceConfig, found: Discovery | None, known: Known | None = None
    ) -> None:
        """The step the poll's discovery calls for; `known`: the subscription the poll read
        (else read here). A decision on a stale one is harmless: each write is a
        compare-and-set against it (`save_subscription`)."""
        try:
            sub = known.sub if known is not None else await self.store.subscription(source.name)
            step = rules.next_step(sub, found, source.url, self._clock())
            if step is not None:
                await self._take(step, source, sub)
        except AggregatorError as e:  # the store is away: the next poll decides again
            log.error("%s: WebSub: %s", source.name, e, extra=about(source.name))

    async def _take(self, step: rules.Step, source: SourceConfig, sub: Subscription | None) -> None:
        if isinstance(step, rules.Subscribe):
            await self._subscribe(source, step, sub)
            return
        assert sub is not None
        if isinstance(step, rules.Renew):
            await self._request(
                replace(sub, state=PushState.RENEWING, requested=self._clock()), sub
            )
        elif isinstance(step, rules.Expire):
            expired = replace(sub, state=PushState.EXPIRED, last_error="the lease ended unrenewed")
            if await self.store.save_subscription(expired, sub):
                log.warning(
                    "%s: WebSub subscription at %s lapsed; polling on the source's schedule",
                    source.name,
                    redact_url(sub.hub),
                    extra=about(source.name),
                )
        else:
            await self.unsubscribe(sub)

    async def _subscribe(
        self, source: SourceConfig, step: rules.Subscribe, was: Subscription | None
    ) -> None:
        """A new subscription: new token, new secret; refused for a hub at a special address
        unless allowed."""
        now = self._clock()
        sub = Subscription(
            source=source.name,
            source_url=source.url,
            hub=step.hub,
            topic=step.topic,
            token=secrets.token_urlsafe(32),
            secret=secrets.token_urlsafe(32),
            state=PushState.PENDING,
            requested=now,
        )
        refused = await self._hub_refused(source, step.hub)
        if refused is not None:
            await self._failed(replace(sub, state=PushState.FAILED, last_error=refused), was)
            return
        await self._request(sub, was)

    async def _hub_refused(self, source: SourceConfig, hub: str) -> str | None:
        """Why `hub` is not asked (a special address, for a source that is not at one)."""
        if self._config().websub.allow_private_hubs:
            return None
        try:
            if not await resolves_to_special(hub):
                return None
            if await resolves_to_special(source.url):
                return None  # a private setup: the source is on such a network itself
        except OSError as e:
            return f"the hub's address cannot be checked: {e}"
        host = urlsplit(hub).hostname
        return (
            f"the hub {host} is at a loopback, private or link-local address; not asked "
            "([websub] allow_private_hubs = true allows it)"
        )

    async def _request(self, sub: Subscription, was: Subscription | None) -> None:
        """Store `sub` (pending or renewing), then ask its hub; a refusal is stored."""
        if not await self.store.save_subscription(sub, was):
            return  # another daemon decided first
        problem = await self._hubs.send(
            self._hub_request(sub, "subscribe"), special_allowed=await self._private(sub)
        )
        if problem is None:
            log.info(
                "%s: WebSub: asked %s to %s %s",
                sub.source,
                redact_url(sub.hub),
                "renew" if sub.state is PushState.RENEWING else "push",
                redact_url(sub.topic),
                extra=about(sub.source),
            )
            return
        # A renewal refused: the subscription holds until its lease ends (then it lapses).
        state = PushState.RENEWING if sub.state is PushState.RENEWING else PushState.FAILED
        await self._failed(replace(sub, state=state, last_error=problem), sub)

    async def _failed(self, sub: Subscription, was: Subscription | None) -> None:
        if await self.store.save_subscription(sub, was):
            log.warning(
                "%s: WebSub subscription at %s: %s",
                sub.source,
                redact_url(sub.hub),
                sub.last_error,
                extra=about(sub.source),
            )

    async def _private(self, sub: Subscription) -> bool:
        """Whether `sub`'s hub may be at a special address: allowed by the configuration, or
        the source itself is at one (a private setup)."""
        if self._config().websub.allow_private_hubs:
            return True
        try:
            return await resolves_to_special(sub.source_url)
        except OSError:
            return False

    def _hub_request(self, sub: Subscription, mode: str) -> HubRequest:
        base = self._config().websub.callback_base or ""
        return HubRequest(
            hub=sub.hub,
            mode=mode,
            topic=sub.topic,
            callback=as_uri(base + sub.token),  # a URI, whatever the operator wrote
            lease_seconds=int(self._config().websub.subscription_lease.total_seconds()),
            secret=sub.secret if mode == "subscribe" else None,
        )

    async def unsubscribe(self, sub: Subscription) -> None:
        """Ask the hub to end `sub`; forgotten at once if it cannot be asked (a push that
        still comes is then answered 410 Gone, which ends it too)."""
        ending = replace(sub, state=PushState.UNSUBSCRIBING, requested=self._clock())
        if not await self.store.save_subscription(ending, sub):
            return
        if sub.state not in (PushState.PENDING, PushState.ACTIVE, PushState.RENEWING):
            await self.store.delete_subscription(sub.source, sub.token)
            return
        problem = await self._hubs.send(
            self._hub_request(ending, "unsubscribe"), special_allowed=await self._private(sub)
        )
        if problem is not None:
            await self.store.delete_subscription(sub.source, sub.token)
        log.info(
            "%s: WebSub: unsubscribing from %s%s",
            sub.source,
            redact_url(sub.hub),
            f" ({problem}; forgotten)" if problem else "",
            extra=about(sub.source),
        )

    async def reconcile(self) -> None:
        """At start and after a reload: end the subscriptions of sources removed, of sources
        whose URL changed, and all of them when this daemon no longer subscribes."""
        config = self._config()
        urls = {s.name: s.url for s in config.sources}
        try:
            for sub in await self.store.subscriptions():
                wanted = config.websub.subscribing and urls.get(sub.source) == sub.source_url
                if not wanted and sub.state is not PushState.UNSUBSCRIBING:
                    await self.unsubscribe(sub)
        except AggregatorError as e:
            log.error("WebSub: could not review subscriptions: %s", e)
        await self.refresh_metrics()

    async def refresh_soon(self) -> None:
        """The scheduler's job: start `refresh_metrics` in the background unless one is
        under way (waiting, perhaps, for a database that is away). The scheduler itself
        never waits, so it never skips a run with a warning."""
        if not self._refreshing:
            self._hooks.spawn(self.refresh_metrics())

    async def refresh_metrics(self) -> None:
        """The subscriptions-by-state gauge, from the store (other daemons' work included)."""
        self._refreshing = True
        try:
            subs = await self.store.subscriptions()
        except AggregatorError:
            return  # the store is away; /healthz says so
        finally:
            self._refreshing = False
        configured = {s.name for s in self._config().sources}
        counts = dict.fromkeys(PushState, 0)
        for sub in subs:
            if sub.source in configured:
                counts[sub.state] += 1
        for state, count in counts.items():
            self._metrics.subscriptions.labels(state=str(state)).set(count)

    async def _poll_soon(self, name: str) -> None:
        """Make the source due now (a push that is no feed, a denial), and claim it."""
        now = self._clock()
        state = await self.store.source_state(name)
        if state is not None and state.next_poll is not None and state.next_poll > now:
            await self.store.reschedule([Reschedule(name, state.next_poll, now)])
        self._hooks.claim_soon()

    # -- the callback ----------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            sub = await self.store.subscription_by_token(token) if _TOKEN.fullmatch(token) else None
            if request.method == "GET":
                return await self._verify(sub, request)
            return await self._push(sub, request)
        except AggregatorError as e:  # the store is away: the hub retries later
            log.error("WebSub callback: %s", e)
            return PlainTextResponse("unavailable\n", status_code=503)

    async def _verify(self, sub: Subscription | None, request: Request) -> Response:
        """Verification of intent (or a denial): answered only for what we asked."""
        query = {k: v for k, v in request.query_params.items() if k.startswith("hub.")}
        asked = self._config().websub.subscription_lease
        verdict = rules.verify_intent(sub, query, self._clock(), asked)
        if sub is None or verdict.body is None:
            return PlainTextResponse("not found\n", status_code=404)
        if verdict.update is not None and not await self.store.save_subscription(
            verdict.update, sub
        ):
            return PlainTextResponse("not found\n", status_code=404)  # changed meanwhile
        if verdict.delete:
            await self.store.delete_subscription(sub.source, sub.token)
        self._log_verdict(sub, verdict)
        if verdict.poll_now:
            await self._poll_soon(sub.source)
        await self.refresh_metrics()
        return PlainTextResponse(verdict.body)

    def _log_verdict(self, sub: Subscription, verdict: rules.Verdict) -> None:
        new = verdict.update
        if new is not None and new.state is PushState.ACTIVE:
            log.info(
                "%s: WebSub: %s pushes it until %s",
                sub.source,
                redact_url(sub.hub),
                f"{new.lease_expires:%Y-%m-%d %H:%M:%S} UTC",
                extra=about(sub.source),
            )
        elif new is not None:
            log.warning("%s: WebSub: %s", sub.source, new.last_error, extra=about(sub.source))
        else:
            log.info("%s: WebSub: unsubscribed", sub.source, extra=about(sub.source))

    async def _push(self, sub: Subscription | None, request: Request) -> Response:
        """A content distribution: 410 for a subscription we do not hold, else 202."""
        source = self._source(sub.source) if sub is not None else None
        if sub is None or source is None:
            return PlainTextResponse("no such subscription\n", status_code=410)
        refusal = rules.push_refusal(sub, request.headers.get("link", ""))
        if refusal is not None and sub.state is PushState.UNSUBSCRIBING:
            return PlainTextResponse("no such subscription\n", status_code=410)
        async with self._pushes:
            try:
                bodies = await self._read(request)
            except FetchError as e:
                self._rejected(sub, str(e))
                return PlainTextResponse(f"{e}\n", status_code=413)
            problem = refusal or signature_problem(
                request.headers.get("x-hub-signature"),
                sub.secret,
                bodies,
                allow_sha1=self._config().websub.allow_sha1,
            )
            if problem is not None:
                self._rejected(sub, problem)
                return PlainTextResponse("accepted\n", status_code=202)
            self._metrics.pushes.labels(result="valid").inc()
            headers = {"content-type": request.headers.get("content-type", "")}
            # Here, not in the background: what waits is bounded by the semaphore.
            await self._store_push(source, bodies[-1], headers, sub.topic)
        return PlainTextResponse("accepted\n", status_code=202)

    async def _read(self, request: Request) -> tuple[bytes, ...]:
        """The body as received (at most `[poll] max_bytes`, within `[poll] timeout`;
        FetchError past either), and decoded when it says it is compressed (at most
        `max_bytes` too). A body that does not decode is taken as it came: hubs that relay
        the topic's own headers (Flask-WebSub) send a decoded body marked `gzip`."""
        poll = self._config().poll
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > poll.max_bytes:
            raise FetchError(f"body too large (Content-Length {declared})")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(poll.timeout.total_seconds()):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > poll.max_bytes:
                        raise FetchError(f"body too large (over {poll.max_bytes} bytes)")
                    chunks.append(chunk)
        except TimeoutError as e:
            raise FetchError("the body took too long to arrive") from e
        raw = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "")
        try:
            decoder = BoundedDecoder(encoding, poll.max_bytes)
            decoded = decoder.decode(raw, poll.max_bytes) if decoder.coding else raw
        except FetchError:
            return (raw,)
        return (raw,) if decoded is raw else (raw, decoded)

    def _rejected(self, sub: Subscription, problem: str) -> None:
        self._metrics.pushes.labels(result="rejected").inc()
        now = time.monotonic()
        last = self._rejections.get(sub.source)
        if last is None or now - last >= REJECTION_LOG_SECONDS:
            self._rejections[sub.source] = now
            log.warning(
                "%s: WebSub push ignored: %s (logged once an hour)",
                sub.source,
                problem,
                extra=about(sub.source),
            )

    async def _store_push(
        self, source: SourceConfig, body: bytes, headers: dict[str, str], topic: str
    ) -> None:
        try:
            report = await take_push(source, body, headers, topic, self._hooks.poller())
            if report is None:
                await self._poll_soon(source.name)
        except AggregatorError as e:
            log.error("%s: the push could not be stored: %s", source.name, e)
            return
        if report is not None and (report.new or report.updated):
            self._hooks.on_stored()

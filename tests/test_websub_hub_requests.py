"""The subscriber's requests to hubs go to the address that was checked.

A hub's URL comes from a feed. Its host is resolved once, every address checked, and the
request sent to the checked address with the name in its `Host` header: a name answering a
public address to the check and 127.0.0.1 to a second lookup (DNS rebinding) cannot turn a
subscription request to the operator's own network.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from aggregator.hub.client import Answer, CallbackClient
from aggregator.websub.hubs import HubClient, HubRequest
from tests.websubhub import LoopbackHub

REQUEST = HubRequest(
    hub="http://hub.rebinding.test:9/hub",
    mode="subscribe",
    topic="https://news.example.org/feed.xml",
    callback="https://digest.example.org/websub/callback/" + "t" * 40,
    lease_seconds=3600,
    secret="s" * 32,
)


class Resolver:
    """A stand-in for DNS: each lookup of a `.test` name answers the next address of
    `answers` (or raises `failure`); other names go to the real resolver."""

    def __init__(self, *answers: str, failure: OSError | None = None) -> None:
        self.answers = list(answers)
        self.failure = failure
        self.lookups = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if not str(host).endswith(".test"):
            return self.real(host, port, *args, **kwargs)
        self.lookups += 1
        if self.failure is not None:
            raise self.failure
        address = self.answers[min(self.lookups - 1, len(self.answers) - 1)]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    server = LoopbackHub(verifying=False).start()
    try:
        yield server
    finally:
        server.stop()


def _send(
    monkeypatch: pytest.MonkeyPatch,
    resolver: Resolver,
    request: HubRequest,
    *,
    special_allowed: bool,
) -> str | None:
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    async def go() -> str | None:
        async with HubClient(timeout=5, user_agent="test") as client:
            return await client.send(request, special_allowed=special_allowed)

    return asyncio.run(go())


def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    async def send(self: CallbackClient, method: str, url: str, address: str, *a: Any) -> Answer:
        sent.append(address)
        return Answer(202, b"")

    monkeypatch.setattr(CallbackClient, "_send", send)
    resolver = Resolver("8.8.8.8", "127.0.0.1")  # public to the check, loopback after
    assert _send(monkeypatch, resolver, REQUEST, special_allowed=False) is None
    assert sent == ["8.8.8.8"] and resolver.lookups == 1  # one lookup; its address used


def test_a_hub_at_a_special_address_is_refused_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CallbackClient, "_send", lambda *a: pytest.fail("connected"))
    for address in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "::ffff:127.0.0.1"):
        problem = _send(monkeypatch, Resolver(address), REQUEST, special_allowed=False)
        assert problem is not None and "loopback, private or link-local" in problem, address


def test_the_request_reaches_the_checked_address_with_the_hubs_name(
    hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hub.rebinding.test` resolves nowhere but in the stand-in: the request arrived, so
    it went to the address the check resolved, not to a lookup of its own."""
    port = hub.url.split(":")[2].split("/")[0]
    request = HubRequest(**{**REQUEST.__dict__, "hub": REQUEST.hub.replace(":9/", f":{port}/")})
    assert _send(monkeypatch, Resolver("127.0.0.1"), request, special_allowed=True) is None
    [received] = hub.requests
    assert (received.topic, received.callback) == (request.topic, request.callback)


def test_an_unresolvable_hub_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    failure = socket.gaierror(-2, "Name or service not known")
    problem = _send(monkeypatch, Resolver(failure=failure), REQUEST, special_allowed=True)
    assert problem is not None and "\n" not in problem and "could not be asked" in problem


def test_a_hub_url_whose_port_is_no_number_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = HubRequest(**{**REQUEST.__dict__, "hub": "http://hub.rebinding.test:x9/hub"})
    problem = _send(monkeypatch, Resolver("8.8.8.8"), odd, special_allowed=False)
    assert problem is not None and "\n" not in problem and "could not be asked" in problem

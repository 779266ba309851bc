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

from aggregator.websub.hubs import HubClient, HubRequest
from tests.websubhub import LoopbackHub

REQUEST = HubRequest(
    hub="http://hub.rebinding.test:{port}/hub",
    mode="subscribe",
    topic="https://news.example.org/feed.xml",
    callback="https://digest.example.org/websub/callback/" + "t" * 40,
    lease_seconds=3600,
    secret="s" * 32,
)


class Resolver:
    """A stand-in for DNS: each lookup of a name answers the next address of `answers`."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: object, **kwargs: object) -> list[Any]:
        address = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    server = LoopbackHub(verifying=False).start()
    try:
        yield server
    finally:
        server.stop()


def _send(resolver: Resolver, request: HubRequest, *, special_allowed: bool) -> str | None:
    async def go() -> str | None:
        asyncio.get_running_loop().getaddrinfo = resolver  # type: ignore[method-assign, assignment]
        async with HubClient(timeout=5, user_agent="test") as client:
            return await client.send(request, special_allowed=special_allowed)

    return asyncio.run(go())


def test_a_name_rebound_to_loopback_after_the_check_is_never_connected_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    async def post(self: HubClient, request: HubRequest, address: str) -> str | None:
        sent.append(address)
        return None

    monkeypatch.setattr(HubClient, "_post", post)
    resolver = Resolver("8.8.8.8", "127.0.0.1")  # public to the check, loopback after
    assert _send(resolver, REQUEST, special_allowed=False) is None
    assert sent == ["8.8.8.8"] and resolver.lookups == 1  # one lookup; its address used


def test_a_hub_at_a_special_address_is_refused_before_any_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(HubClient, "_post", lambda *a: pytest.fail("connected"))
    for address in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "::ffff:127.0.0.1"):
        problem = _send(Resolver(address), REQUEST, special_allowed=False)
        assert problem is not None and "loopback, private or link-local" in problem, address


def test_the_request_reaches_the_checked_address_with_the_hubs_name(hub: LoopbackHub) -> None:
    """`hub.rebinding.test` resolves nowhere but in the stand-in: the request arrived, so
    it went to the address the check resolved, not to a lookup of its own."""
    port = hub.url.split(":")[2].split("/")[0]
    request = HubRequest(**{**REQUEST.__dict__, "hub": REQUEST.hub.format(port=port)})
    assert _send(Resolver("127.0.0.1"), request, special_allowed=True) is None
    [received] = hub.requests
    assert (received.topic, received.callback) == (request.topic, request.callback)


def test_an_unresolvable_hub_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails(*args: object, **kwargs: object) -> list[Any]:
        raise socket.gaierror(-2, "Name or service not known")

    async def go() -> str | None:
        asyncio.get_running_loop().getaddrinfo = fails  # type: ignore[method-assign]
        async with HubClient(timeout=5, user_agent="test") as client:
            return await client.send(REQUEST, special_allowed=True)

    problem = asyncio.run(go())
    assert problem is not None and "\n" not in problem and "could not be asked" in problem

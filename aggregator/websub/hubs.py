"""Requests to WebSub hubs (§5.1): subscribe, unsubscribe; and where a hub may be.

A hub URL comes from a feed, so it is untrusted: one whose host resolves to a loopback,
private, link-local, multicast or otherwise special address is refused (the daemon must not
be made to post to its operator's network), unless the source itself is at such an address
(a private setup) or `[websub] allow_private_hubs` is on. Requests go through the built-in
hub's `CallbackClient`, which checks and pins addresses and bounds every exchange.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from aggregator.hub.addresses import refusal
from aggregator.hub.client import CallbackClient, CallbackError, CallbackRefused, CallbackUnresolved
from aggregator.urls import redact_urls

CONCURRENCY = 4  # hub requests at once
RESOLVE_SECONDS = 10.0


@dataclass(frozen=True)
class HubRequest:
    """One subscribe or unsubscribe request (`secret`: subscribe only)."""

    hub: str
    mode: str
    topic: str
    callback: str
    lease_seconds: int
    secret: str | None = None

    def form(self) -> dict[str, str]:
        form = {
            "hub.mode": self.mode,
            "hub.topic": self.topic,
            "hub.callback": self.callback,
            "hub.lease_seconds": str(self.lease_seconds),
        }
        if self.secret is not None:
            form["hub.secret"] = self.secret
        return form


def is_special(address: str) -> bool:
    """Whether an IP address is one a hub from a feed must not have: anything but a
    global unicast address, judged as the built-in hub judges callbacks (an IPv4 address
    carried in a 6to4, Teredo or NAT64 one included). ValueError if it is no address."""
    ipaddress.ip_address(address.split("%", 1)[0])  # no address: ValueError, as before
    return refusal(address) is not None


async def addresses_of(url: str) -> list[str]:
    """The addresses `url`'s host is, or resolves to (in `RESOLVE_SECONDS`); OSError when
    it cannot be resolved."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    try:
        is_special(host)
    except ValueError:
        pass  # a name, not an address
    else:
        return [host]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError as e:
        raise OSError(f"cannot resolve {host}: timed out") from e
    if not infos:
        raise OSError(f"cannot resolve {host}: no address")
    return [str(info[4][0]) for info in infos]


async def resolves_to_special(url: str) -> bool:
    """Whether `url`'s host is, or resolves to, a special address (any of its addresses).

    Raises OSError when it cannot be resolved (in `RESOLVE_SECONDS`).
    """
    return any(is_special(address) for address in await addresses_of(url))


class HubClient:
    """Posts subscription requests to hubs; use as an async context manager.

    Through the built-in hub's `CallbackClient`: the hub's host resolved once (in a thread
    of its own, a bounded number at once), every address checked unless `special_allowed`,
    the request sent to the address checked (never to one a second lookup gives: DNS
    rebinding), no redirect followed, the whole exchange within `timeout`, the answer read
    raw and capped.
    """

    def __init__(self, *, timeout: float, user_agent: str) -> None:
        self._client = CallbackClient(concurrency=CONCURRENCY, user_agent=user_agent)
        self.timeout = timeout

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

    async def send(self, request: HubRequest, *, special_allowed: bool = False) -> str | None:
        """Post `request`; None when the hub took it (2xx: it will verify our intent), else
        one line saying why not."""
        host = urlsplit(request.hub).hostname
        try:
            answer = await self._client.exchange(
                "POST",
                request.hub,
                allow_private=special_allowed,
                timeout=self.timeout,
                content=urlencode(request.form()).encode("utf-8"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except CallbackRefused:
            return f"the hub {host} is at a loopback, private or link-local address"
        except CallbackUnresolved as e:
            return redact_urls(
                f"the hub could not be asked: {host} does not resolve ({e.__cause__})"
            )
        except (CallbackError, ValueError) as e:  # ValueError: a port that is no number
            return redact_urls(f"the hub could not be asked: {e}")
        if 200 <= answer.status < 300:
            return None
        text = " ".join(answer.body[:200].decode("utf-8", "replace").split())
        said = f"the hub answered HTTP {answer.status}"
        return redact_urls(f"{said}: {text}" if text else said)

"""Requests to WebSub hubs (§5.1): subscribe, unsubscribe; and where a hub may be.

A hub URL comes from a feed, so it is untrusted: one whose host resolves to a loopback,
private, link-local, multicast or otherwise special address is refused (the daemon must not
be made to post to its operator's network), unless the source itself is at such an address
(a private setup) or `[websub] allow_private_hubs` is on. Requests never follow redirects,
and never queue inside httpx (a semaphore the size of its pool, as in `fetch`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from aggregator.hub.addresses import refusal
from aggregator.hub.client import pinned
from aggregator.urls import redact_urls

CONCURRENCY = 4  # hub requests at once (and the client's pool size)
RESOLVE_SECONDS = 10.0
_ANSWER_LIMIT = 2_048  # bytes of a hub's refusal read, for the error message


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
    """Posts subscription requests to hubs; use as an async context manager."""

    def __init__(self, *, timeout: float, user_agent: str) -> None:
        self._turns = asyncio.Semaphore(CONCURRENCY)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": user_agent},
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0),
        )
        self.timeout = timeout

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def send(self, request: HubRequest, *, special_allowed: bool = False) -> str | None:
        """Post `request`; None when the hub took it (2xx: it will verify our intent), else
        one line saying why not.

        The hub's host is resolved here, its addresses checked (unless `special_allowed`),
        and the request sent to the address checked, never to one a second lookup gives: a
        name that answers a public address first and 127.0.0.1 next cannot turn the request
        to the operator's own network (DNS rebinding).
        """
        async with self._turns:
            try:
                async with asyncio.timeout(self.timeout):
                    addresses = await addresses_of(request.hub)
                    if not special_allowed and any(is_special(a) for a in addresses):
                        host = urlsplit(request.hub).hostname
                        return f"the hub {host} is at a loopback, private or link-local address"
                    return await self._post(request, addresses[0])
            except TimeoutError:
                return f"the hub did not answer within {self.timeout:g}s"
            except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as e:
                return redact_urls(f"the hub could not be asked: {type(e).__name__}: {e}")

    async def _post(self, request: HubRequest, address: str) -> str | None:
        target, host, extensions = pinned(request.hub, address)
        async with self._client.stream(
            "POST", target, data=request.form(), headers={"Host": host}, extensions=extensions
        ) as response:
            if 200 <= response.status_code < 300:
                return None
            said = b""
            async for chunk in response.aiter_raw():  # not inflated: a bomb stays small
                said += chunk
                if len(said) >= _ANSWER_LIMIT:
                    break
        text = " ".join(said[:200].decode("utf-8", "replace").split())
        answer = f"the hub answered HTTP {response.status_code}"
        return redact_urls(f"{answer}: {text}" if text else answer)

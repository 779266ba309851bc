"""Connections to subscribers' callbacks, each to an address checked first.

A callback's host is resolved once per exchange, every address it resolves to is checked
(`addresses.refusal`, unless `[websub] allow_private_callbacks`), and the connection goes
to the checked address, the host kept in `Host` and in TLS (SNI and the certificate check),
so a DNS answer that changes between the check and the connection (DNS rebinding) cannot
send us elsewhere. Redirects are not followed (the next hop would go unchecked).

Every exchange is bounded: one deadline for all of it (resolve, connect, send, answer), at
most `READ_LIMIT` bytes of the answer read, and at most `concurrency` deliveries (and
pings) plus `concurrency` verifications at once: two sets of slots, so that strangers'
subscription requests with callbacks that never answer cannot hold up the deliveries. The
slots add up to the client's pool size, so no request ever waits inside httpx for a
connection, where a deadline's cancel could leave a dead one in the pool (httpcore #1093,
as in `fetch.py`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from aggregator import USER_AGENT
from aggregator.fetch_cookies import FetchScopedClient
from aggregator.hub.addresses import refusal

READ_LIMIT = 64 * 1024  # of an answer: a challenge is short, a delivery's answer unread
# Host lookups running at once, for strangers' subscription requests and verifications, and
# as many again for deliveries and pings. Each runs in a thread of its own that a deadline
# cannot stop (getaddrinfo has no timeout of its own beyond the resolver's): bounded here, so
# that hosts whose DNS never answers cannot pile up threads, nor take the loop's default
# executor from the store calls that run there; two budgets, so that strangers' callbacks
# cannot leave none for the subscribers the hub delivers to.
MAX_LOOKUPS = 8
ALLOW_HINT = "set [websub] allow_private_callbacks = true to allow it"


class CallbackError(Exception):
    """An exchange with a callback did not happen or did not end; `str()` says why."""


class CallbackRefused(CallbackError):
    """The callback leads to an address we do not connect to."""


class CallbackUnresolved(CallbackError):
    """The callback's host name resolves to no address."""


class CallbackBusy(CallbackError):
    """Too many host lookups are under way: try again later."""


@dataclass(frozen=True)
class Answer:
    """A callback's answer: its status, and the start of its body."""

    status: int
    body: bytes


def pinned(url: str, address: str) -> tuple[str, str, dict[str, Any]]:
    """`url` rewritten to connect to `address`: the URL, its `Host` header, and the request
    extensions that keep the host name for TLS."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown = f"[{address}]" if ":" in address else address
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    target = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
    header = parts.netloc
    if not header.isascii():  # an IDN: as the lookup asked DNS for it (a header is ASCII)
        host = host.encode("idna").decode("ascii")
        header = f"{host}:{parts.port}" if parts.port else host
    extensions: dict[str, Any] = {}
    if parts.scheme.lower() == "https" and host != address:
        extensions["sni_hostname"] = host
    return target, header, extensions


class CallbackClient:
    """One pool of connections for the hub's verifications, deliveries and pings."""

    def __init__(self, *, concurrency: int, user_agent: str = USER_AGENT) -> None:
        self.concurrency = concurrency
        # No cookie is kept (`FetchScopedClient` outside a fetch): a subscriber's callback
        # setting new ones on every request would grow a client-wide jar without bound.
        self._client = FetchScopedClient(
            limits=httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(concurrency)  # deliveries and pings
        self._verification_slots = asyncio.Semaphore(concurrency)
        self._user_agent = user_agent
        # host lookups whose thread is still running, by `verification`
        self._lookups = {True: 0, False: 0}

    async def resolve(self, url: str, *, allow_private: bool, verification: bool = False) -> str:
        """The address to connect to for `url`: the first its host resolves to, once every
        one of them passed the check. Raises `CallbackRefused`, `CallbackUnresolved` or
        `CallbackBusy`. `verification`: for a subscription request or its verification."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            addresses = await self._lookup(host, port, verification)
        if not addresses:
            raise CallbackUnresolved(f"callback host {host} resolves to no address")
        if not allow_private:
            for address in addresses:
                why = refusal(address)
                if why is not None:
                    via = "" if host == address else f" ({host} resolves to it)"
                    raise CallbackRefused(f"callback refused: {why}{via}; {ALLOW_HINT}")
        return addresses[0]

    async def _lookup(self, host: str, port: int, verification: bool) -> list[str]:
        if self._lookups[verification] >= MAX_LOOKUPS:
            raise CallbackBusy("too many callback host lookups under way; try again later")
        loop = asyncio.get_running_loop()
        found: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()

        def lookup() -> None:
            """In a daemon thread: one stuck in a lookup must not hold up the process's exit."""
            try:
                if found.set_running_or_notify_cancel():
                    try:
                        found.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
                    except Exception as e:
                        found.set_exception(e)
            finally:  # counted down when the thread ends, not when its caller gave up
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._lookup_ended, verification)

        self._lookups[verification] += 1
        threading.Thread(target=lookup, name="websub-lookup", daemon=True).start()
        try:
            infos = await asyncio.wrap_future(found)
        except (OSError, UnicodeError) as e:  # socket.gaierror, an unencodable name
            raise CallbackUnresolved(f"callback host {host} does not resolve: {e}") from e
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def _lookup_ended(self, verification: bool) -> None:
        self._lookups[verification] -= 1

    async def exchange(
        self,
        method: str,
        url: str,
        *,
        allow_private: bool,
        timeout: float,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        verification: bool = False,
    ) -> Answer:
        """One request to `url` at its checked address, all of it within `timeout` seconds
        (the wait for a free slot aside). Raises `CallbackError` (`CallbackRefused`)."""
        async with self._verification_slots if verification else self._slots:
            try:
                async with asyncio.timeout(timeout):
                    address = await self.resolve(
                        url, allow_private=allow_private, verification=verification
                    )
                    return await self._send(method, url, address, timeout, content, headers)
            except TimeoutError as e:
                raise CallbackError(f"no answer within {timeout:g} s") from e
            except (httpx.HTTPError, UnicodeError) as e:  # UnicodeError: a name IDNA refuses
                raise CallbackError(f"{type(e).__name__}: {e}".rstrip(": ")) from e

    async def _send(
        self,
        method: str,
        url: str,
        address: str,
        timeout: float,
        content: bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Answer:
        target, host, extensions = pinned(url, address)
        request = self._client.build_request(
            method,
            target,
            content=content,
            headers={
                **(headers or {}),
                "Host": host,
                "User-Agent": self._user_agent,
                "Accept-Encoding": "identity",  # the answer is read raw, and capped
            },
            extensions=extensions,
            timeout=timeout,
        )
        response = await self._client.send(request, stream=True)
        try:
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= READ_LIMIT:
                    break
        finally:
            await response.aclose()
        return Answer(response.status_code, body[:READ_LIMIT])

    async def close(self) -> None:
        await self._client.aclose()

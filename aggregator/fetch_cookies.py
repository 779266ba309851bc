"""Cookies that live for one fetch: its redirects carry them, and nothing outlives it.

httpx keeps one cookie jar per client, and the fetcher's client lives as long as the daemon:
every cookie a source ever set would be kept until it expired (a hostile server can set a
hundred per response, each valid for years: memory without bound) and sent back to its host
on every later poll. A feed reader needs none of that. What cookies do for a feed is let a
site that sets one and redirects to itself (a cookie check) serve the feed. So each fetch
has a jar of its own (`one_fetch`), and the client's `cookies` are the jar of the fetch
under way: a context variable, since each poll is a task of its own.

A response with no Set-Cookie header is not handed to `http.cookiejar`: httpx's emulation
of urllib's request and response for it cost an eighth of a 304 poll's CPU, to find nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

import httpx

# What no header value may hold (aiohttp's check): C0 controls but tab, and DEL. The
# fetcher leaves validators holding one out, too.
UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class FetchCookies(httpx.Cookies):
    """One fetch's cookies."""

    def extract_cookies(self, response: httpx.Response) -> None:
        # http.cookiejar reads Set-Cookie, and Set-Cookie2 only with RFC 2965 cookies turned
        # on, which its default policy (httpx's) leaves off: nothing else can add a cookie.
        if "set-cookie" in response.headers:
            super().extract_cookies(response)
            # One that is not ASCII (`city=नई दिल्ली`, a Latin-1 `José`) or holds a control
            # character (`a=b\x7fc`) cannot be sent back: the redirect's request failed
            # (httpx, aiohttp), and the feed was never fetched.
            for cookie in list(self.jar):
                text = f"{cookie.name}={cookie.value or ''}"
                if not text.isascii() or UNSENDABLE.search(text):
                    self.jar.clear(cookie.domain, cookie.path, cookie.name)


_CURRENT: ContextVar[FetchCookies | None] = ContextVar("fetch_cookies", default=None)


@contextlib.contextmanager
def one_fetch() -> Iterator[FetchCookies]:
    """A jar for the requests made inside this block (in this task), forgotten after it."""
    cookies = FetchCookies()
    token = _CURRENT.set(cookies)
    try:
        yield cookies
    finally:
        _CURRENT.reset(token)
        # Emptied, not only let go: a timer aiohttp armed during the fetch holds a copy of
        # the context, and the jar in it, until the timer's own deadline (~30 s).
        cookies.jar.clear()


class FetchScopedClient(httpx.AsyncClient):
    """An httpx client whose cookies are those of the fetch under way (`one_fetch`); outside
    one, none are kept at all (the hub's requests to subscribers' callbacks)."""

    @property
    def cookies(self) -> httpx.Cookies:
        # Outside a fetch, an empty jar each time: what is put in it is never seen again.
        cookies = _CURRENT.get()
        return FetchCookies() if cookies is None else cookies  # (an empty jar is falsy)

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise AttributeError("cookies are kept per fetch (aggregator.fetch_cookies)")

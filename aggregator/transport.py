"""httpx's transport on aiohttp: the fetcher keeps httpx's API, aiohttp sends and reads.

httpx's own transport (httpcore) spent ~0.75 ms of CPU on each request here: its pool
scans every pooled connection, and asks the socket of each idle one whether it is
readable, several times per request. aiohttp's pool and C parser do the same exchange in
~0.1 ms, so a poll answered 304 costs a third of what it did (bench/RESULTS.md).

httpx still builds the requests, follows and counts redirects, and hands the fetcher its
`Response`; only the connection and HTTP/1.1 are aiohttp's. What the fetcher relies on is
kept here:
- the body as it came: aiohttp inflates nothing (the fetcher's bounded decoder does);
- no cookies kept (httpx keeps its own), no header added, no redirect followed, no proxy
  from the environment (httpx mounts its own transports for those);
- TLS verified as httpx verifies it (`httpx.create_ssl_context`: its roots, `SSL_CERT_FILE`);
- the URL as httpx encoded it, without its user info (httpx made that the Authorization
  header; aiohttp refuses both at once);
- aiohttp's errors become httpx's, each the most specific one, with a short message: the
  OS error under a failed connection (refused, unresolvable, TLS), a connection lost
  mid-response, a server breaking HTTP. No aiohttp error leaves this module.

`PoolTimeout` never happens: the fetcher's semaphore keeps requests within the pool.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import yarl


@contextmanager
def _contexts_without_roots() -> Iterator[None]:
    """TLS contexts made meanwhile do not read the system's CA roots.

    aiohttp makes two contexts when imported, its defaults for requests that bring none,
    and reading the roots twice was ~50 ms of every process start (a tenth of a `once`
    whose feeds all answer 304). This transport gives its own context to every https
    request (`_tls_context`), so aiohttp's are never used; made without roots, one used by
    mistake would verify no certificate, refusing every server rather than trusting any.
    Applied while this module imports aiohttp, and only while no other thread runs (one
    could be making a context of its own meanwhile); `once` and the daemon import it first
    from their main thread.
    """
    if threading.active_count() > 1:
        yield
        return
    shadowed = vars(ssl.SSLContext).get("set_default_verify_paths")
    ssl.SSLContext.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        if shadowed is None:
            del ssl.SSLContext.set_default_verify_paths
        else:
            ssl.SSLContext.set_default_verify_paths = shadowed  # type: ignore[method-assign]


with _contexts_without_roots():
    import aiohttp

# aiohttp's default cap on a header line is 8 KiB; httpcore (h11) accepted 16 KiB of
# headers, and a CDN's cookies can come close to 8 KiB: keep what worked.
MAX_HEADER_LINE = 16 * 1024
_HTTP11 = {"http_version": b"HTTP/1.1"}
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (certifi's roots), built once: it costs ~50 ms."""
    return httpx.create_ssl_context()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Requests over one aiohttp session; at most `connections` open at once, kept alive
    for `keepalive` seconds between requests."""

    def __init__(self, *, connections: int, keepalive: float = 5.0) -> None:
        self._connections = connections
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use: aiohttp binds it to the running loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=_NO_AUTO_HEADERS,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):  # a redirect to file:, ftp:...
            raise httpx.UnsupportedProtocol(
                f"not an http or https URL: {request.url.scheme}:", request=request
            )
        body = await request.aread()
        timeout = request.extensions.get("timeout", {})
        with _translated(request):
            response = await self._open().request(
                request.method,
                # As httpx encoded it (aiohttp would quote it again its own way), without
                # user info: httpx made it the Authorization header already.
                yarl.URL(str(request.url), encoded=True).with_user(None),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                # Made at the first https request: loading the roots costs ~50 ms.
                ssl=_tls_context() if request.url.scheme == "https" else True,
                timeout=aiohttp.ClientTimeout(
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions = dict(_HTTP11)
        if response.reason:
            # The bytes as they came: aiohttp reads the line as UTF-8 (surrogates for the rest).
            extensions["reason_phrase"] = response.reason.encode("utf-8", "surrogateescape")
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    """A response's bytes as they arrive; closing it before the end closes the connection
    (aiohttp pools only a connection whose response was read to the end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translated(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


@contextmanager
def _translated(request: httpx.Request) -> Iterator[None]:
    """aiohttp's errors as httpx's (see the module); `raise … from` the OS error, if any,
    which is what the fetcher's messages name."""
    try:
        yield
    except aiohttp.ClientError as e:
        error, cause = _httpx_error(e)
        raise error(_message(e), request=request) from cause


# aiohttp's errors and httpx's for them, most specific first.
_KINDS: tuple[tuple[type[aiohttp.ClientError], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # what its parser refused
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientPayloadError, httpx.ReadError),  # the body cut short (or its chunks)
)


def _httpx_error(e: aiohttp.ClientError) -> tuple[type[httpx.TransportError], BaseException]:
    """The httpx error for `e`, and what it is raised from: the OS error under a failed
    connection (the fetcher names it: refused, unresolvable), else `e`."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return httpx.ConnectError, e.os_error
    kind = next((kind for theirs, kind in _KINDS if isinstance(e, theirs)), None)
    if kind is not None:
        return kind, e
    lost = _os_error(e)  # a reset or a broken pipe on a connection made
    return (httpx.ReadError, lost) if lost is not None else (httpx.NetworkError, e)


def _os_error(e: BaseException) -> OSError | None:
    """The OS error under `e` (a reset, a broken pipe), or `e` itself if it is one."""
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


def _message(e: aiohttp.ClientError) -> str:
    """A short line: aiohttp's parser errors span lines and quote what they refused."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return e.os_error.strerror or str(e.os_error) or type(e.os_error).__name__
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without a complete response"
    if isinstance(e, aiohttp.ClientResponseError):
        text = e.message
    elif isinstance(e, aiohttp.ClientPayloadError):
        # Its cause says how ("Not enough data to satisfy content length header …"); a
        # reset underneath is only in its text.
        text = getattr(e.__cause__, "message", None) or "the body ended early or was malformed"
    elif (lost := _os_error(e)) is not None:
        return lost.strerror or str(lost)
    else:
        text = str(e)
    first = next((line.strip(" :") for line in text.splitlines() if line.strip(" :")), "")
    return first[:120] or type(e).__name__

"""Fetch sources over HTTP (httpx) or from local files; every outcome is a value.

`fetch` never raises for a bad source: it returns `Fetched`, `NotModified` or `Failed`.
It sends conditional GETs, follows at most five redirects, caps the body size while
streaming (after our own bounded decompression, since httpx would inflate a bomb in
one chunk), enforces a deadline on the whole exchange, and asks one host at most
`per_host` things at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import socket
import zlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit
from urllib.request import url2pathname

import brotli
import httpx

from aggregator import USER_AGENT
from aggregator.errors import FetchError
from aggregator.fetch_cookies import UNSENDABLE, FetchScopedClient, one_fetch
from aggregator.regular_file import NotARegularFile, read_regular_file
from aggregator.types import Failed, Fetched, FetchOutcome, NotModified, Validators
from aggregator.urls import redact_urls

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
_PERMANENT = frozenset({301, 308})
_NO_VALIDATORS = Validators()
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/feed+json;q=0.9, application/xml;q=0.8, text/xml;q=0.8, "
    "application/json;q=0.5, */*;q=0.1"
)


class BoundedDecoder:
    """Undo Content-Encoding ourselves, refusing to produce more than the caller's budget."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise FetchError(f"unsupported Content-Encoding {encoding!r}")
        self.coding = codings[0] if codings else ""
        self._zlib: zlib._Decompress | None = None
        self._brotli: brotli.Decompressor | None = None
        if self.coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self.coding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)
        elif self.coding == "br":
            self._brotli = brotli.Decompressor()
        elif self.coding:
            raise FetchError(f"unsupported Content-Encoding {encoding!r}")

    def decode(self, data: bytes, budget: int) -> bytes:
        """Decoded `data`; FetchError as soon as more than `budget` bytes would come out."""
        try:
            if self._zlib is not None:
                out = self._zlib.decompress(data, budget + 1)
            elif self._brotli is not None:
                out = self._brotli.process(data, output_buffer_limit=budget + 1)
            else:
                out = data
        except (zlib.error, brotli.error) as e:
            raise FetchError(f"corrupt {self.coding} body: {e}") from e
        if len(out) > budget:
            raise FetchError(f"body too large (over {self.limit} bytes)")
        return out


def _validators(headers: Mapping[str, str]) -> Validators:
    return Validators(etag=headers.get("etag"), last_modified=headers.get("last-modified"))


@functools.lru_cache(maxsize=4096)
def _parsed_url(url: str) -> httpx.URL:
    """httpx's parse of a source's URL, made once: it was a tenth of a 304 poll's CPU, and a
    source's URL is the same poll after poll (an `httpx.URL` is never changed in place)."""
    return httpx.URL(url)


# The most of a server's reason phrase ("Service Unavailable") an error keeps.
REASON_LIMIT = 200


def _shown_reason(phrase: str) -> str:
    """A server's reason phrase as errors, logs, `once` and `status` show it: at most
    `REASON_LIMIT` characters, none of them a control character (a server's escape sequences
    would recolour, retitle or clear the operator's terminal)."""
    return "".join(c for c in phrase[: REASON_LIMIT * 4] if c.isprintable())[:REASON_LIMIT]


def _reason_phrase(response: httpx.Response) -> str:
    """The reason phrase as sent, read as UTF-8 (else Latin-1, HTTP/1.1's old charset):
    the bytes that are not ASCII were question marks (`503 सेवा अनुपलब्ध`, `404 Não`)."""
    raw = response.extensions.get("reason_phrase", b"")
    if not isinstance(raw, bytes):
        return str(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _conditional_headers(validators: Validators) -> dict[bytes, bytes]:
    """The validators sent back as the bytes they came as. A server's non-ASCII ETag or
    Last-Modified (`"समाचार-v1"`, a date written in Hindi: UTF-8) was kept as text, which
    httpx refuses to send: every later poll of the source failed before any request, for
    good. As bytes it goes back as it came (a Latin-1 one, read as such, goes back as
    UTF-8 and matches nothing: the feed is fetched whole, as without validators)."""
    headers = {}
    for name, value in ((b"If-None-Match", validators.etag),
                        (b"If-Modified-Since", validators.last_modified)):  # fmt: skip
        # One holding a control character no HTTP client sends (`"a\x01b"`) is left out:
        # aiohttp refused the request, and the failed polls never replaced it.
        if value and not UNSENDABLE.search(value):
            headers[name] = value.encode("utf-8", "surrogateescape")
    return headers


def _root_os_error(error: BaseException) -> OSError | None:
    """The most specific OSError under an httpx error (httpx and anyio hide it causes deep)."""
    seen: set[int] = set()
    found: OSError | None = None
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
            if current.errno is not None or isinstance(current, socket.gaierror):
                break
        current = current.__cause__ or current.__context__
    return found


# Errors described by their kind alone, most specific first ({host}, {error} filled in).
_PLAIN_DESCRIPTIONS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (httpx.ConnectTimeout, "timed out connecting to {host}"),
    (httpx.TimeoutException, "timed out waiting for the server"),
    (httpx.TooManyRedirects, f"too many redirects (more than {MAX_REDIRECTS})"),
    (httpx.RemoteProtocolError, "the server broke the HTTP protocol: {error}"),
    ((httpx.UnsupportedProtocol, httpx.InvalidURL), "invalid URL: {error}"),
)


def _request_url(error: httpx.HTTPError) -> str | None:
    """The URL of the request that failed (a redirect's, perhaps), if it says."""
    try:
        return str(error.request.url)
    except RuntimeError:  # raised before it had a request
        return None


def _describe(error: Exception, url: str) -> str:
    """One line an operator understands, for an httpx or OS error."""
    host = urlsplit(url).hostname or url
    if isinstance(error, httpx.UnsupportedProtocol):
        elsewhere = _request_url(error)
        if elsewhere not in (None, url):
            return f"refused a redirect to a URL that is not http or https: {elsewhere}"
    for kind, template in _PLAIN_DESCRIPTIONS:
        if isinstance(error, kind):
            return template.format(host=host, error=error)
    if isinstance(error, httpx.ConnectError):
        return _describe_connect_error(error, host)
    if isinstance(error, httpx.ReadError):
        cause = _root_os_error(error)
        detail = str(error) or (cause.strerror if cause is not None else None) or "reset by peer"
        return f"connection lost while reading: {detail}"
    return f"{type(error).__name__}: {error}"


def _describe_connect_error(error: httpx.ConnectError, host: str) -> str:
    """Why a connection could not be made, from the OS error underneath httpx's."""
    cause = _root_os_error(error)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve host {host}"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {host}"
    if cause is not None and cause.strerror:
        return f"cannot connect to {host}: {cause.strerror}"
    return f"cannot connect to {host}: {str(error) or type(error).__name__}"


class Fetcher:
    """One shared httpx client with bounded concurrency; use as an async context manager."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        concurrency: int = 10,
        per_host: int = 2,
        max_bytes: int = DEFAULT_MAX_BYTES,
        user_agent: str = USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.per_host = per_host
        self._semaphore = asyncio.Semaphore(concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        if transport is None:
            # Imported here: aiohttp takes ~0.15 s to import, which only commands that
            # fetch should pay (not `status`, `serve`).
            from aggregator.transport import AiohttpTransport  # noqa: PLC0415

            transport = AiohttpTransport(connections=max(concurrency, 1))
        # Cookies live for one fetch, its redirects included (aggregator/fetch_cookies.py).
        self._client = FetchScopedClient(
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={
                "User-Agent": user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": "gzip, deflate, br",
            },
            # aiohttp underneath (aggregator/transport.py: a third of httpcore's CPU per
            # request), its pool no bigger than the semaphore lets in, so none ever queues.
            transport=transport,
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, validators: Validators = _NO_VALIDATORS) -> FetchOutcome:
        """Fetch one source; never raises for anything the source or network does."""
        async with self.polling(url, validators) as outcome:
            return outcome

    @contextlib.asynccontextmanager
    async def polling(
        self, url: str, validators: Validators = _NO_VALIDATORS
    ) -> AsyncIterator[FetchOutcome]:
        """Fetch one source, and hold its slot of `concurrency` until the block ends.

        The slot covers what the caller does with the body (parse, store), so fetched bodies
        waiting for the parser are bounded by `concurrency`, however many sources are due.
        At most `per_host` requests to one host at a time: the host's turn is awaited before
        a slot is taken (waiting for a busy host never holds up other hosts), and given back
        as soon as the response is in.
        """
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError as e:  # "http://[zz]/": no host to ask (`add` takes what it is given)
            yield Failed(url, f"not a valid URL: {e}")
            return
        if parts.scheme == "file":
            async with self._semaphore:
                yield _fetch_file(url, validators, self.max_bytes)
            return
        turn = self._hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        async with turn:
            await self._semaphore.acquire()
            try:
                outcome = await self._guarded(url, validators)
            except BaseException:
                self._semaphore.release()
                raise
        try:
            yield outcome
        finally:
            self._semaphore.release()

    async def _guarded(self, url: str, validators: Validators) -> FetchOutcome:
        # httpx puts the whole URL, user info and ?token= included, into its messages; the
        # error is logged, stored and shown by `status`, so never with a secret.
        try:
            return await self._fetch_http(url, validators)
        except FetchError as e:
            return Failed(url, redact_urls(str(e)))
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            return Failed(url, redact_urls(_describe(e, url)))
        except (OSError, UnicodeError, ValueError) as e:
            return Failed(url, redact_urls(f"{type(e).__name__}: {e}"))

    async def _fetch_http(self, url: str, validators: Validators) -> FetchOutcome:
        """One request with a deadline on the whole exchange, headers and body.

        A server dripping a byte at a time would reset httpx's per-read timeout forever, so
        the deadline is an asyncio timeout around everything. Cancelling inside httpx leaks
        pooled connections only when a request is cancelled while queued for a connection
        (httpcore #1093); the semaphore keeps requests within the pool's size, so none queues.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(url, validators)
        except TimeoutError as e:
            raise FetchError(f"timed out: no complete response within {self.timeout:g}s") from e

    async def _exchange(self, url: str, validators: Validators) -> FetchOutcome:
        with one_fetch():  # a cookie set on the way (a redirect) goes no further
            return await self._exchange_once(url, validators)

    async def _exchange_once(self, url: str, validators: Validators) -> FetchOutcome:
        request = self._client.build_request(
            "GET", _parsed_url(url), headers=_conditional_headers(validators)
        )
        response = await self._client.send(request, stream=True)
        try:
            chain = [r.status_code for r in response.history]
            permanent = str(response.url) if chain and all(s in _PERMANENT for s in chain) else None
            if response.status_code == 304:
                # Nothing to read: aiohttp's parser knows a 304 has no body, so closing it
                # (below) gives the connection back to the pool (httpcore's dropped it).
                new = _validators(response.headers)
                return NotModified(
                    url,
                    Validators(
                        new.etag or validators.etag, new.last_modified or validators.last_modified
                    ),
                    headers=MappingProxyType({k.lower(): v for k, v in response.headers.items()}),
                    permanent_redirect=permanent,
                )
            if response.status_code != 200:
                reason = _shown_reason(_reason_phrase(response))
                return Failed(
                    url,
                    f"HTTP {response.status_code} {reason}".strip(),
                    response.status_code,
                    retry_after=response.headers.get("retry-after"),
                )
            declared = response.headers.get("content-length")
            encoded = bool(response.headers.get("content-encoding"))
            if (
                not encoded
                and declared
                and declared.isascii()
                and declared.isdigit()
                and int(declared) > self.max_bytes
            ):
                raise FetchError(f"body too large (Content-Length {declared})")
            decoder = BoundedDecoder(response.headers.get("content-encoding", ""), self.max_bytes)
            chunks: list[bytes] = []
            size = 0
            async for raw in response.aiter_raw():
                chunk = decoder.decode(raw, self.max_bytes - size)
                size += len(chunk)
                chunks.append(chunk)
            body = b"".join(chunks)
            headers = MappingProxyType({k.lower(): v for k, v in response.headers.items()})
            return Fetched(
                url=url,
                final_url=str(response.url),
                status=response.status_code,
                body=body,
                headers=headers,
                validators=_validators(response.headers),
                permanent_redirect=permanent,
            )
        finally:
            await response.aclose()


def _fetch_file(url: str, validators: Validators, max_bytes: int) -> FetchOutcome:
    """A local source; its size and mtime stand in for ETag and Last-Modified."""
    path = Path(url2pathname(urlsplit(url).path))
    try:
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        if validators.etag == etag:
            return NotModified(url, Validators(etag, last_modified))
        body = _read_feed_file(path, stat.st_size, max_bytes)
    except FetchError as e:
        return Failed(url, str(e))
    except FileNotFoundError:
        return Failed(url, f"file not found: {path}")
    except IsADirectoryError:
        return Failed(url, f"is a directory, not a feed file: {path}")
    except OSError as e:
        return Failed(url, f"cannot read {path}: {e.strerror or e}")
    return Fetched(
        url=url,
        final_url=url,
        status=200,
        body=body,
        headers=MappingProxyType({"content-type": "application/xml"}),
        validators=Validators(etag, last_modified),
    )


def _read_feed_file(path: Path, size: int, max_bytes: int) -> bytes:
    """A regular file's bytes, at most `max_bytes` (it may grow between stat and read); one
    that is no regular file (a FIFO, opened, would block the event loop) is refused as
    opened (`regular_file`), not by the `stat` made before."""
    if size > max_bytes:
        raise FetchError(f"file too large ({size} bytes, limit {max_bytes})")
    try:
        body = read_regular_file(path, max_bytes + 1)
    except (IsADirectoryError, NotARegularFile) as e:
        raise FetchError(f"not a regular file: {path}") from e
    if len(body) > max_bytes:
        raise FetchError(f"file too large (over {max_bytes} bytes)")
    return body

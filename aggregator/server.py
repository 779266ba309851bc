"""Serve `output/` to feed readers (Starlette): cheap to poll, never a byte outside it.

Files are held in memory keyed by (mtime, size), so a conditional request costs one
`stat` and never reads the file or the store. The ETag is a hash of the bytes, so it
changes only when they do (publish rewrites a file only when its bytes change). Reading,
hashing and gzip of a new version run in a thread, once per version however many requests
ask for it meanwhile, so a 100 MB file does not stall the loop. Bodies are sent in
`SEND_CHUNK_BYTES` slices of the cached bytes, each after the previous one drained, so a slow
reader holds about one chunk, never a copy of the file. `/healthz` and `/metrics` are for
the operator.

Clients are bounded (`BoundedH11Protocol`): a connection must deliver a complete request
within `request_timeout` of connecting (or of its first byte after a response), however it
drips it; an idle keep-alive connection is closed after `KEEP_ALIVE_SECONDS`; a request
arriving while `max_connections` are open is answered 503, and a connection accepted while
twice that are open is closed at once, so a flood cannot take every file descriptor. A
response the client stops reading is aborted: the connection is dropped when no byte of its
response leaves (is acknowledged by the client) for `request_timeout` while bytes wait to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import mimetypes
import os
import resource
import signal
import socket
import struct
import termios
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MEDIA_TYPES = {
    "rss.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
}
_GZIP_MIN_BYTES = 256

# uvicorn's own default: readers poll every few minutes, a held socket buys them nothing.
KEEP_ALIVE_SECONDS = 5
# A body is written in slices of this size, each once the previous one has drained below the
# transport's high-water mark (64 KiB): what a reader that stops reading holds in memory.
SEND_CHUNK_BYTES = 64 * 1024
# The kernel send buffer asked for each client socket (Linux doubles it for its overhead).
# Autotuned, it grows to ~2.7 MB on a client that stops reading (3.7 MiB of kernel memory
# each, measured): 512 such connections would pin ~2 GB until dropped. 256 KiB still
# fills a 20 Mbit/s x 100 ms path; readers of feeds need far less.
SEND_BUFFER_BYTES = 256 * 1024
# How often a connection with bytes waiting checks that some left: a stalled one is dropped
# between request_timeout and 1.25 x request_timeout after its last byte went out.
_PROGRESS_CHECKS_PER_TIMEOUT = 4
# Descriptors for everything but client connections: the store, parser workers, outgoing
# fetches, files being published.
_RESERVED_FDS = 256

# None when healthy, else the reason; awaited, so that asking a database server does not
# stall the other requests.
HealthCheck = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class _Version:
    key: tuple[int, int, int]  # (inode, mtime_ns, size): publish replaces files by rename
    body: bytes
    gzipped: bytes | None
    etag: str
    last_modified: str
    mtime: int
    media_type: str


def media_type_of(name: str) -> str:
    if name in MEDIA_TYPES:
        return MEDIA_TYPES[name]
    suffix = Path(name).suffix
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


class PublishedFiles:
    """The files in `root`, cached by version; resolves names safely."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, _Version] = {}
        # Loads under way, by (name, version key): concurrent requests share one.
        self._loading: dict[tuple[str, tuple[int, int, int]], asyncio.Future[_Version | None]] = {}

    def path_of(self, name: str) -> Path | None:
        """The file `name` names inside root, or None (hidden, traversal, not a file)."""
        parts = name.split("/")
        if (
            not name
            or "\x00" in name
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        ):
            return None
        try:
            candidate = (self.root / name).resolve()
            if not candidate.is_relative_to(self.root) or not candidate.is_file():
                return None
        except (OSError, ValueError, RuntimeError):  # a name too long, a symlink loop
            return None
        # A symlink may lead to a hidden file or directory under root: the target counts.
        if any(p.startswith(".") for p in candidate.relative_to(self.root).parts):
            return None
        return candidate

    async def get(self, name: str) -> _Version | None:
        """The current version of `name`, or None; a new version is loaded off the loop."""
        path = self.path_of(name)
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached.key == key:
            return cached
        loading = self._loading.get((name, key))
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(_load_version, path, name))
            self._loading[(name, key)] = loading
            loading.add_done_callback(lambda _: self._loading.pop((name, key), None))
        # Shielded: a request cancelled while waiting must not cancel the others' load.
        version = await asyncio.shield(loading)
        if version is not None:
            self._cache[name] = version
        return version


def _load_version(path: Path, name: str) -> _Version | None:
    """Read, hash and compress one version of a file (in a thread: seconds for 100 MB)."""
    try:
        # stat and read the same open file: a rename in between cannot mix two versions.
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            body = handle.read()
    except OSError:
        return None
    digest = hashlib.sha256(body).hexdigest()[:32]
    return _Version(
        key=(stat.st_ino, stat.st_mtime_ns, stat.st_size),
        body=body,
        gzipped=gzip.compress(body, mtime=0) if len(body) >= _GZIP_MIN_BYTES else None,
        etag=f'"{digest}"',
        last_modified=formatdate(int(stat.st_mtime), usegmt=True),
        mtime=int(stat.st_mtime),
        media_type=media_type_of(name),
    )


class ChunkedBody(Response):
    """A response whose body goes out in `SEND_CHUNK_BYTES` memoryview slices.

    uvicorn awaits the transport's drain before each message, so a slow reader holds one
    slice beyond the high-water mark; one `Response(body)` would be buffered whole, a copy per
    connection (500 readers of a 4 MB file took 1 GB).
    """

    def __init__(self, body: bytes, headers: dict[str, str], media_type: str) -> None:
        # Content-Length given, so that Starlette neither renders nor measures a body.
        super().__init__(
            None, headers={**headers, "Content-Length": str(len(body))}, media_type=media_type
        )
        self._payload = memoryview(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        size = len(self._payload)
        for start in range(0, size, SEND_CHUNK_BYTES):
            end = start + SEND_CHUNK_BYTES
            await send(
                {
                    "type": "http.response.body",
                    "body": self._payload[start:end],
                    "more_body": end < size,
                }
            )
            # send() yields only when the transport is full: without this, hundreds of
            # responses each fill their socket's kernel buffer (MBs) before /healthz runs.
            await asyncio.sleep(0)
        if size == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether Accept-Encoding allows gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return False
    return False


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own event loop: the caller owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BoundedConfig(uvicorn.Config):
    """uvicorn's configuration, plus the bounds `BoundedH11Protocol` enforces."""

    def __init__(
        self, app: Starlette, host: str, port: int, request_timeout: float, max_connections: int
    ) -> None:
        super().__init__(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=BoundedH11Protocol,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # uvicorn answers 503 to a request while this many connections (idle ones
            # included) or requests are open; it counts the asking connection too.
            limit_concurrency=max_connections,
        )
        self.request_timeout = request_timeout
        self.max_connections = max_connections


class _CountingTransport(asyncio.Transport):
    """A connection's transport that counts the bytes handed to it.

    Bytes handed minus bytes still unsent (transport buffer and kernel queue) is what has left:
    the only progress measure that sees a slow reader drain a full kernel buffer, since asyncio
    calls `resume_writing` only after most of that buffer (MBs) has gone.
    """

    def __init__(self, inner: asyncio.Transport) -> None:
        super().__init__()
        self.inner = inner
        self.handed = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.handed += len(data)
        self.inner.write(data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()


def kernel_unsent_bytes(sock: Any) -> int:
    """Bytes in the socket's kernel send queue not yet acknowledged (Linux SIOCOUTQ, alias
    TIOCOUTQ); 0 where the platform cannot tell or the socket is gone, so that progress is
    then measured on the transport's buffer alone."""
    request = getattr(termios, "TIOCOUTQ", None)  # absent on some platforms
    if sock is None or request is None:
        return 0
    try:
        fd = sock.fileno()
        if fd < 0:
            return 0
        queued = fcntl.ioctl(fd, request, struct.pack("i", 0))
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", queued)[0])


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each whole request and for stalled writes.

    uvicorn arms its keep-alive timer only after a response, and cancels it at every byte
    received: a connection that never completes a request, or drips one a byte at a time,
    is otherwise held for ever. Here the deadline runs from the connection (or from the
    first byte after a response) until the request is complete, whatever arrives between.

    uvicorn sets no bound on the response side: a client that stops reading holds its
    connection, and its response task waiting for a drain, for ever; and `close()` waits
    for unsent bytes for ever. Here a connection with bytes waiting (in the transport or the
    kernel's send queue) of which none leaves for `request_timeout` is aborted (nginx's
    `send_timeout`), whether it is sending or closing. Any byte the client takes counts, so
    a slow reader is kept however full the buffers are; the old measure (time from
    `pause_writing` to `resume_writing`) reset 20 KiB/s readers, as asyncio resumes only once
    most of a kernel buffer of MBs has drained.
    """

    config: BoundedConfig

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._left_at_check = 0
        self._idle_since = 0.0
        self._counting = _CountingTransport(transport)  # type: ignore[arg-type]
        super().connection_made(self._counting)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        if len(self.connections) > 2 * self.config.max_connections:
            self.transport.abort()  # no descriptor to spare, not even for a 503
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_progress()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_close()

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        self._bound_close()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on a kept-alive connection has begun
        super().data_received(data)
        self._disarm_when_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._bound_close()  # uvicorn closes after a `Connection: close` response
        self._disarm_when_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm()  # part of a pipelined request is already here

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.config.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_when_complete(self) -> None:
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # the request is complete (or the connection is ending)

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
            self._bound_close()

    def _bound_close(self) -> None:
        """A closing transport, and then the kernel, flush their bytes first, for ever (the
        kernel: minutes of zero-window probes) if nobody reads them."""
        if self.transport.is_closing() and self._unsent() > 0:
            self._watch_progress()

    def _unsent(self) -> int:
        """Bytes handed to the transport that the client has not yet acknowledged."""
        sock = self._counting.inner.get_extra_info("socket")
        return self._counting.get_write_buffer_size() + kernel_unsent_bytes(sock)

    def _watch_progress(self) -> None:
        """Check, a few times per request_timeout, that bytes leave while some wait."""
        if self._stall is None:
            self._left_at_check = self._counting.handed - self._unsent()
            self._idle_since = self.loop.time()
            self._schedule_check()

    def _schedule_check(self) -> None:
        interval = self.config.request_timeout / _PROGRESS_CHECKS_PER_TIMEOUT
        self._stall = self.loop.call_later(interval, self._check_progress)

    def _check_progress(self) -> None:
        self._stall = None
        unsent = self._unsent()
        if unsent == 0:
            return  # all gone: watch again at the next pause_writing or close
        left = self._counting.handed - unsent
        now = self.loop.time()
        if left > self._left_at_check:
            self._left_at_check = left
            self._idle_since = now
        elif now - self._idle_since >= self.config.request_timeout:
            self._stalled()
            return
        self._schedule_check()

    def _stalled(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a FIN queued behind unsent bytes: the kernel frees the socket's
            # send buffer (MBs) now rather than keep probing a zero window for minutes.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # close() would wait for the client to read


def embedded_server(
    app: Starlette,
    host: str,
    port: int,
    *,
    request_timeout: float,
    max_connections: int,
) -> EmbeddedServer:
    return EmbeddedServer(BoundedConfig(app, host, port, request_timeout, max_connections))


def raise_open_file_limit(max_connections: int) -> None:
    """Raise the soft limit on open files to the hard one; warn if connections may not fit.

    systemd's default soft limit (1024) is below what `max_connections` may take; the hard
    limit (524288 by default, 65536 in contrib/aggregator.service) is what the operator meant.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
    needed = 2 * max_connections + _RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is below the %d that [server] max_connections = %d may need; "
            "raise LimitNOFILE (ulimit -n) or lower max_connections",
            soft,
            needed,
            max_connections,
        )


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a taken port is an error we report and exit on
    (uvicorn would call sys.exit from inside the event loop)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP, and `socket.create_server` leaves proto 0. Without it, a response
    # sent as headers then body waits ~40 ms for a delayed ACK (Nagle), per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    return sock


async def serve_until_signalled(
    app: Starlette,
    host: str,
    port: int,
    *,
    request_timeout: float,
    max_connections: int,
) -> None:
    """`aggregator serve`: serve until SIGTERM or SIGINT, then return (exit status 0)."""
    raise_open_file_limit(max_connections)
    sock = listen_socket(host, port)
    server = embedded_server(
        app, host, port, request_timeout=request_timeout, max_connections=max_connections
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    with sock:
        await server.serve(sockets=[sock])


def _not_modified(request: Request, version: _Version, etag: str) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag in tags or version.etag in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            return version.mtime <= int(parsedate_to_datetime(if_modified_since).timestamp())
        except (TypeError, ValueError, IndexError):
            return False
    return False


def create_app(
    output_dir: Path,
    *,
    files: PublishedFiles | None = None,
    health: HealthCheck | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> Starlette:
    """The app; pass `files` to share (and later re-root) the daemon's view of output_dir."""
    files = files or PublishedFiles(output_dir)

    async def serve_file(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        version = await files.get(name)
        if version is None:
            if name == "index.html":
                return PlainTextResponse("Feeds: /atom.xml (Atom 1.0), /rss.xml (RSS 2.0)\n")
            return PlainTextResponse("not found\n", status_code=404)
        wants_gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        body = version.body
        etag = version.etag
        headers = {
            "Last-Modified": version.last_modified,
            "Cache-Control": "public, max-age=60",
            "Vary": "Accept-Encoding",
        }
        if wants_gzip and version.gzipped is not None:
            body = version.gzipped
            etag = version.etag[:-1] + '-gzip"'
            headers["Content-Encoding"] = "gzip"
        headers["ETag"] = etag
        if _not_modified(request, version, etag):
            headers.pop("Content-Encoding", None)
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=version.media_type)
        return ChunkedBody(body, headers, version.media_type)

    async def healthz(request: Request) -> Response:
        problem = await health() if health is not None else None
        if problem is None and not files.root.is_dir():
            problem = f"output directory {files.root} is missing"
        body = {"status": "ok"} if problem is None else {"status": "unavailable", "reason": problem}
        return Response(
            json.dumps(body) + "\n",
            status_code=200 if problem is None else 503,
            media_type="application/json",
        )

    async def metrics_endpoint(request: Request) -> Response:
        body = metrics() if metrics is not None else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/", serve_file, methods=["GET", "HEAD"]),
            Route("/{name:path}", serve_file, methods=["GET", "HEAD"]),
        ]
    )

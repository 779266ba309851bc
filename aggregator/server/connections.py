"""uvicorn with every client bounded: request time, idle time, connections, stalled readers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import resource
import signal
import socket
import struct
import termios
from collections.abc import Callable, Iterator
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("aggregator.server")

# uvicorn's own default: readers poll every few minutes, a held socket buys them nothing.
KEEP_ALIVE_SECONDS = 5


# The kernel send buffer asked for each client socket (Linux doubles it for its overhead).
# Autotuned, it grows to ~2.7 MB on a client that stops reading (3.7 MiB of kernel memory
# each, measured): 512 such connections would pin ~2 GB until dropped. 256 KiB still
# fills a 20 Mbit/s x 100 ms path; readers of feeds need far less.
SEND_BUFFER_BYTES = 256 * 1024


# How often a connection with bytes waiting checks that some left: a stalled one is dropped
# between request_timeout and 1.25 x request_timeout after its last byte went out.
_PROGRESS_CHECKS_PER_TIMEOUT = 4


# After a 400 (a request h11 refused: a head over its limit, bytes that are not HTTP), the
# connection is half-closed and what the client still sends is read and dropped, for at most
# this long and this much (nginx's lingering close): closed with unread bytes, the kernel
# resets it, and a client still sending never reads the 400.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20

# Descriptors for everything but client connections: the store, parser workers, outgoing
# fetches, files being published.
_RESERVED_FDS = 256


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
        self.linger_on_close = False  # the next close half-closes and lingers (a 400)
        self.lingering: asyncio.TimerHandle | None = None  # ends the linger: a real close

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.handed += len(data)
        self.inner.write(data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def close(self) -> None:
        if self.linger_on_close and self.lingering is None and not self.inner.is_closing():
            self.linger_on_close = False
            if self.inner.can_write_eof():
                self.inner.write_eof()  # the answer, then FIN: the client reads it whole
                loop = asyncio.get_running_loop()
                self.lingering = loop.call_later(LINGER_SECONDS, self.end_linger)
                return
        self.end_linger()

    def end_linger(self) -> None:
        self.stop_lingering()
        self.inner.close()

    def stop_lingering(self) -> None:
        """No more lingering: the timer that would end it is cancelled."""
        if self.lingering is not None:
            self.lingering.cancel()
            self.lingering = None

    def abort(self) -> None:
        self.stop_lingering()
        self.inner.abort()

    def is_closing(self) -> bool:
        return self.lingering is not None or self.inner.is_closing()

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
        self._lingered = 0  # bytes read and dropped after a 400
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
        self._counting.stop_lingering()
        self._disarm()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_progress()

    def eof_received(self) -> None:
        if self._counting.lingering is not None:  # the client is done sending: close now
            self._counting.end_linger()
            return
        super().eof_received()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_close()

    def send_400_response(self, msg: str) -> None:
        self._counting.linger_on_close = True
        super().send_400_response(msg)
        self._bound_close()

    def data_received(self, data: bytes) -> None:
        if self._counting.lingering is not None:  # after a 400: read and dropped
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._counting.end_linger()
            return
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
    on_listening: Callable[[], None] = lambda: None,
) -> None:
    """`aggregator serve`: serve until SIGTERM or SIGINT, then return (exit status 0).

    `on_listening` runs once the socket listens (connections are queued from then on)."""
    raise_open_file_limit(max_connections)
    sock = listen_socket(host, port)
    on_listening()
    server = embedded_server(
        app, host, port, request_timeout=request_timeout, max_connections=max_connections
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    with sock:
        await server.serve(sockets=[sock])

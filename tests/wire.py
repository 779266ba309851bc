"""A PostgreSQL socket proxy that counts round trips: how many times a client spoke after
the server had (or first). Pipelined statements sent before the answers come back count
once, which is what a round trip costs: a wait for the server.

    with RoundTrips(server.socket_dir, port) as wire:
        url = wire.url(dbname)   # connect here instead
        ...
        wire.count               # round trips so far, all connections together

It forwards bytes only; PostgreSQL's protocol is never read. Threads, one per connection.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType
from urllib.parse import urlencode


class RoundTrips:
    """Listen on a Unix socket of its own and forward each connection to the server's."""

    def __init__(self, socket_dir: Path, port: int, user: str) -> None:
        self._target = str(socket_dir / f".s.PGSQL.{port}")
        self._port = port
        self._user = user
        self._dir = Path(tempfile.mkdtemp(prefix="aggregator-wire-"))
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self._dir / f".s.PGSQL.{port}"))
        self._listener.listen(64)
        self._lock = threading.Lock()
        self._count = 0
        self.flights: list[bytes] | None = None  # set to [] to keep each round trip's start
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def summary(self, most: int = 25) -> str:
        """The commonest starts of the kept `flights`, counted: which statements the round
        trips carried (a prepared one shows as its name, `_pg3_N`, and its first values)."""
        starts = Counter(
            re.sub(rb"[^\x20-\x7e]+", b" ", flight)[:80].decode() for flight in self.flights or ()
        )
        return "\n".join(f"{n:6d}  {start}" for start, n in starts.most_common(most))

    def url(self, dbname: str, *, schema: str | None = None) -> str:
        query = {"host": str(self._dir), "port": str(self._port)}
        if schema is not None:
            query["options"] = f"-csearch_path={schema}"
        return f"postgresql://{self._user}@/{dbname}?{urlencode(query)}"

    def __enter__(self) -> RoundTrips:
        accept = threading.Thread(target=self._accept, name="wire-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        self._listener.close()
        for path in self._dir.iterdir():
            path.unlink()
        self._dir.rmdir()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self._target)
            thread = threading.Thread(
                target=self._forward, args=(client, server), name="wire", daemon=True
            )
            thread.start()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        """Copy both ways, reading message boundaries to count round trips: a client flight
        is one when a ReadyForQuery has come since the client's last flight and every Sync
        or simple Query it sent has had its own (it waited for the server). Statements
        pipelined before any answer is due are not. (A client that waits on a Flush instead
        of a Sync would be undercounted; psycopg does so only to fetch rows inside a
        pipeline, which the store never does.)"""
        other = {client: server, server: client}
        sent = _Messages(startup=True)  # the client's: the first one has no type byte
        received = _Messages(startup=False)
        waited = True  # a connection's first flight is a round trip
        with selectors.DefaultSelector() as selector, client, server:
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = b""
                    with contextlib.suppress(OSError):
                        data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if waited and sent.count(b"SQ") <= received.count(b"Z"):
                            with self._lock:
                                self._count += 1
                                if self.flights is not None:
                                    self.flights.append(data[:200])
                        waited = False
                        sent.feed(data)
                    else:
                        ready = received.count(b"Z")
                        received.feed(data)
                        waited = waited or received.count(b"Z") > ready
                    try:
                        other[sock].sendall(data)
                    except OSError:
                        return


class _Messages:
    """PostgreSQL protocol messages going one way, counted by type as their bytes pass."""

    def __init__(self, *, startup: bool) -> None:
        self._startup = startup
        self._buffer = b""
        self._counts: dict[int, int] = {}

    def count(self, types: bytes) -> int:
        return sum(self._counts.get(t, 0) for t in types)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._startup:  # length, then the body: no type byte
                if len(self._buffer) < 4:
                    return
                size = int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) < size:
                    return
                self._buffer = self._buffer[size:]
                self._startup = False
                continue
            if len(self._buffer) < 5:
                return
            size = 1 + int.from_bytes(self._buffer[1:5], "big")
            if len(self._buffer) < size:
                return
            kind = self._buffer[0]
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._buffer = self._buffer[size:]

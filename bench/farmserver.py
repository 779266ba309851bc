"""The farm's HTTP server: its own process, asyncio, every answer prepared in advance.

The tests' FeedServer (a thread per connection, gzip and a hash per request) costs more CPU
per request than the clients it serves, and on a 2-core machine that cost lands in every
tool's wall time. This one keeps each feed's body, gzipped body, ETag and Last-Modified
ready, so a 304 is a dictionary lookup and one write. It speaks just enough HTTP/1.1 for
GET and HEAD with keep-alive; the parent drives it over a pipe (publish, counters, reset;
`requests` tells when each path was asked for, `set_delay` holds every answer a while).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import multiprocessing
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from multiprocessing.connection import Connection


@dataclass(frozen=True)
class Prepared:
    body: bytes
    gzipped: bytes
    etag: str
    last_modified: str
    mtime: float


def _prepare(body: bytes, mtime: float) -> Prepared:
    etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
    return Prepared(body, gzip.compress(body, 6), etag, formatdate(mtime, usegmt=True), mtime)


def _not_modified(headers: dict[str, str], feed: Prepared) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        return feed.etag in [t.strip() for t in inm.split(",")]
    ims = headers.get("if-modified-since")
    if ims:
        try:
            return parsedate_to_datetime(ims).timestamp() >= int(feed.mtime)
        except (TypeError, ValueError):
            return False
    return False


class _Farm:
    def __init__(self) -> None:
        self.feeds: dict[str, Prepared] = {}
        self.requests = 0
        self.not_modified = 0
        self.connections = 0
        self.delay = 0.0
        self.log: dict[str, list[float]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                answer = self.answer(method, path, headers)
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(answer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def answer(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        self.requests += 1
        self.log.setdefault(path, []).append(time.time())
        feed = self.feeds.get(path)
        if feed is None:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        validators = f"ETag: {feed.etag}\r\nLast-Modified: {feed.last_modified}\r\n"
        if _not_modified(headers, feed):
            self.not_modified += 1
            return f"HTTP/1.1 304 Not Modified\r\n{validators}\r\n".encode("latin-1")
        body, encoding = feed.body, ""
        if "gzip" in headers.get("accept-encoding", ""):
            body, encoding = feed.gzipped, "Content-Encoding: gzip\r\n"
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/xml; charset=utf-8\r\n"
            f"{validators}{encoding}Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        return head if method == "HEAD" else head + body

    def command(self, message: tuple[str, object]) -> object:
        kind, payload = message
        if kind == "publish":
            assert isinstance(payload, tuple)
            path, body, mtime = payload
            self.feeds[str(path)] = _prepare(bytes(body), float(mtime))
            return None
        if kind == "counters":
            return (self.requests, self.not_modified, self.connections)
        if kind == "requests":
            return {path: list(times) for path, times in self.log.items()}
        if kind == "delay":
            assert isinstance(payload, float)
            self.delay = payload
            return None
        if kind == "reset":
            self.requests = self.not_modified = self.connections = 0
            self.log.clear()
            return None
        raise ValueError(kind)


async def _apply(farm: _Farm, message: tuple[str, object]) -> object:
    return farm.command(message)


def _serve(listener: socket.socket, control: Connection) -> None:
    farm = _Farm()
    loop = asyncio.new_event_loop()

    def obey() -> None:
        while True:
            try:
                message = control.recv()
            except EOFError:
                loop.call_soon_threadsafe(loop.stop)
                return
            if message is None:
                loop.call_soon_threadsafe(loop.stop)
                return
            # The loop's thread owns the farm's state; this one only waits for the answer.
            answer = asyncio.run_coroutine_threadsafe(_apply(farm, message), loop)
            control.send(answer.result())

    threading.Thread(target=obey, daemon=True).start()
    loop.run_until_complete(asyncio.start_server(farm.handle, sock=listener, backlog=1024))
    loop.run_forever()


class FarmServer:
    """The parent's handle: `start()`, `publish(path, body, mtime)`, `counters()`, `stop()`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = int(self._listener.getsockname()[1])
        self._control, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(
            target=_serve, args=(self._listener, child), daemon=True, name="feed-farm"
        )

    def start(self) -> FarmServer:
        self._process.start()
        self._listener.close()  # the child has its own copy
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def _ask(self, kind: str, payload: object = None) -> object:
        self._control.send((kind, payload))
        return self._control.recv()

    def publish(self, path: str, body: bytes, mtime: float) -> None:
        self._ask("publish", (path, body, mtime))

    def counters(self) -> tuple[int, int, int]:
        """(requests, 304 answers, connections accepted) since the last reset."""
        answer = self._ask("counters")
        assert isinstance(answer, tuple)
        return int(answer[0]), int(answer[1]), int(answer[2])

    def requests(self) -> dict[str, list[float]]:
        """When each path was requested (`time.time()`), since the last `reset`."""
        answer = self._ask("requests")
        assert isinstance(answer, dict)
        return answer

    def set_delay(self, seconds: float) -> None:
        """Hold every answer `seconds` before sending it: polls that take a while."""
        self._ask("delay", float(seconds))

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.send(None)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

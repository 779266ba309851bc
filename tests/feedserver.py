"""A real HTTP server on 127.0.0.1 serving feed documents, for tests and benchmarks.

It answers conditional requests like a well-behaved publisher (ETag, Last-Modified, 304),
gzips when asked, and records every request's path and headers so tests can see exactly
what the aggregator sent.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up mid-request (a stopped daemon, a timeout test) is not news."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass(frozen=True)
class Resource:
    body: bytes
    content_type: str = "application/xml; charset=utf-8"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    last_modified: float = 1752400000.0  # 2025-07-13


@dataclass(frozen=True)
class SeenRequest:
    path: str
    headers: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class FeedServer:
    """Start with `start()`, stop with `stop()`; `url(path)` names a served resource."""

    resources: dict[str, Resource] = field(default_factory=dict)
    handlers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> FeedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/xml; charset=utf-8",
        **kw: object,
    ) -> str:
        self.resources[path] = Resource(body, content_type, **kw)  # type: ignore[arg-type]
        return self.url(path)

    def seen(self, path: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.requests.append(
                SeenRequest(
                    handler.path, {k.lower(): v for k, v in handler.headers.items()}, status
                )
            )

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        custom = self.handlers.get(handler.path)
        if custom is not None:
            self._record(handler, 0)
            custom(handler)
            return
        resource = self.resources.get(handler.path)
        if resource is None:
            self._send(handler, 404, b"not found", "text/plain", ())
            return
        etag = '"' + hashlib.sha1(resource.body).hexdigest()[:16] + '"'
        last_modified = formatdate(resource.last_modified, usegmt=True)
        validators = (("ETag", etag), ("Last-Modified", last_modified))
        if resource.status == 200 and self._not_modified(handler, etag, resource.last_modified):
            self._send(handler, 304, b"", None, validators)
            return
        body = resource.body
        extra = list(resource.headers) + (list(validators) if resource.status == 200 else [])
        if "gzip" in handler.headers.get("Accept-Encoding", "") and resource.status == 200:
            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        self._send(handler, resource.status, body, resource.content_type, tuple(extra))

    @staticmethod
    def _not_modified(handler: BaseHTTPRequestHandler, etag: str, mtime: float) -> bool:
        inm = handler.headers.get("If-None-Match")
        if inm is not None:
            return etag in [t.strip() for t in inm.split(",")]
        ims = handler.headers.get("If-Modified-Since")
        if ims:
            try:
                return parsedate_to_datetime(ims).timestamp() >= int(mtime)
            except (TypeError, ValueError):
                return False
        return False

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        self._record(handler, status)
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body:
            handler.wfile.write(body)

"""A WebSub subscriber's callback on 127.0.0.1, for the hub's tests: it answers intent
verifications (the challenge echoed, or not), takes deliveries (checking their HMAC with the
secret it subscribed with), and records every request. A path may be told to fail (a
status) or to hang (hold the connection, answering nothing, until released)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    signed: bool | None  # a delivery's X-Hub-Signature matched (None: no secret known)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a hub hanging up on a hanging callback is the point of some tests


@dataclass
class CallbackServer:
    """Start with `start()`, stop with `stop()`; `url(path)` is a callback URL."""

    verify: dict[str, str] = field(default_factory=dict)  # path: "echo" (default), "wrong", "404"
    post_status: dict[str, int] = field(default_factory=dict)  # path: status (default 202)
    hang: set[str] = field(default_factory=set)  # paths whose POSTs never answer
    secrets: dict[str, str] = field(default_factory=dict)  # path: the secret subscribed with
    seen: list[Seen] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None

    def start(self) -> CallbackServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                owner._record(Seen("GET", parts.path, query, dict(self.headers), b"", None))
                how = owner.verify.get(parts.path, "echo")
                if how == "404":
                    self._answer(404, b"no such subscription")
                elif how == "wrong":
                    self._answer(200, b"not-the-challenge")
                else:
                    self._answer(200, query.get("hub.challenge", "").encode())

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                secret = owner.secrets.get(parts.path)
                signed = None
                if secret is not None:
                    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                    given = self.headers.get("X-Hub-Signature", "")
                    signed = hmac.compare_digest(given, f"sha256={expected}")
                seen = Seen("POST", parts.path, {}, dict(self.headers), body, signed)
                owner._record(seen)
                if parts.path in owner.hang:
                    owner.released.wait(60)
                    return
                self._answer(owner.post_status.get(parts.path, 202), b"thanks")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def url(self, path: str) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def requests(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and s.path == path]

    def wait_for(self, ready: Callable[[], object], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; seen: {[(s.method, s.path) for s in self.seen]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

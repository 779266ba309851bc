"""A small real WebSub hub on 127.0.0.1, written to the W3C Recommendation, for tests.

It takes subscription requests (§5.1: a form POST, answered 202), verifies the
subscriber's intent with a GET to the callback (§5.3: the challenge must come back, with
200), keeps what was verified, and distributes content (§7: a POST of the document with
`Link` headers and `X-Hub-Signature: sha256=…` when a secret was given). Tests steer it:
the lease it grants, whether it verifies at all (`verifying`), and they can send
distributions of their own (forged, unsigned, to unknown callbacks).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx


@dataclass(frozen=True)
class HubRequest:
    """A subscription request as the hub received it."""

    mode: str
    topic: str
    callback: str
    lease_seconds: str | None
    secret: str | None
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Verified:
    """A subscription whose intent the subscriber confirmed."""

    topic: str
    callback: str
    secret: str | None
    lease_seconds: int
    at: float  # time.monotonic() of the verification

    @property
    def expires(self) -> float:
        return self.at + self.lease_seconds


@dataclass
class LoopbackHub:
    lease_seconds: int = 864000  # granted, whatever is asked
    verifying: bool = True  # False: requests are answered 202 and never verified
    requests: list[HubRequest] = field(default_factory=list)
    verified: list[Verified] = field(default_factory=list)
    verification_answers: list[tuple[int, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> LoopbackHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status = hub._received(form)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hub"

    def _received(self, form: dict[str, str]) -> int:
        mode, topic, callback = (form.get(f"hub.{k}", "") for k in ("mode", "topic", "callback"))
        if mode not in ("subscribe", "unsubscribe") or not topic or not callback:
            return 400
        request = HubRequest(
            mode, topic, callback, form.get("hub.lease_seconds"), form.get("hub.secret"),
            time.monotonic(),
        )  # fmt: skip
        with self._lock:
            self.requests.append(request)
        if self.verifying:
            # After the 202, as a hub does (the subscriber must cope with either order).
            threading.Timer(0.05, self._verify, (request,)).start()
        return 202

    def _verify(self, request: HubRequest) -> None:
        challenge = secrets.token_urlsafe(16)
        params = {
            "hub.mode": request.mode,
            "hub.topic": request.topic,
            "hub.challenge": challenge,
            "hub.lease_seconds": str(self.lease_seconds),
        }
        try:
            answer = httpx.get(request.callback, params=params, timeout=5)
        except httpx.HTTPError:
            return
        with self._lock:
            self.verification_answers.append((answer.status_code, answer.text))
            if answer.status_code // 100 != 2 or answer.text != challenge:
                return
            self.verified = [v for v in self.verified if v.callback != request.callback]
            if request.mode == "subscribe":
                self.verified.append(
                    Verified(
                        request.topic, request.callback, request.secret, self.lease_seconds,
                        time.monotonic(),
                    )
                )  # fmt: skip

    def subscriptions(self, topic: str | None = None) -> list[Verified]:
        with self._lock:
            return [v for v in self.verified if topic is None or v.topic == topic]

    def subscribe_requests(self) -> list[HubRequest]:
        with self._lock:
            return [r for r in self.requests if r.mode == "subscribe"]

    def publish(self, topic: str, body: bytes, content_type: str) -> list[int]:
        """Distribute `body` to every verified subscriber of `topic`; their statuses."""
        return [
            distribute(v.callback, body, content_type, topic, self.url, v.secret)
            for v in self.subscriptions(topic)
        ]


def signature(secret: str, body: bytes, method: str = "sha256") -> str:
    digest = hmac.new(secret.encode(), body, getattr(hashlib, method)).hexdigest()
    return f"{method}={digest}"


def distribute(
    callback: str,
    body: bytes,
    content_type: str,
    topic: str,
    hub: str,
    secret: str | None,
    *,
    header: str | None = None,
) -> int:
    """One content distribution (§7) to `callback`: signed with sha256 under `secret`, or
    with `header` as the X-Hub-Signature as given (a forgery); its status."""
    headers = {
        "Content-Type": content_type,
        "Link": f'<{hub}>; rel="hub", <{topic}>; rel="self"',
    }
    if header is not None:
        headers["X-Hub-Signature"] = header
    elif secret is not None:
        headers["X-Hub-Signature"] = signature(secret, body)
    return httpx.post(callback, content=body, headers=headers, timeout=10).status_code

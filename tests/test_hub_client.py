"""The hub's connections to callbacks: resolved once, every address checked, connected to
the checked address (a DNS answer that changes in between leads nowhere else), redirects
not followed, answers capped, lookups bounded. Against a real server on 127.0.0.1; the
host lookups are faked (tests reach no network), the connections are real."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aggregator.hub.client import (
    MAX_LOOKUPS,
    READ_LIMIT,
    CallbackBusy,
    CallbackClient,
    CallbackError,
    CallbackRefused,
    CallbackUnresolved,
    pinned,
)
from tests.feedserver import FeedServer
from tests.hubcallback import CallbackServer

REAL_GETADDRINFO = socket.getaddrinfo


def _infos(*addresses: str, port: int = 80) -> list[Any]:
    return [
        (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
        for a in addresses
    ]


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer().start()
    try:
        yield server
    finally:
        server.stop()


class FakeDns:
    """`socket.getaddrinfo` for made-up names; IP literals go to the real one."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}  # host: one answer per lookup
        self.asked: list[str] = []
        self.hold = threading.Event()
        self.held: set[str] = set()

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.answers and host not in self.held:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        self.asked.append(host)
        if host in self.held:
            self.hold.wait(10)
        answers = self.answers.get(host) or [[]]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if not answer:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _infos(*answer, port=port)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.hold.set()


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _exchange(url: str, *, allow_private: bool = True, **kw: Any):
    client = CallbackClient(concurrency=2)
    try:
        return await client.exchange("GET", url, allow_private=allow_private, timeout=5, **kw)
    finally:
        await client.close()


def test_the_connection_goes_to_the_address_checked(dns: FakeDns, callback: CallbackServer) -> None:
    """The name resolves to our server once; were it looked up again (DNS rebinding), it
    would lead to 127.0.0.2, where nothing listens."""
    port = int(callback.url("/").rsplit(":", 1)[1].rstrip("/"))
    dns.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    answer = _run(_exchange(f"http://rebind.test:{port}/cb?hub.challenge=abc"))
    assert (answer.status, answer.body) == (200, b"abc")
    assert dns.asked == ["rebind.test"]
    [seen] = callback.requests("GET", "/cb")
    assert seen.headers["Host"] == f"rebind.test:{port}"


def test_an_international_name_is_sent_in_its_ascii_form(
    dns: FakeDns, callback: CallbackServer
) -> None:
    """A callback on an IDN host: `Host` carries the name as DNS knows it (IDNA), not
    characters an HTTP header cannot hold (which ended the verification in a traceback)."""
    port = int(callback.url("/").rsplit(":", 1)[1].rstrip("/"))
    dns.answers["bücher.test"] = [["127.0.0.1"]]
    answer = _run(_exchange(f"http://bücher.test:{port}/cb?hub.challenge=abc"))
    assert (answer.status, answer.body) == (200, b"abc")
    [seen] = callback.requests("GET", "/cb")
    assert seen.headers["Host"] == f"xn--bcher-kva.test:{port}"
    assert pinned("https://bücher.test/cb", "93.184.216.34") == (
        "https://93.184.216.34/cb",
        "xn--bcher-kva.test",
        {"sni_hostname": "xn--bcher-kva.test"},
    )


def test_a_name_with_one_private_address_is_refused_before_any_connection(
    dns: FakeDns,
) -> None:
    dns.answers["mixed.test"] = [["93.184.216.34", "10.1.2.3"]]
    with pytest.raises(CallbackRefused) as refused:
        _run(_exchange("http://mixed.test/cb", allow_private=False))
    assert str(refused.value) == (
        "callback refused: 10.1.2.3 is a private address (mixed.test resolves to it); "
        "set [websub] allow_private_callbacks = true to allow it"
    )


def test_a_name_that_does_not_resolve(dns: FakeDns) -> None:
    dns.answers["gone.test"] = [[]]
    with pytest.raises(CallbackUnresolved, match=r"callback host gone\.test does not resolve"):
        _run(_exchange("http://gone.test/cb"))


def test_redirects_are_not_followed() -> None:
    server = FeedServer().start()
    try:
        server.add("/moved", b"", status=302, headers=(("Location", "/elsewhere"),))
        server.add("/elsewhere", b"followed")
        answer = _run(_exchange(server.url("/moved")))
        assert answer.status == 302
        assert [r.path for r in server.requests] == ["/moved"]
    finally:
        server.stop()


def test_no_cookie_a_callback_sets_is_kept_or_sent_back() -> None:
    """A subscriber's callback setting new cookies on every request (100 a time, valid for
    years): the hub keeps none and sends none back. With httpx's own jar, the client's for
    the daemon's life, they piled up without bound and went with every later request."""
    cookies = tuple(("Set-Cookie", f"c{n}={'v' * 100}; Max-Age=315360000") for n in range(100))
    server = FeedServer().start()

    async def go() -> None:
        client = CallbackClient(concurrency=2)
        try:
            for _ in range(5):
                url = server.url("/cb")
                await client.exchange("GET", url, allow_private=True, timeout=5)
        finally:
            await client.close()

    try:
        server.add("/cb", b"ok", headers=cookies)
        _run(go())
        assert len(server.requests) == 5
        assert all("cookie" not in r.headers for r in server.requests), server.requests[-1]
    finally:
        server.stop()


def test_an_answer_is_read_only_to_its_cap() -> None:
    server = FeedServer().start()
    try:
        server.add("/big", b"x" * (READ_LIMIT * 8))
        answer = _run(_exchange(server.url("/big")))
        assert answer.status == 200 and len(answer.body) == READ_LIMIT
    finally:
        server.stop()


def test_a_callback_that_never_answers_is_given_up_at_the_deadline(
    callback: CallbackServer,
) -> None:
    callback.hang.add("/hang")

    async def post() -> None:
        client = CallbackClient(concurrency=1)
        try:
            await client.exchange(
                "POST", callback.url("/hang"), allow_private=True, timeout=0.5, content=b"x"
            )
        finally:
            await client.close()

    with pytest.raises(CallbackError, match=r"no answer within 0.5 s"):
        _run(asyncio.wait_for(post(), 5))


def test_host_lookups_are_bounded(dns: FakeDns) -> None:
    """Names whose DNS never answers hold a thread each: at most MAX_LOOKUPS of them."""
    dns.held.add("slow.test")

    async def scenario() -> None:
        client = CallbackClient(concurrency=2)
        waiting = [
            asyncio.create_task(client.resolve("http://slow.test/", allow_private=True))
            for _ in range(MAX_LOOKUPS)
        ]
        await asyncio.sleep(0.2)
        with pytest.raises(CallbackBusy):
            await client.resolve("http://slow.test/", allow_private=True)
        for task in waiting:  # the callers give up; the threads go on until DNS answers
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        with pytest.raises(CallbackBusy):
            await client.resolve("http://other.test/", allow_private=True)
        dns.answers["slow.test"] = [["127.0.0.1"]]
        dns.hold.set()
        for _ in range(100):
            if client._lookups[False] == 0:
                break
            await asyncio.sleep(0.05)
        assert await client.resolve("http://slow.test/", allow_private=True) == "127.0.0.1"
        await client.close()

    _run(scenario())


def test_strangers_lookups_cannot_take_the_deliveries(dns: FakeDns) -> None:
    """Subscription requests whose callback names never resolve (anyone may send them, 60 a
    minute per topic) fill the strangers' lookups; a delivery's lookup has its own, so the
    subscribers the hub has are not failed (and dropped) for a stranger's flood."""
    dns.held.add("slow.test")
    dns.answers["subscriber.test"] = [["127.0.0.1"]]

    async def scenario() -> None:
        client = CallbackClient(concurrency=2)
        flood = [
            asyncio.create_task(
                client.resolve("http://slow.test/", allow_private=True, verification=True)
            )
            for _ in range(MAX_LOOKUPS)
        ]
        await asyncio.sleep(0.2)
        with pytest.raises(CallbackBusy):
            await client.resolve("http://other.test/", allow_private=True, verification=True)
        assert await client.resolve("http://subscriber.test/", allow_private=True) == "127.0.0.1"
        dns.hold.set()
        await asyncio.gather(*flood, return_exceptions=True)
        await client.close()

    _run(scenario())


def test_an_https_callback_keeps_its_name_for_tls() -> None:
    assert pinned("https://Sub.Example.org:8443/cb?x=1", "2001:db8::1") == (
        "https://[2001:db8::1]:8443/cb?x=1",
        "Sub.Example.org:8443",
        {"sni_hostname": "sub.example.org"},
    )
    assert pinned("http://r.example/", "93.184.216.34") == (
        "http://93.184.216.34/",
        "r.example",
        {},
    )

"""The server bounds its clients, and never answers a malformed path with a traceback.

Shows, against the real daemon (`aggregator run`) and `aggregator serve` on 127.0.0.1 with raw
sockets: idle connections and header drippers are closed by the server while normal requests
are answered; a request beyond `[server] max_connections` is answered 503; paths with a
too-long component, a symlink loop, a NUL byte, `..`, a huge length, and symlinks inside
output/ that lead to hidden files or directories answer 404/400, with no traceback logged.
Clients that stop reading a big response are reset within the deadline, holding little memory
(VmRSS of the real process, the kernel's send queue), while slow readers (~20 KiB/s) stay
connected; /healthz answers while a big new file is hashed and gzipped;
uvicorn's warning per bad request is rate-limited in the log.
"""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aggregator.server.connections import LINGER_SECONDS
from tests.conftest import start_serve
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon, _items, wait_for

ATOM = b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"/>\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raw_status(port: int, path: str | bytes) -> int:
    """GET `path` byte for byte (httpx would normalise it); the status of the answer."""
    target = path if isinstance(path, bytes) else path.encode("ascii")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        sock.sendall(head)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            response.read()
            return response.status
        finally:
            response.close()  # its file object holds the socket open otherwise


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (EOF or reset); `sock` is readable."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _wait_until_all_closed(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """Wait for the server to close every socket; return those still open at the deadline."""
    open_ = list(socks)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.5)
        for sock in readable:
            if _closed_by_peer(sock):
                open_.remove(sock)
    return open_


class _Drippers:
    """Connections that send a request head one byte every 0.2 s and never finish it."""

    def __init__(self, port: int, count: int) -> None:
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        head = b"GET /atom.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100_000
        for byte in head:
            if self._stop.is_set() or len(self.closed) == len(self.socks):
                return
            for i, sock in enumerate(self.socks):
                if i not in self.closed:
                    try:
                        sock.send(bytes([byte]))
                    except OSError:  # the server closed it: what we want
                        self.closed.add(i)
            time.sleep(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


@pytest.mark.slow
def test_idle_and_dripping_connections_are_closed_while_requests_are_answered(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """200 idle sockets and 5 header drippers: closed within 45 s (default deadline 10 s),
    and normal requests answered while they are open."""
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 3)))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a.xml")}"\n',
        encoding="utf-8",
    )
    daemon = Daemon(config, port).start()
    idle: list[socket.socket] = []
    drippers: _Drippers | None = None
    try:
        started = time.monotonic()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        drippers = _Drippers(port, 5)
        for _ in range(3):  # answered while they are all open
            assert daemon.get("/healthz").status_code == 200
            assert daemon.get("/atom.xml").status_code == 200
            time.sleep(0.5)
        still_open = _wait_until_all_closed(idle, 45 - (time.monotonic() - started))
        assert not still_open, f"{len(still_open)} idle connections still open after 45 s"
        wait_for(lambda: len(drippers.closed) == 5, 45 - (time.monotonic() - started), "drips")
        assert daemon.get("/atom.xml").status_code == 200
        # Before the stop: a SIGTERM landing mid-tick logs APScheduler's own traceback.
        log = daemon.log_text()
        assert "Traceback" not in log, log[-5000:]
    finally:
        if drippers is not None:
            drippers.close()
        for sock in idle:
            sock.close()
        assert daemon.stop() == 0


@contextmanager
def _serving(tmp_path: Path, server_toml: str) -> Iterator[tuple[int, Path, Path, int]]:
    """`aggregator serve` on 127.0.0.1 with `server_toml` lines: (port, output dir, log, pid)."""
    port = _free_port()
    out = tmp_path / "out"
    out.mkdir()
    (out / "atom.xml").write_bytes(ATOM)
    (tmp_path / "feeds.toml").write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n{server_toml}'
        '[publish]\noutput_dir = "out"\n'
        '[[feeds]]\nurl = "https://example.org/feed.xml"\n',
        encoding="utf-8",
    )
    process, log = start_serve(tmp_path)
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/atom.xml", timeout=2).status_code == 200,
            20,
            "aggregator serve to answer",
        )
        yield port, out, log, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """`aggregator serve` on 127.0.0.1 with max_connections = 4: (port, output dir, log)."""
    with _serving(tmp_path, "max_connections = 4\n") as (port, out, log, _):
        yield port, out, log


@pytest.mark.slow
def test_a_request_beyond_max_connections_is_answered_503(
    serve: tuple[int, Path, Path],
) -> None:
    port, _, _ = serve
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.3)  # accepted by the server
        assert _raw_status(port, "/atom.xml") == 503
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: _raw_status(port, "/atom.xml") == 200, 10, "a 200 once they are gone")


@pytest.mark.slow
def test_a_connection_beyond_twice_max_connections_is_closed_at_once(
    serve: tuple[int, Path, Path],
) -> None:
    port, _, _ = serve
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.settimeout(5)  # far less than the 10 s request deadline
            assert _closed_by_peer(extra)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.slow
def test_an_idle_keep_alive_connection_is_closed(serve: tuple[int, Path, Path]) -> None:
    """After a response, a kept-alive connection that sends nothing more is closed (5 s)."""
    port, _, _ = serve
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /atom.xml HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            assert response.status == 200
            assert response.read() == ATOM
            assert not response.will_close
            assert _wait_until_all_closed([sock], 15) == []
        finally:
            response.close()


@pytest.mark.slow
def test_malformed_paths_answer_404_or_400_without_a_traceback(
    serve: tuple[int, Path, Path],
) -> None:
    port, out, log = serve
    (out / "loop").symlink_to("loop")
    (out / "a").symlink_to("b")
    (out / "b").symlink_to("a")
    (out / ".published.json").write_text("{}", encoding="utf-8")
    (out / ".hidden").mkdir()
    (out / ".hidden" / "secret.xml").write_text("secret", encoding="utf-8")
    (out / "record").symlink_to(".published.json")
    (out / "dir").symlink_to(".hidden")
    cases: dict[str | bytes, set[int]] = {
        "/" + "x" * 256: {404},  # one component too long for the file system
        "/atom.xml/" + "x" * 300: {404},
        "/loop": {404},
        "/a/atom.xml": {404},
        "/%00": {404},
        "/atom.xml%00.txt": {404},
        "/../../etc/passwd": {404},
        "/%2e%2e/%2e%2e/etc/passwd": {404},
        "/" + "a/" * 3000: {404},  # 6 KB: within the head's size limit
        "/" + "a" * 100_000: {400, 404},  # past h11's 16 KB limit when it arrives in parts
        b"/\xff\xfe": {400},  # not ASCII: refused by the HTTP parser
        "/record": {404},  # a symlink to a dotfile
        "/dir/secret.xml": {404},  # through a symlink to a hidden directory
        "/.hidden/secret.xml": {404},
    }
    wrong = {
        path[:60]: status
        for path, statuses in cases.items()
        if (status := _raw_status(port, path)) not in statuses
    }
    assert not wrong
    assert _raw_status(port, "/atom.xml") == 200
    text = log.read_text("utf-8", "replace")
    assert "Traceback" not in text, text[:3000]


def _rss_bytes(pid: int) -> int:
    """The resident set of process `pid` (VmRSS in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text("ascii")
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def _non_reader(port: int, path: str) -> socket.socket:
    """A connection that asks for `path` with a tiny receive window and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii"))
    return sock


def _wait_until_reset(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """Wait for the server to drop every socket, without reading (reading would drain what
    the server could not send); return those still established at the deadline."""
    open_ = list(socks)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        # tcpi_state, the first byte of TCP_INFO: 1 is ESTABLISHED.
        open_ = [s for s in open_ if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1]
        time.sleep(0.2)
    return open_


@pytest.mark.slow
def test_readers_that_stop_reading_are_dropped_and_hold_little_memory(tmp_path: Path) -> None:
    """100 clients ask for a 4 MB file and never read: with request_timeout = 1 s all are
    closed within 15 s, the server grows by far less than a copy of the file each (the old
    code: ~1 MB each, kept for ever), and normal requests are answered meanwhile."""
    server_toml = 'request_timeout = "1s"\nmax_connections = 300\n'
    with _serving(tmp_path, server_toml) as (port, out, _, pid):
        big = os.urandom(4 * 2**20)
        (out / "big.html").write_bytes(big)
        assert httpx.get(f"http://127.0.0.1:{port}/big.html", timeout=10).content == big
        before = _rss_bytes(pid)
        readers = [_non_reader(port, "/big.html") for _ in range(100)]
        try:
            peak = before
            for _ in range(5):  # answered while they are all open
                answered = httpx.get(f"http://127.0.0.1:{port}/atom.xml", timeout=2)
                assert answered.status_code == 200
                peak = max(peak, _rss_bytes(pid))
                time.sleep(0.1)
            still_open = _wait_until_reset(readers, 15)
            assert not still_open, f"{len(still_open)} non-readers still open after 15 s"
            peak = max(peak, _rss_bytes(pid))
        finally:
            for sock in readers:
                sock.close()
        assert peak - before < 50 * 2**20, f"grew {(peak - before) / 2**20:.0f} MB"
        assert httpx.get(f"http://127.0.0.1:{port}/big.html", timeout=10).content == big


@pytest.mark.slow
def test_healthz_answers_while_a_big_new_file_is_hashed_and_compressed(tmp_path: Path) -> None:
    """The first request for an 80 MB file costs seconds of sha256 and gzip (the old code
    spent them on the event loop: /healthz waited as long); /healthz answers within 2 s."""
    with _serving(tmp_path, "") as (port, out, _, _):
        big = os.urandom(40 * 2**20).hex().encode("ascii")  # compressible, slowly
        (out / "big.xml").write_bytes(big)
        done = threading.Event()
        sizes: list[int] = []

        def fetch_big() -> None:
            sizes.append(len(httpx.get(f"http://127.0.0.1:{port}/big.xml", timeout=60).content))
            done.set()

        fetching = threading.Thread(target=fetch_big, daemon=True)
        fetching.start()
        try:
            time.sleep(0.3)  # the load has begun
            started = time.monotonic()
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
            waited = time.monotonic() - started
            assert health.status_code == 200
            assert not done.is_set(), "the big file was ready before /healthz: nothing shown"
            assert waited < 2, f"/healthz took {waited:.1f} s"
        finally:
            fetching.join(timeout=60)
        assert sizes == [len(big)]


@pytest.mark.slow
def test_uvicorn_warnings_per_bad_request_are_rate_limited(
    serve: tuple[int, Path, Path],
) -> None:
    """50 malformed requests and 20 beyond max_connections log at most one line each (and one
    more, with a count, once a minute has passed): a client cannot flood the log."""
    port, _, log = serve
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            while sock.recv(4096):
                pass
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.3)  # accepted by the server
        for _ in range(20):
            assert _raw_status(port, "/atom.xml") == 503
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: _raw_status(port, "/atom.xml") == 200, 10, "a 200 once they are gone")
    text = log.read_text("utf-8", "replace")
    assert 1 <= text.count("Invalid HTTP request received.") <= 2, text[-3000:]
    assert 1 <= text.count("Exceeded concurrency limit.") <= 2, text[-3000:]


class _SlowReader:
    """A connection that asks for `path` with a tiny receive window and then reads
    `rate` bytes a second (a slice every 0.1 s) on a thread, recording if the server drops it."""

    def __init__(self, port: int, path: str, rate: int) -> None:
        self.sock = _non_reader(port, path)
        self.received = 0
        self.dropped_after: float | None = None
        self._slice = rate // 10
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        started = time.monotonic()
        self.sock.settimeout(5)
        while not self._stop.wait(0.1):
            try:
                data = self.sock.recv(self._slice)
            except OSError:  # reset (or no byte for 5 s): the server dropped it
                data = b""
            if not data:
                self.dropped_after = time.monotonic() - started
                return
            self.received += len(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sock.close()


@pytest.mark.slow
def test_slow_readers_stay_connected_while_non_readers_are_dropped(tmp_path: Path) -> None:
    """With request_timeout = 2 s, readers taking ~20 KiB/s of an 8 MiB file (far above 64 KiB
    per request_timeout) are still connected after 7 s, while a client that never reads is
    dropped. The old measure (time from pause_writing to resume_writing) reset such readers
    after ~request_timeout: asyncio resumes writing only once most of the kernel's send buffer
    (MBs) has drained."""
    with _serving(tmp_path, 'request_timeout = "2s"\n') as (port, out, _, _):
        (out / "big.html").write_bytes(os.urandom(8 * 2**20))
        assert httpx.head(f"http://127.0.0.1:{port}/big.html", timeout=10).status_code == 200
        readers = [_SlowReader(port, "/big.html", 20 * 1024) for _ in range(3)]
        non_reader = _non_reader(port, "/big.html")
        try:
            started = time.monotonic()
            assert not _wait_until_reset([non_reader], 10), "a non-reader still open after 10 s"
            time.sleep(max(0.0, 7 - (time.monotonic() - started)))
            dropped = [r.dropped_after for r in readers if r.dropped_after is not None]
            assert not dropped, f"slow readers dropped after {dropped} s"
            assert all(r.received > 100 * 1024 for r in readers), [r.received for r in readers]
        finally:
            non_reader.close()
            for reader in readers:
                reader.close()


def _server_send_queues(port: int) -> list[int]:
    """Unacknowledged bytes in the kernel send queue of each established connection whose
    local port is `port` (tx_queue in /proc/net/tcp): the server's side of its clients."""
    queues = []
    for line in Path("/proc/net/tcp").read_text("ascii").splitlines()[1:]:
        fields = line.split()
        local, state, queue = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":  # 01: ESTABLISHED
            queues.append(int(queue.split(":")[0], 16))
    return queues


@pytest.mark.slow
def test_a_non_reader_pins_a_bounded_kernel_send_buffer(tmp_path: Path) -> None:
    """The kernel's send buffer of a client socket is capped (SEND_BUFFER_BYTES, doubled by
    Linux): a client that stops reading holds at most ~0.5 MB of kernel memory until it is
    dropped, not the ~2.7 MB that autotuning grows to on loopback."""
    with _serving(tmp_path, "") as (port, out, _, _):
        (out / "big.html").write_bytes(os.urandom(8 * 2**20))
        assert httpx.head(f"http://127.0.0.1:{port}/big.html", timeout=10).status_code == 200
        sock = _non_reader(port, "/big.html")
        try:
            queued: list[int] = []

            def filled() -> bool:
                queued[:] = _server_send_queues(port)
                return bool(queued) and max(queued) > 100_000

            wait_for(filled, 5, "the server's send queue to fill")
            time.sleep(1)  # autotuning, were it on, grows the buffer meanwhile
            assert max(_server_send_queues(port)) < 2**20, _server_send_queues(port)
        finally:
            sock.close()


def _head_in_parts(port: int, size: int) -> socket.socket:
    """A connection sending a GET whose path is `size` bytes, 8 KB at a time, as a slow
    network delivers it (h11 then sees a head over its 16 KB limit before its end)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for start in range(0, len(head), 8192):
        sock.sendall(head[start : start + 8192])
        time.sleep(0.002)
    return sock


@pytest.mark.slow
def test_a_head_over_the_limit_gets_its_400_not_a_reset(serve: tuple[int, Path, Path]) -> None:
    """The 400 goes out before the client has finished sending: the connection lingers,
    dropping what still comes, so the client reads its answer (closed at once, with bytes
    unread, the kernel reset it, and the client saw a broken pipe instead)."""
    port, _, log = serve
    for _ in range(5):
        with _head_in_parts(port, 100_000) as sock:
            response = http.client.HTTPResponse(sock)
            try:
                response.begin()
                assert response.status == 400
            finally:
                response.close()
    assert "Traceback" not in log.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_client_that_keeps_sending_after_its_400_is_closed_soon(
    serve: tuple[int, Path, Path],
) -> None:
    """The linger is bounded: a client trickling bytes for ever after its 400 (never the
    LINGER_BYTES that would end it sooner) is cut off after LINGER_SECONDS, not held."""
    port, _, _ = serve
    with _head_in_parts(port, 40_000) as sock:
        started = time.monotonic()
        with pytest.raises(OSError):  # a reset or a broken pipe, once the server closes
            while time.monotonic() - started < 30:
                sock.sendall(b"x" * 100)
                time.sleep(0.01)
        assert time.monotonic() - started < LINGER_SECONDS + 3


@pytest.mark.slow
def test_a_client_that_floods_after_its_400_is_closed_at_the_byte_bound(
    serve: tuple[int, Path, Path],
) -> None:
    """Past LINGER_BYTES dropped, the linger ends at once, not at LINGER_SECONDS."""
    port, _, _ = serve
    with _head_in_parts(port, 40_000) as sock:
        started = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - started < 30:
                sock.sendall(b"x" * 65536)
        assert time.monotonic() - started < LINGER_SECONDS / 2

"""The watchdog: /healthz says 503 with the reason when the loop was blocked, the store file
vanished or was replaced, publishing keeps failing, or a poll's record was refused; and
operators' filters never keep /healthz from answering nor stop a publish."""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aggregator import publish
from aggregator.config import load_config
from aggregator.daemon import Daemon, DaemonOptions, polling, publishing
from aggregator.watchdog import stalled_parsers_problem
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.storedata import refuse_entry_writes
from tests.test_daemon import NOW, _free_port, _items, _write_config, wait_for
from tests.test_daemon import Daemon as DaemonProcess
from tests.test_daemon_inprocess import _config, _feed, _run_for

FAST = DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False)


# -- in-process ----------------------------------------------------------------------------


def test_a_blocked_loop_is_seen_while_it_lasts_and_reported_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    options = DaemonOptions(
        tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False, loop_block_seconds=1.0
    )
    daemon = Daemon(config, load_config(config), options=options)
    seen: list[str | None] = []

    def block_the_loop() -> None:
        time.sleep(2.0)  # on the loop's thread: nothing else runs meanwhile

    async def during() -> None:
        seen.append(await daemon.health())
        block_the_loop()
        await asyncio.sleep(0.6)  # the watchdog's next beat measures the lag
        seen.append(await daemon.health())

    caplog.set_level(logging.INFO, logger="aggregator")
    asyncio.run(_run_for(daemon, 0.1, during))
    assert seen[0] is None
    assert seen[1] is not None and seen[1].startswith("the event loop was blocked for ")
    assert "block_the_loop" in seen[1]
    # The monitor thread logged the block while it lasted, with where the loop was.
    [during_block] = [r.getMessage() for r in caplog.records if "has been blocked" in r.message]
    assert "block_the_loop" in during_block
    metrics = daemon.metrics.render().decode()
    lag = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("aggregator_event_loop_lag_seconds ")
    )
    assert lag >= 0.0
    assert daemon.watchdog.loop.last_block is not None
    assert daemon.watchdog.loop.last_block.seconds >= 1.0
    assert "aggregator_seconds_since_last_publish " in metrics
    assert "aggregator_last_publish_timestamp_seconds " in metrics


def test_a_refused_poll_record_is_unhealthy_until_a_later_one_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _feed(tmp_path, _items("a", 2))
    config = _config(tmp_path)
    refusal = refuse_entry_writes(monkeypatch, "the store failed: disk I/O error")
    daemon = Daemon(config, load_config(config), options=FAST)
    seen: list[str | None] = []

    async def during() -> None:
        # The first tick polls "a" and the store refuses it (within 0.5 s alone; on a busy
        # machine the parser process may take longer to start).
        deadline = asyncio.get_running_loop().time() + 30
        while (problem := await daemon.health()) is None:
            assert asyncio.get_running_loop().time() < deadline, "the refusal never showed"
            await asyncio.sleep(0.1)
        seen.append(problem)
        refusal.refusing = False
        await daemon.polling.poll(daemon.config.sources[0])  # a later poll, recorded
        seen.append(await daemon.health())

    asyncio.run(_run_for(daemon, 0.1, during))
    assert seen[0] is not None and "the poll could not be recorded" in seen[0]
    assert "disk I/O error" in seen[0]
    assert seen[1] is None


def test_publishing_failing_past_its_retry_is_unhealthy_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.5)
    _feed(tmp_path, _items("a", 2))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)
    output = load_config(config).publish.output_dir
    seen: list[str | None] = []

    async def during() -> None:
        # The poll's items published and no publish under way or pending: removing output/
        # under a publish writing into it would race it (it did, on a crowded machine).
        for _ in range(200):
            atom = output / "atom.xml"
            busy = daemon.publishing.pending is not None or daemon.publishing._lock.locked()
            if not busy and atom.is_file() and b"<entry" in atom.read_bytes():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the poll's items were never published")
        seen.append(await daemon.health())
        shutil.rmtree(output)
        output.write_text("a file where the directory must be\n")  # root ignores chmod
        daemon.request_publish()
        await asyncio.sleep(2.0)  # failing for longer than the (shortened) retry interval
        seen.append(await daemon.health())
        output.unlink()
        output.mkdir()
        await asyncio.sleep(1.5)  # the next retry works
        seen.append(await daemon.health())

    asyncio.run(_run_for(daemon, 0.1, during))
    assert seen[0] is None
    assert seen[1] is not None and seen[1].startswith("publishing has failed for ")
    assert str(output) in seen[1]
    assert seen[2] is None
    assert (output / "atom.xml").is_file()


def test_a_publish_that_hits_a_bug_is_retried_and_unhealthy_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.5)
    _feed(tmp_path, _items("a", 2))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)
    broken = [False]
    original = publish.publish_timeline

    def publish_timeline(*args: object) -> object:
        if broken[0]:
            raise RuntimeError("a bug in a renderer")
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(publishing, "publish_timeline", publish_timeline)
    seen: list[str | None] = []

    async def health_until(wanted: Callable[[str | None], bool]) -> None:
        """Health until `wanted` holds of it (on a busy machine publishes and retries take
        longer than their nominal times), then that health, kept."""
        deadline = asyncio.get_running_loop().time() + 30
        while not wanted(problem := await daemon.health()):
            assert asyncio.get_running_loop().time() < deadline, problem
            await asyncio.sleep(0.1)
        seen.append(problem)

    async def during() -> None:
        await asyncio.sleep(0.5)
        broken[0] = True
        daemon.request_publish()
        # Failing for longer than the (shortened) retry interval: unhealthy.
        await health_until(lambda problem: problem is not None)
        broken[0] = False
        await health_until(lambda problem: problem is None)  # a later retry works

    caplog.set_level(logging.INFO, logger="aggregator")
    asyncio.run(_run_for(daemon, 0.1, during))
    assert seen[0] is not None and "a bug in a renderer" in seen[0]
    assert seen[1] is None
    # Logged once with its traceback, not at every retry.
    bugs = [r for r in caplog.records if "a bug in a renderer" in r.getMessage()]
    assert len(bugs) == 1 and bugs[0].exc_info is not None


def test_the_parser_pool_probe_rule() -> None:
    assert stalled_parsers_problem(0.0, 20.0) is None
    assert stalled_parsers_problem(20.0, 20.0) is None
    problem = stalled_parsers_problem(31.0, 20.0)
    assert problem == "the parser pool has finished nothing for 31 s"


def test_a_stalled_parser_pool_makes_the_daemon_unhealthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)
    budget = daemon.config.poll.parse_timeout.total_seconds()
    stall = [0.0]
    monkeypatch.setattr(daemon.polling.parsers, "stalled_seconds", lambda: stall[0])
    seen: list[str | None] = []

    async def during() -> None:
        seen.append(await daemon.health())
        stall[0] = 2 * budget  # a queued parse may wait through another: not yet a stall
        seen.append(await daemon.health())
        stall[0] = 2 * budget + polling.PARSER_SLACK + 1
        seen.append(await daemon.health())

    asyncio.run(_run_for(daemon, 0.1, during))
    assert seen[:2] == [None, None]
    assert seen[2] is not None and seen[2].startswith("the parser pool has finished nothing")


# -- the real daemon -----------------------------------------------------------------------


class HealthPoller:
    """Asks /healthz over and over from a thread; records each answer's status and time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, float]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = httpx.get(self.url, timeout=2.0).status_code
                self.answers.append((status, time.monotonic() - started))
            except httpx.HTTPError as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            self._stop.wait(0.1)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def daemon_on(tmp_path: Path, feed_server: FeedServer) -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def _configure(daemon_config: Path, port: int, feeds: list[tuple[str, str]], publish: str) -> None:
    _write_config(daemon_config, port, feeds)
    text = daemon_config.read_text(encoding="utf-8")
    daemon_config.write_text(text.replace("[publish]\n", f"[publish]\n{publish}\n"), "utf-8")


def _start(
    tmp_path: Path, feed_server: FeedServer, started: list[DaemonProcess], publish: str = ""
) -> DaemonProcess:
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _configure(config, port, [("a", feed_server.url("/a.xml"))], publish)
    daemon = DaemonProcess(config, port)
    started.append(daemon)
    return daemon.start()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pattern", "titles"),
    [
        pytest.param("sponsored.*content", ["sponsored " * 30_000], id="ordinary-300KB-title"),
        pytest.param("(a+)+$", ["a" * 41 + "!", "a" * 5000 + "!"], id="catastrophic"),
    ],
)
def test_a_filter_never_keeps_healthz_from_answering_nor_stops_a_publish(
    tmp_path: Path,
    feed_server: FeedServer,
    daemon_on: list[DaemonProcess],
    pattern: str,
    titles: list[str],
) -> None:
    hostile = [
        Item(t, f"https://a.example.org/h{i}", f"tag:a,2025:h{i}", NOW)
        for i, t in enumerate(titles)
    ]
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", [*_items("a", 1), *hostile]))
    publish = f'exclude = ["{pattern}"]'
    daemon = _start(tmp_path, feed_server, daemon_on, publish)
    atom = tmp_path / "output" / "atom.xml"
    with HealthPoller(daemon.url("/healthz")) as health:
        wait_for(lambda: "a ख़बर 0" in atom.read_text("utf-8"), 30, "the first items published")
        # A source added: polled at once, and its items make the next publish.
        feed_server.add("/b.xml", rss2("B", "https://b.example.org/", [*_items("b", 1), *hostile]))
        feeds = [("a", feed_server.url("/a.xml")), ("b", feed_server.url("/b.xml"))]
        _configure(daemon.config, daemon.port, feeds, publish)
        wait_for(lambda: "b ख़बर 0" in atom.read_text("utf-8"), 30, "the next publish")
    assert health.failures == []
    assert health.answers and all(status == 200 for status, _ in health.answers)
    assert max(seconds for _, seconds in health.answers) < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_file_deleted_or_replaced_under_the_daemon_is_unhealthy(
    tmp_path: Path, feed_server: FeedServer, daemon_on: list[DaemonProcess], how: str
) -> None:
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 2)))
    daemon = _start(tmp_path, feed_server, daemon_on)
    store = load_config(daemon.config).store.path
    if how == "deleted":
        store.unlink()
    else:
        other = store.with_name("other.db")
        other.write_bytes(store.read_bytes())
        other.replace(store)
    wait_for(lambda: daemon.get("/healthz").status_code == 503, 10, "/healthz to say 503")
    reason = daemon.get("/healthz").json()["reason"]
    assert str(store) in reason
    assert ("vanished" if how == "deleted" else "replaced") in reason
    errors = [line for line in daemon.log_text().splitlines() if "ERROR" in line]
    assert any(str(store) in line for line in errors), daemon.log_text()

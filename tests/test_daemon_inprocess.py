"""The daemon in-process (no HTTP server), for behaviour a subprocess cannot easily show:
a crashing poll backs off, housekeeping re-publishes, a stop publishes what was stored,
a reload survives odd files, and a taken port is a clean exit 1."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import archiving, poll, publish
from aggregator.config import load_config
from aggregator.daemon import Daemon, DaemonOptions, publishing, threads
from aggregator.errors import StorageError
from aggregator.publish import PublishReport
from aggregator.store import SourceState
from aggregator.store.sqlite import SqliteStore
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.storedata import refuse_entry_writes
from tests.test_daemon import NOW, _items

FAST = DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False)


def _feed(tmp_path: Path, items: list[Item]) -> Path:
    path = tmp_path / "a.xml"
    path.write_bytes(rss2("A", "https://a.example.org/", items))
    return path


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[publish]\nmax_age = "3650d"\n[[feeds]]\nname = "a"\nurl = "a.xml"\n{extra}',
        encoding="utf-8",
    )
    return config


def _state(config: Path, name: str) -> SourceState | None:
    """A source's state as the store of the daemon run on `config` left it."""
    store = SqliteStore.open(load_config(config).store.path)
    try:
        return store.source_state(name)
    finally:
        store.close()


async def _run_for(
    daemon: Daemon, seconds: float, during: Callable[[], Awaitable[None]] | None = None
) -> None:
    task = asyncio.create_task(daemon.run())
    if during is not None:
        await asyncio.sleep(0.3)
        await during()
    await asyncio.sleep(seconds)
    daemon.stop()
    await asyncio.wait_for(task, 10)


def test_a_crashing_poll_is_recorded_and_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _feed(tmp_path, _items("a", 2))
    config = _config(tmp_path)
    calls = []

    async def crash(*args: object) -> None:
        calls.append(1)
        raise RuntimeError("a bug")

    monkeypatch.setattr(poll, "poll_source", crash)
    daemon = Daemon(config, load_config(config), options=FAST)
    asyncio.run(_run_for(daemon, 2.0))
    assert len(calls) == 1  # not once per tick
    state = _state(config, "a")
    assert state is not None and state.failures == 1
    assert state.last_error == "internal error: RuntimeError: a bug"
    assert state.next_poll is not None and state.next_poll > NOW


def test_a_stopped_poll_gives_its_claim_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll cancelled by the stop records nothing; its claim must not wait out the lease."""
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    started = []

    async def hang(*args: object) -> None:
        started.append(1)
        await asyncio.sleep(3600)

    monkeypatch.setattr(poll, "poll_source", hang)
    daemon = Daemon(config, load_config(config), options=FAST)
    asyncio.run(_run_for(daemon, 0.5))
    assert started == [1]
    store = SqliteStore.open(load_config(config).store.path)
    try:
        assert store.claim_due(["a"], NOW, "another-daemon", timedelta(minutes=1)) == ["a"]
    finally:
        store.close()


def test_housekeeping_republishes(tmp_path: Path) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    options = DaemonOptions(
        tick_seconds=0.1, publish_debounce_seconds=0.1, housekeeping_seconds=0.3, serve=False
    )
    daemon = Daemon(config, load_config(config), options=options)
    asyncio.run(_run_for(daemon, 2.0))
    # start-up, the first poll's items, then housekeeping every 0.3 s
    assert daemon.metrics.publishes._value.get() >= 4
    # What its start froze out of collections (heap.py) is given back once it stopped.
    assert gc.get_freeze_count() == 0


async def _run_until(daemon: Daemon, condition: Callable[[], bool], seconds: float) -> None:
    """Run `daemon` until `condition` holds (a failure after `seconds`), then stop it: a
    crowded machine (parallel tests) may take longer than a fixed sleep to poll."""
    task = asyncio.create_task(daemon.run())
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            assert not task.done(), "the daemon ended"
            await asyncio.sleep(0.05)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)


def test_stop_publishes_what_was_stored(tmp_path: Path) -> None:
    _feed(tmp_path, _items("a", 3))
    config = _config(tmp_path)
    options = DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=30, serve=False)
    daemon = Daemon(config, load_config(config), options=options)
    stored = daemon.metrics.items_stored
    asyncio.run(_run_until(daemon, lambda: stored._value.get() == 3, 30))
    rss = (tmp_path / "output" / "rss.xml").read_text(encoding="utf-8")
    assert rss.count("<item>") == 3


def test_reload_survives_an_unreadable_config_and_keeps_watching(tmp_path: Path) -> None:
    _feed(tmp_path, _items("a", 1))
    (tmp_path / "b.xml").write_bytes(rss2("B", "https://b.example.org/", _items("b", 1)))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)

    async def edits() -> None:
        config.write_text(
            config.read_text() + '[aggregator]\ntimezone = "Asia"\n', encoding="utf-8"
        )
        await asyncio.sleep(1.0)
        config.write_text(
            config.read_text().replace('[aggregator]\ntimezone = "Asia"\n', "")
            + '[[feeds]]\nname = "b"\nurl = "b.xml"\n',
            encoding="utf-8",
        )
        await asyncio.sleep(1.5)

    asyncio.run(_run_for(daemon, 0.5, during=edits))
    assert [s.name for s in daemon.config.sources] == ["a", "b"]
    assert "b.example.org" in (tmp_path / "output" / "atom.xml").read_text(encoding="utf-8")


def test_a_taken_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        (tmp_path / "feeds.toml").write_text(
            f'[server]\nport = {port}\n[[feeds]]\nurl = "http://127.0.0.1:9/x.xml"\n',
            encoding="utf-8",
        )
        for command in ("run", "serve"):
            result = run_cli(command, "--config", "feeds.toml", cwd=tmp_path, timeout=30)
            assert result.returncode == 1, (command, result.stderr)
            assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
            assert "Traceback" not in result.stderr


def test_a_slow_publish_spaces_out_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish that took s seconds is followed by the next no sooner than PUBLISH_PACE × s
    later, so a large timeline's rendering cannot take over the daemon."""
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)
    real = publish.publish_timeline

    def slow(*args: Any) -> PublishReport:
        return dataclasses.replace(real(*args), seconds=0.5)  # as if it had taken 0.5 s

    monkeypatch.setattr(publishing, "publish_timeline", slow)
    waits: list[float] = []

    def pending() -> asyncio.TimerHandle:
        assert daemon.publishing.pending is not None
        return daemon.publishing.pending

    async def request() -> None:
        loop = asyncio.get_running_loop()
        await daemon.publishing.publish()  # the slow one
        if daemon.publishing.pending is not None:  # one the first poll asked for meanwhile
            daemon.publishing.pending.cancel()
            daemon.publishing.pending = None
        daemon.request_publish()
        waits.append(pending().when() - loop.time())
        # A request made earlier, firing now (it was made during the slow publish): it
        # looks again later instead of publishing at once.
        pending().cancel()
        daemon.publishing.start()
        assert not daemon.publishing.running
        waits.append(pending().when() - loop.time())

    asyncio.run(_run_for(daemon, 0.1, during=request))
    assert len(waits) == 2
    assert min(waits) > 0.5 * publishing.PUBLISH_PACE - 0.2  # not the 0.2 s debounce


def test_a_failed_publish_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish the store made fail (its database away) is tried again a little later:
    items already stored must not wait for the next new item to be published."""
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    real = publish.publish_timeline
    calls: list[int] = []

    def flaky(*args: Any) -> PublishReport:
        calls.append(1)
        if len(calls) == 2:  # the publish of the first poll's item; none comes after it
            raise StorageError("the database does not answer")
        return real(*args)

    monkeypatch.setattr(publishing, "publish_timeline", flaky)
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.3)
    daemon = Daemon(config, load_config(config), options=FAST)
    # Until the retry: a loaded machine may take seconds over the first poll.
    asyncio.run(_run_until(daemon, lambda: len(calls) >= 3, 30))
    assert len(calls) >= 3  # start-up, the failed one, the retry (and the stop's)
    atom = (tmp_path / "output" / "atom.xml").read_text(encoding="utf-8")
    assert atom.count("<entry>") == 1


def test_a_store_error_on_one_source_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error only this source's data causes (a row the database refuses) is
    recorded as a failed poll: the source backs off instead of being polled every tick,
    and the log has one line, not a traceback."""
    _feed(tmp_path, _items("a", 2))
    config = _config(tmp_path)
    # The poll's entries are refused, its failure is not.
    attempts = refuse_entry_writes(monkeypatch, "the store failed: invalid byte sequence").attempts
    daemon = Daemon(config, load_config(config), options=FAST)  # a tick every 0.1 s

    async def attempted() -> None:  # a loaded machine may take seconds over the first poll
        deadline = time.monotonic() + 30
        while not attempts and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(_run_for(daemon, 1.2, attempted))  # then a dozen ticks: no poll again
    assert attempts == ["a"]
    state = _state(config, "a")
    assert state is not None and state.failures == 1
    assert state.last_error is not None and "invalid byte sequence" in state.last_error


def test_the_daemon_publishes_again_until_the_archives_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One publish reads a bounded share of the archives' days (here one day): the daemon
    publishes again, at its pace, until every past day has its document."""
    days = 8
    items = [
        Item(f"Day {d} story {n}", f"https://a.example.org/{d}/{n}", f"d{d}-{n}",
             NOW - timedelta(days=d, minutes=n))
        for d in range(1, days + 1)
        for n in range(2)
    ]  # fmt: skip
    _feed(tmp_path, items)
    config = _config(tmp_path)
    monkeypatch.setattr(archiving, "ARCHIVE_BUDGET", 1)
    options = DaemonOptions(
        tick_seconds=0.1, publish_debounce_seconds=0.05, housekeeping_seconds=3600, serve=False
    )
    daemon = Daemon(config, load_config(config), options=options)
    output = tmp_path / "output"

    def archived() -> int:
        return len(list((output / "archive").rglob("*.atom"))) if output.exists() else 0

    asyncio.run(_run_until(daemon, lambda: archived() >= days, 30))
    assert daemon.metrics.publishes._value.get() >= days


def test_the_disabled_gauge_follows_the_store_at_start_and_after_a_reload(tmp_path: Path) -> None:
    """After a start or a reload the gauge is made from the disabled sources' names (all
    50,000 sources' full states were read for it, 0.46 s on the event loop): a source gone
    (410) shows; once its URL changes, it does not."""
    from tests.storedata import disabled  # noqa: PLC0415

    _feed(tmp_path, _items("a", 1))
    for name in ("b", "c"):
        (tmp_path / f"{name}.xml").write_bytes((tmp_path / "a.xml").read_bytes())
    config = _config(tmp_path, '[[feeds]]\nname = "b"\nurl = "b.xml"\n')
    store = SqliteStore.open(load_config(config).store.path)
    try:
        poll.sync_sources(store, load_config(config).sources, NOW)
        disabled(store, "b", "HTTP 410 Gone", NOW)
    finally:
        store.close()
    daemon = Daemon(config, load_config(config), options=FAST)
    shown: list[set[str]] = []

    async def during() -> None:
        shown.append(daemon.metrics.disabled_sources())
        config.write_text(
            config.read_text(encoding="utf-8").replace('url = "b.xml"', 'url = "c.xml"'),
            encoding="utf-8",
        )
        deadline = time.monotonic() + 20
        while daemon.metrics.disabled_sources() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        shown.append(daemon.metrics.disabled_sources())

    asyncio.run(_run_for(daemon, 0.1, during))
    assert shown == [{"b"}, set()]
    assert b'aggregator_source_disabled{source="b"}' not in daemon.metrics.render()


def test_the_gil_is_handed_to_the_loop_quickly_while_the_daemon_runs(tmp_path: Path) -> None:
    """The loop's SQLite calls give the GIL up at every statement and row; behind a publish
    rendering on its thread, each took it back after CPython's 5 ms: a claim of a few rows
    took 0.1-0.3 s during a publish of 50,000 sources (`bench/stall.py` measures it). While
    the daemon runs, a thread hands the GIL over within 1 ms; the setting is put back after."""
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=FAST)
    before = sys.getswitchinterval()
    seen: list[float] = []

    async def look() -> None:
        seen.append(sys.getswitchinterval())

    asyncio.run(_run_for(daemon, 0.1, look))
    assert seen == [threads.LOOP_SWITCH_SECONDS] and before > threads.LOOP_SWITCH_SECONDS
    assert sys.getswitchinterval() == before


def test_a_reload_during_the_sync_is_synced_before_anything_is_claimed(
    tmp_path: Path, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sources are synced in steps, the loop let run between them, so a reload can be
    applied mid-sync. It moved source "a" to a new URL: claimed then, with the store still
    holding the old one, "a" was polled at the old URL and what that served was stored
    under its name. The claim now waits for a sync of the configuration in force."""
    old = feed_server.add("/old.xml", rss2("Old", "https://old.example/", _items("old", 2)))
    new = feed_server.add("/new.xml", rss2("New", "https://new.example/", _items("new", 2)))
    config = tmp_path / "feeds.toml"

    def point_a_at(url: str, b_title: str = "B") -> None:
        text = f'[publish]\nmax_age = "3650d"\n[[feeds]]\nname = "a"\nurl = "{url}"\n'
        b = f'[[feeds]]\nname = "b"\nurl = "b.xml"\ntitle = "{b_title}"\n'
        config.write_text(text + b, encoding="utf-8")

    (tmp_path / "b.xml").write_bytes(rss2("B", "https://b.example/", []))
    point_a_at(old)
    daemon = Daemon(config, load_config(config), options=FAST)
    synced = poll.sync_sources
    edits: list[bool] = []

    def sync_then_edit(store: Any, sources: Any, now: Any) -> None:
        synced(store, sources, now)
        if edits and not edits[-1]:  # the operator's edit, applied between two steps
            point_a_at(new)
            edits.append(daemon.reload())

    monkeypatch.setattr(poll, "sync_sources", sync_then_edit)

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            while (state := _state(config, "a")) is None or state.last_polled is None:
                await asyncio.sleep(0.05)
            with sqlite3.connect(load_config(config).store.path) as db:  # "a" due again
                db.execute("UPDATE sources SET next_poll = NULL WHERE name = 'a'")
            edits.append(False)  # armed: the next sync's first step brings the edit
            point_a_at(old, b_title="B, renamed")  # an unrelated edit: the next claim syncs
            assert daemon.reload()
            deadline = asyncio.get_running_loop().time() + 20
            while not feed_server.seen("/new.xml"):
                assert asyncio.get_running_loop().time() < deadline, "never polled at /new.xml"
                await asyncio.sleep(0.05)
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert edits == [False, True]
    assert len(feed_server.seen("/old.xml")) == 1  # never again after the move
    state = _state(config, "a")
    assert state is not None and state.url == new


def test_daemons_whose_runs_overlap_keep_the_setting_until_the_last_stops() -> None:
    """Two daemons in one process (the tests run several): the first to stop put CPython's
    5 ms back under the one still running, and the last left 1 ms behind."""
    before = sys.getswitchinterval()
    first, second = threads.loop_first(), threads.loop_first()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == threads.LOOP_SWITCH_SECONDS
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before

"""`once` and `run` poll through one path (`poll.poll_claimed`): whatever ends a poll is
recorded the same way by both. Before the path was shared, a store failure during a poll
was an "internal error: StorageError: …" with a traceback under `once`, and "the poll
could not be recorded: …" in one log line under `run`."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.daemon import Daemon, DaemonOptions
from aggregator.fetch import Fetcher
from aggregator.parse.pool import ParsePool
from aggregator.poll import URL_NOT_SYNCED, Poller, SourceReport, poll_claimed, sync_sources
from aggregator.store import SourceState
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import PollOutcome
from aggregator.store.sqlite import SqliteStore
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.storedata import count_entries, refuse_entry_writes
from tests.test_daemon import NOW, _items

FAST = DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False)


def _setup(root: Path) -> Path:
    root.mkdir()
    (root / "a.xml").write_bytes(rss2("A", "https://a.example.org/", _items("a", 2)))
    config = root / "feeds.toml"
    config.write_text('[[feeds]]\nname = "a"\nurl = "a.xml"\n', encoding="utf-8")
    return config


def _write_one(root: Path, url: str) -> Path:
    """feeds.toml with one source, "a", at `url`."""
    config = root / "feeds.toml"
    config.write_text(f'[[feeds]]\nname = "a"\nurl = "{url}"\n', encoding="utf-8")
    return config


def _after(config: Path) -> tuple[SourceState | None, list[str]]:
    """Source "a" as the store left it, and who still holds claims."""
    store = SqliteStore.open(load_config(config).store.path)
    try:
        return store.source_state("a"), store.claim_holders(NOW)
    finally:
        store.close()


def _once(config: Path) -> None:
    loaded = load_config(config)
    store = SqliteStore.open(loaded.store.path)
    try:
        report = asyncio.run(run_cycle(loaded, store, clock=lambda: NOW))
    finally:
        store.close()
    [source] = report.sources
    assert source.outcome == "failed"


def _run(config: Path, attempts: list[str]) -> None:
    daemon = Daemon(config, load_config(config), options=FAST, clock=lambda: NOW)

    async def scenario() -> None:
        before = len(attempts)  # `once`'s attempt, already made
        running = asyncio.create_task(daemon.run())
        for _ in range(300):  # until the daemon's poll the store refused has ended
            await asyncio.sleep(0.1)
            if len(attempts) > before and not daemon.polling.inflight:
                break
        daemon.stop()
        await asyncio.wait_for(running, 20)

    asyncio.run(scenario())


def test_once_and_run_record_a_store_failure_during_a_poll_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poll's entries are refused, its failure is not.
    attempts = refuse_entry_writes(monkeypatch, "the store failed: disk I/O error").attempts
    once, run = _setup(tmp_path / "once"), _setup(tmp_path / "run")
    _once(once)
    assert attempts == ["a"]
    _run(run, attempts)
    assert attempts == ["a", "a"]  # the daemon polled once, then backed off
    (after_once, holders_once), (after_run, holders_run) = _after(once), _after(run)
    assert after_once is not None and after_run is not None

    def recorded(state: SourceState) -> tuple[object, ...]:
        return (
            state.last_outcome,
            state.last_error,
            state.failures,
            state.next_poll,
            state.last_polled,
            state.entries,
        )

    assert recorded(after_once) == recorded(after_run)
    assert after_once.failures == 1
    assert (
        after_once.last_error == "the poll could not be recorded: the store failed: disk I/O error"
    )
    assert after_once.next_poll is not None and after_once.next_poll > NOW
    assert holders_once == holders_run == []  # the claim ended with the record


def test_a_once_cancelled_mid_poll_gives_its_claim_back(tmp_path: Path) -> None:
    """A cycle stopped while a source is being fetched records nothing for it and gives the
    claim back (as bc165e6's `claimed_poll` did), so another process polls it at once
    instead of after the lease."""
    answering = threading.Event()
    let_go = threading.Event()

    def hang(handler: BaseHTTPRequestHandler) -> None:
        answering.set()
        let_go.wait(10)

    server = FeedServer().start()
    server.handlers["/a.xml"] = hang
    root = tmp_path / "site"
    root.mkdir()
    config = root / "feeds.toml"
    config.write_text(f'[[feeds]]\nname = "a"\nurl = "{server.url("/a.xml")}"\n', encoding="utf-8")
    loaded = load_config(config)
    store = SqliteStore.open(loaded.store.path)

    async def scenario() -> None:
        cycle = asyncio.create_task(run_cycle(loaded, store, clock=lambda: NOW))
        while not answering.is_set():
            await asyncio.sleep(0.05)
        assert store.claim_holders(NOW)  # claimed while it is being fetched
        cycle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cycle

    try:
        asyncio.run(scenario())
        state = store.source_state("a")
        assert state is not None and state.last_polled is None  # nothing recorded
        assert store.claim_holders(NOW) == []
    finally:
        let_go.set()
        store.close()
        server.stop()


def test_a_source_whose_new_url_the_store_lacks_is_not_polled_at_the_old_one(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """feeds.toml moved a source to a new URL, and the store still holds the old one (a
    reload arrived while the sources were being synced in steps): polled now, the old URL
    would be fetched with its validators and what it serves stored under the source's
    name. The poll is skipped and its claim given back; the next sync brings the new URL."""
    old = feed_server.add("/old.xml", rss2("Old", "https://old.example/", _items("old", 2)))
    new = feed_server.add("/new.xml", rss2("New", "https://new.example/", _items("new", 2)))
    config = load_config(_write_one(tmp_path, old))
    moved = load_config(_write_one(tmp_path, new))
    store = SqliteStore.open(config.store.path)
    try:
        sync_sources(store, config.sources, NOW)

        async def poll_moved() -> SourceReport:
            on_loop = AsyncStore(store)
            parsers = ParsePool()
            try:
                async with Fetcher() as fetcher:
                    poller = Poller(moved, on_loop, fetcher, parsers, "me", lambda: NOW)
                    assert store.claim_due(["a"], NOW, "me", moved.poll.lease) == ["a"]
                    return await poll_claimed(moved.sources[0], poller)
            finally:
                parsers.close()

        report = asyncio.run(poll_moved())
        assert (report.outcome, report.error) == (PollOutcome.SKIPPED, URL_NOT_SYNCED)
        assert feed_server.seen("/old.xml") == [] and feed_server.seen("/new.xml") == []
        assert store.claim_holders(NOW) == []  # given back, not held until the lease ends
        assert count_entries(store) == 0
    finally:
        store.close()

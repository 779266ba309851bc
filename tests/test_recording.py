"""Polls answered 304 are recorded together (`aggregator.recording`), and a `kill -9` loses
only those records: their sources are polled once more, nothing else is lost.

In process: the poll path with a real SQLite store and a real feed server, where the
transactions are counted. Then the real daemon (`aggregator run`) killed with SIGKILL while
304s' records wait, and started again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.fetch import Fetcher
from aggregator.parse.pool import ParsePool
from aggregator.poll import Poller, SourceReport, poll_claimed, sync_sources
from aggregator.recording import RecordBatch
from aggregator.store import StoreAPI
from aggregator.store.adapter import AsyncStore
from aggregator.store.records import PollOutcome, PollRecord
from aggregator.store.sqlite import SqliteStore
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.storedata import source
from tests.test_daemon import Daemon, _free_port, _items, _write_config, wait_for

NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(hours=2)  # every source due again


class CountingStore:
    """A store that counts the transactions of poll records going through it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.batches: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record_polls(self, records: Sequence[PollRecord]) -> None:
        self.batches.append([r.name for r in records])
        self._store.record_polls(records)

    def record_poll(self, record: PollRecord) -> None:
        self.record_polls([record])


def _sources(root: Path, feed_server: FeedServer, count: int) -> Path:
    for n in range(count):
        feed_server.add(
            f"/s{n}.xml", rss2(f"S{n}", f"https://s{n}.example.org/", _items(f"s{n}", 3))
        )
    config = root / "feeds.toml"
    _write_config(
        config, _free_port(), [(f"s{n}", feed_server.url(f"/s{n}.xml")) for n in range(count)]
    )
    return config


def test_304s_wait_to_be_recorded_together_and_nothing_else_waits(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config_path = _sources(tmp_path, feed_server, 12)
    config = load_config(config_path)
    store = SqliteStore.open(config.store.path)
    try:
        asyncio.run(run_cycle(config, store, clock=lambda: NOW))  # all stored: 36 entries
        feed_server.add("/s0.xml", rss2("S0", "https://s0.example.org/", _items("s0", 5)))
        counting = CountingStore(store)
        names = [s.name for s in config.sources]

        async def poll_all() -> tuple[list[SourceReport], list[list[str]]]:
            on_loop = AsyncStore(cast(StoreAPI, counting))
            records = RecordBatch(on_loop, delay=3600)  # written when flushed, not before
            parsers = ParsePool()
            try:
                async with Fetcher() as fetcher:
                    poller = Poller(config, on_loop, fetcher, parsers, "me", lambda: LATER, records)
                    claimed = store.claim_due(names, LATER, "me", config.poll.lease)
                    assert sorted(claimed) == sorted(names)
                    reports = await asyncio.gather(
                        *(poll_claimed(s, poller) for s in config.sources)
                    )
                    before_flush = [list(b) for b in counting.batches]
                    await records.flush()
            finally:
                parsers.close()
            return reports, before_flush

        reports, before_flush = asyncio.run(poll_all())
        outcomes = {r.name: r.outcome for r in reports}
        assert outcomes == {"s0": "updated"} | dict.fromkeys(names[1:], "not-modified")
        # The poll that stored entries was recorded at once, alone; the eleven 304s waited,
        # and went in together.
        assert before_flush == [["s0"]]
        assert len(counting.batches) == 2
        assert sorted(counting.batches[1]) == sorted(names[1:])
        for name in names:
            state = store.source_state(name)
            assert state is not None and state.last_polled == LATER, name
            assert state.entries == (5 if name == "s0" else 3)
        assert store.claim_holders(LATER) == []  # every claim ended with its record
    finally:
        store.close()


def _states(database: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Each source's (last outcome, claimed_by, next_poll), read as `status` would."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT name, last_outcome, claimed_by, next_poll FROM sources")
        return {name: (outcome, owner, due) for name, outcome, owner, due in rows}


def _entries(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])


def test_a_daemon_killed_with_304s_unrecorded_polls_them_again_and_loses_nothing_else(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    count = 30
    config = _sources(tmp_path, feed_server, count)
    text = config.read_text(encoding="utf-8").replace('interval = "1h"', 'interval = "2s"')
    config.write_text(text, encoding="utf-8")
    database = tmp_path / "state" / "aggregator.db"
    daemon = Daemon(config, int(text.split("port = ")[1].split()[0])).start()
    try:
        wait_for(lambda: _entries(database) == 3 * count, 30, "every source stored")
        wait_for(
            lambda: all(o == "updated" for o, _, _ in _states(database).values()),
            30,
            "every first poll recorded",
        )
        feed_server.clear()
        deadline = time.monotonic() + 30
        while not [r for r in feed_server.seen() if r.status == 304]:
            assert time.monotonic() < deadline, "no 304 within 30 s"
            time.sleep(0.01)
        assert daemon.process is not None
        daemon.process.kill()  # SIGKILL within a few ms of a 304: its record still waits
        daemon.process.wait()
        answered = {
            r.path.strip("/").removesuffix(".xml") for r in feed_server.seen() if r.status == 304
        }
        states = _states(database)
        lost = {name for name in answered if states[name][0] != "not-modified"}
        assert lost, f"every record of {sorted(answered)} was written before the kill"
        now = datetime.now(UTC).isoformat()
        for name in lost:
            outcome, owner, due = states[name]
            # The poll before it is what the store says; the source is due, its claim held.
            assert outcome == "updated" and owner is not None and due is not None and due < now
        assert _entries(database) == 3 * count  # nothing else lost
        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        feed_server.clear()
        started = time.monotonic()
        daemon = Daemon(config, daemon.port).start()
        # Taken back at start (a dead process on this host), not after the 80 s lease.
        wait_for(
            lambda: all(_states(database)[n][0] == "not-modified" for n in lost),
            20,
            "the sources whose 304 records were lost to be polled again",
        )
        assert time.monotonic() - started < 30
        assert {n for n in lost if not feed_server.seen(f"/{n}.xml")} == set()
        assert _entries(database) == 3 * count
        assert daemon.stop() == 0
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()


def test_a_store_refusing_the_batch_is_said_once_and_costs_only_another_poll(
    tmp_path: Path,
) -> None:
    """The batch's write fails: logged, `problem` set (the daemon's /healthz says it), the
    records dropped; the next write that works clears it."""
    store = SqliteStore.open(tmp_path / "store.db")
    try:
        sync_sources(store, [source("a")], NOW)
        record = PollRecord("a", NOW, PollOutcome.NOT_MODIFIED, next_poll=LATER)

        async def go() -> tuple[str | None, str | None]:
            records = RecordBatch(AsyncStore(store), delay=3600)
            store._db.execute("PRAGMA query_only = ON")  # every write now refused
            records.add(record)
            await records.flush()
            refused = records.problem
            store._db.execute("PRAGMA query_only = OFF")
            records.add(record)
            await records.flush()
            return refused, records.problem

        refused, after = asyncio.run(go())
        assert refused is not None and refused.startswith("1 polls could not be recorded")
        assert after is None
        state = store.source_state("a")
        assert state is not None and state.last_outcome == "not-modified"
    finally:
        store.close()

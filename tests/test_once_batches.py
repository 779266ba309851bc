"""`once` claims its sources a batch of `concurrency` at a time (one state read and one
claim per batch, not two store calls per source), and never holds more than twice
`concurrency` claims: a claim waits for its poll no longer than its lease allows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.errors import StorageError
from aggregator.poll import SourceReport
from aggregator.settings import Config
from aggregator.store import SourceState
from aggregator.store.sqlite import SqliteStore
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import NOW, _items
from tests.test_politeness import _respond

SOURCES = 25
CONCURRENCY = 4


class _Watched(SqliteStore):
    """The real store, noting each batch it is asked to read or claim, and how many claims
    were held (in the database) whenever a batch was claimed."""

    read: list[int]
    claimed: list[int]
    held: list[int]

    def poll_states(self, names: Sequence[str]) -> dict[str, SourceState]:
        self.read.append(len(names))
        return super().poll_states(names)

    def claim_due(
        self, names: Sequence[str], now: datetime, owner: str, lease: timedelta, **kw: object
    ) -> list[str]:
        self.claimed.append(len(names))
        found = super().claim_due(names, now, owner, lease, **kw)  # type: ignore[arg-type]
        # A poll's record ends its claim (`claimed_by` back to NULL).
        [(count,)] = self._db.execute(
            "SELECT count(*) FROM sources WHERE claimed_by IS NOT NULL"
        ).fetchall()
        self.held.append(int(count))
        return found


def _file_sources(root: Path, count: int, items: int, concurrency: int) -> Config:
    """`count` sources s0, s1, … read from files of `items` items each, in `root`."""
    feeds = []
    for n in range(count):
        (root / f"s{n}.xml").write_bytes(
            rss2(f"S{n}", f"https://s{n}.example.org/", _items(f"s{n}", items))
        )
        feeds.append(f'[[feeds]]\nname = "s{n}"\nurl = "s{n}.xml"\n')
    config = root / "feeds.toml"
    config.write_text(f"[poll]\nconcurrency = {concurrency}\n" + "".join(feeds), encoding="utf-8")
    return load_config(config)


def test_once_reads_and_claims_a_batch_at_a_time(tmp_path: Path) -> None:
    loaded = _file_sources(tmp_path, SOURCES, 2, CONCURRENCY)
    store = cast(_Watched, _Watched.open(loaded.store.path))
    store.read, store.claimed, store.held = [], [], []
    try:
        report = asyncio.run(run_cycle(loaded, store, clock=lambda: NOW))
    finally:
        store.close()
    assert [s.outcome for s in report.sources] == ["updated"] * SOURCES
    batches = -(-SOURCES // CONCURRENCY)
    assert store.claimed == [CONCURRENCY] * (SOURCES // CONCURRENCY) + [SOURCES % CONCURRENCY]
    assert len(store.read) == batches
    assert CONCURRENCY <= max(store.held) <= 2 * CONCURRENCY, store.held


class _ClaimFails(SqliteStore):
    """The real store, whose claims fail (a database locked by a daemon writing, say)."""

    def claim_due(self, *args: Any, **kw: Any) -> list[str]:
        raise StorageError("database is locked")


def test_a_failed_claim_leaves_a_server_s_retry_after_as_it_was(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """A source waiting for its server's Retry-After is skipped before any claim; when the
    batch's claim then fails, the others are recorded as failed, and the wait stands."""
    feed_server.handlers["/wait.xml"] = _respond(503, {"Retry-After": "21600"})
    (tmp_path / "ok.xml").write_bytes(rss2("OK", "https://ok.example.org/", _items("ok", 2)))
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[[feeds]]\nname = "wait"\nurl = "{feed_server.url("/wait.xml")}"\n'
        '[[feeds]]\nname = "ok"\nurl = "ok.xml"\n',
        encoding="utf-8",
    )
    loaded = load_config(config)
    store = SqliteStore.open(loaded.store.path)
    try:
        asyncio.run(run_cycle(loaded, store))  # "wait" answers 503, Retry-After: 6 h
        waiting = store.source_state("wait")
    finally:
        store.close()
    assert waiting is not None and waiting.retry_after is not None
    failing = cast(_ClaimFails, _ClaimFails.open(loaded.store.path))
    try:
        report = asyncio.run(run_cycle(loaded, failing))
        after = failing.source_state("wait")
    finally:
        failing.close()
    outcomes = {s.name: (s.outcome, s.error) for s in report.sources}
    assert outcomes["wait"][0] == "skipped"
    assert "asked us not to return" in (outcomes["wait"][1] or "")
    assert outcomes["ok"] == ("failed", "the poll could not be recorded: database is locked")
    assert after is not None
    assert (after.retry_after, after.failures) == (waiting.retry_after, waiting.failures)


def test_a_cycle_that_ends_early_leaves_no_claim_behind(tmp_path: Path) -> None:
    """A cycle ended by an error (here its progress callback's) while sources are claimed
    and not yet polled gives every claim back, not leaving them to the lease."""
    loaded = _file_sources(tmp_path, 6, 1, 1)

    def broken(report: SourceReport) -> None:
        raise RuntimeError("the progress display broke")

    store = SqliteStore.open(loaded.store.path)
    try:
        with pytest.raises(RuntimeError):
            asyncio.run(run_cycle(loaded, store, on_source=broken))
        assert store.claim_holders(datetime.now(UTC) + timedelta(seconds=1)) == []
    finally:
        store.close()

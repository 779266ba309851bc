"""`once` claims its sources a batch of `concurrency` at a time (one state read and one
claim per batch, not two store calls per source), and never holds more than twice
`concurrency` claims: a claim waits for its poll no longer than its lease allows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.store import SourceState
from aggregator.store.sqlite import SqliteStore
from tests.feedfactory import rss2
from tests.test_daemon import NOW, _items

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


def test_once_reads_and_claims_a_batch_at_a_time(tmp_path: Path) -> None:
    feeds = []
    for n in range(SOURCES):
        (tmp_path / f"s{n}.xml").write_bytes(
            rss2(f"S{n}", f"https://s{n}.example.org/", _items(f"s{n}", 2))
        )
        feeds.append(f'[[feeds]]\nname = "s{n}"\nurl = "s{n}.xml"\n')
    config = tmp_path / "feeds.toml"
    config.write_text(f"[poll]\nconcurrency = {CONCURRENCY}\n" + "".join(feeds), encoding="utf-8")
    loaded = load_config(config)
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

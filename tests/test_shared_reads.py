"""`SharedReads` answers a channel's reads from the root's only when the answer is the
store's own: property-tested against a real SQLite store, whatever the entries, the
channels' sources and the limits."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.poll import store_entries, sync_sources
from aggregator.shared_reads import SharedReads
from aggregator.store.sqlite import SqliteStore
from aggregator.update import story_keys_of
from tests.storedata import NOW, entry, source

NAMES = [f"s{n}" for n in range(5)]

# One entry: its source, hours before NOW, and which of a few links and titles it carries
# (shared links and titles make copies of one story across sources, and earlier copies).
ENTRY = st.tuples(
    st.sampled_from(NAMES),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=6),
)


def _fill(store: SqliteStore, rows: list[tuple[str, int, int, int]]) -> None:
    sync_sources(store, [source(n) for n in NAMES], NOW)
    for serial, (name, hours, link, title) in enumerate(rows):
        parsed = entry(
            f"{name}-{serial}",
            f"Headline number {title} of the shared story",
            published=NOW - timedelta(hours=hours),
        )
        store_entries(store, name, [replace(parsed, link=f"https://news.example/{link}")], NOW)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(ENTRY, min_size=5, max_size=50),
    root_limit=st.integers(min_value=1, max_value=20),
    channels=st.lists(
        st.tuples(
            st.sets(st.sampled_from(NAMES), min_size=1),
            st.integers(min_value=1, max_value=20),
        ),
        min_size=1,
        max_size=4,
    ),
    window=st.integers(min_value=6, max_value=61),
)
def test_a_shared_read_is_the_stores_own_answer(
    rows: list[tuple[str, int, int, int]],
    root_limit: int,
    channels: list[tuple[set[str], int]],
    window: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore.open(Path(tmp) / "store.sqlite3")
        try:
            _fill(store, rows)
            since = NOW - timedelta(hours=window)
            reads = SharedReads(store)
            root = reads.recent_entries(NAMES, since, root_limit)
            assert root == store.recent_entries(NAMES, since, root_limit)
            reads.earlier_copies(NAMES, root, since, root_limit)
            for names, limit in channels:
                wanted = sorted(names)
                mine = reads.recent_entries(wanted, since, limit)
                assert mine == store.recent_entries(wanted, since, limit)
                assert reads.earlier_copies(wanted, mine, since, limit) == store.earlier_copies(
                    wanted, story_keys_of(mine), since, limit
                )
        finally:
            store.close()


def test_a_channel_within_the_roots_read_costs_no_query(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "store.sqlite3")
    try:
        _fill(store, [(NAMES[n % 2], n, n, n) for n in range(10)])
        reads = SharedReads(store)
        root = reads.recent_entries(NAMES, NOW - timedelta(days=1), 50)  # all 10: complete
        reads.earlier_copies(NAMES, root, NOW - timedelta(days=1), 50)
        assert reads.queries == 2
        mine = reads.recent_entries(["s1"], NOW - timedelta(days=1), 50)
        reads.earlier_copies(["s1"], mine, NOW - timedelta(days=1), 50)
        assert [e.source for e in mine] == ["s1"] * 5
        assert reads.queries == 2  # answered from the root's reads
    finally:
        store.close()


def test_a_truncated_earlier_read_is_not_used_for_a_channel(tmp_path: Path) -> None:
    """The root's earlier copies cut at its limit may lack a channel's: the store is asked."""
    store = SqliteStore.open(tmp_path / "store.sqlite3")
    try:
        sync_sources(store, [source(n) for n in NAMES], NOW)
        # In the window: one copy each of one story; before it: two of s0's, one of s1's.
        for name, serial, hours in (("s0", 1, 1), ("s1", 2, 2), ("s0", 3, 50), ("s0", 4, 49)):
            parsed = entry(f"{name}-{serial}", "Same story", published=NOW - timedelta(hours=hours))
            store_entries(store, name, [replace(parsed, link="https://news.example/same")], NOW)
        parsed = entry("s1-5", "Same story", published=NOW - timedelta(hours=48))
        store_entries(store, "s1", [replace(parsed, link="https://news.example/same")], NOW)
        since = NOW - timedelta(hours=24)
        reads = SharedReads(store)
        root = reads.recent_entries(NAMES, since, 2)
        assert len(reads.earlier_copies(NAMES, root, since, 2)) == 2  # s0's two: cut short
        mine = reads.recent_entries(["s1"], since, 1)
        assert reads.queries == 2  # its recent entries were in the root's read
        earlier = reads.earlier_copies(["s1"], mine, since, 1)
        assert [e.entry_id for e in earlier] == ["s1-5"]
        assert earlier == store.earlier_copies(["s1"], story_keys_of(mine), since, 1)
    finally:
        store.close()

"""A publish costs the same bounded work whatever the feeds hold.

Story grouping is linear in the entries (counted: title keys computed, dates compared),
a publish reads a bounded number of rows from the store, and the daemon stays healthy and
stops on time while a publish is stuck.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator import publish, timeline
from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.publish import current_timeline
from aggregator.store.sqlite import SqliteStore
from aggregator.text import title_key
from aggregator.types import SourceCredit, StoredEntry
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.storedata import count_entries

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
SOURCES = {name: SourceCredit(name, name.upper(), f"https://{name}.example/feed") for name in "ab"}
LONG = "The same story, told again and again by a hostile feed"


@dataclass(frozen=True)
class CountedEntry(StoredEntry):
    """A StoredEntry that counts how often its date is read: a stand-in for comparisons."""

    def __getattribute__(self, name: str) -> object:
        if name == "sort_date":
            READS[0] += 1
        return super().__getattribute__(name)


READS = [0]


def _entry(i: int, source: str, link: str, title: str) -> StoredEntry:
    date = NOW - timedelta(seconds=i)
    return CountedEntry(source, f"id{i}", title, link, "", "", None, (), date, None, date, date)


SHAPES: dict[str, Callable[[int], StoredEntry]] = {
    # Every item its own guid, one link and one title: one story of n copies.
    "one story": lambda i: _entry(i, "a", "https://a.example/story", LONG),
    # Every item links to the home page, each its own title: n stories on one link.
    "one link": lambda i: _entry(i, "a", "https://a.example/", f"{LONG} {i}"),
    # Two sources repeat one headline on their own links: n stories on one headline.
    "one headline": lambda i: _entry(i, "ab"[i % 2], f"https://x.example/{i}", LONG),
}


def _work(shape: Callable[[int], StoredEntry], n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Title keys computed plus dates read while building the timeline of n entries."""
    calls = [0]

    def counted(title: str) -> str:
        calls[0] += 1
        return title_key(title)

    monkeypatch.setattr(timeline, "title_key", counted)
    entries = [shape(i) for i in range(n)]
    READS[0] = 0
    timeline.build_timeline(
        entries,
        SOURCES,
        now=NOW,
        selection=timeline.Selection(max_items=50, max_age=timedelta(days=30)),
    )
    return calls[0] + READS[0]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_story_grouping_is_linear_in_the_entries(
    shape: Callable[[int], StoredEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = _work(shape, 500, monkeypatch), _work(shape, 2000, monkeypatch)
    # Quadratic grouping does 16 times the work for 4 times the entries; linear does 4
    # (a little more for the sort's log n).
    assert large <= 5 * small, (small, large)
    assert large <= 100 * 2000  # a headline is compared with at most 32 stories


# -- what a publish reads ------------------------------------------------------------------


def _same_story(count: int, *, days_old: int = 0) -> list[Item]:
    """`count` items of one story: each its own guid, one link, one title (the repro)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_old)
    return [
        Item(LONG, "https://h.example/story", f"tag:h.example,2025:{days_old}:{i}",
             start - timedelta(seconds=i + 1))
        for i in range(count)
    ]  # fmt: skip


def _good(count: int) -> list[Item]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        Item(f"Good news number {i}", f"https://g.example/{i}", f"tag:g.example,2025:{i}", now)
        for i in range(count)
    ]


def _write_feeds(tmp_path: Path, hostile: list[Item], good: list[Item], publish: str) -> Path:
    (tmp_path / "h.xml").write_bytes(rss2("H", "https://h.example/", hostile))
    (tmp_path / "g.xml").write_bytes(rss2("G", "https://g.example/", good))
    config = tmp_path / "feeds.toml"
    config.write_text(
        f"[publish]\n{publish}\n"
        '[[feeds]]\nname = "h"\nurl = "h.xml"\n[[feeds]]\nname = "g"\nurl = "g.xml"\n',
        encoding="utf-8",
    )
    return config


def test_a_publish_reads_a_bounded_number_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3,000 copies of one story in the window and 3,000 older ones: before the cap, a publish
    # widened its read until it had every entry, and read every older copy each time. (The
    # cap of this test's size; the default's size is for feeds, not for a quick test.)
    monkeypatch.setattr(publish, "READ_CAP_PER_ITEM", 20)
    monkeypatch.setattr(publish, "READ_CAP_BASE", 1000)
    hostile = _same_story(3000) + _same_story(3000, days_old=60)
    config_path = _write_feeds(tmp_path, hostile, _good(3), 'max_items = 10\nmax_age = "30d"')
    config = load_config(config_path)
    store = SqliteStore.open(config.store.path)
    try:
        asyncio.run(run_cycle(config, store))
        assert count_entries(store, "h") == 6000
        read = [0]
        for name in ("recent_entries", "earlier_copies"):
            real = getattr(SqliteStore, name)

            def counted(self: SqliteStore, *args: Any, _real: Any = real) -> list[StoredEntry]:
                rows: list[StoredEntry] = _real(self, *args)
                read[0] += len(rows)
                return rows

            monkeypatch.setattr(SqliteStore, name, counted)
        timeline = current_timeline(config, store, datetime.now(UTC))
    finally:
        store.close()
    assert {item.entry.source for item in timeline.items} == {"g"}  # the story left the window
    cap = publish.read_cap(10)
    # Each widening step reads `limit` entries and as many earlier copies, `limit` growing
    # fourfold from 2 × max_items + 50 to the cap; before the cap, 16,473 rows.
    assert read[0] <= 2 * (70 + 280 + 1120 + cap) < 6000, read[0]


def test_once_with_twenty_thousand_copies_of_one_story_completes(tmp_path: Path) -> None:
    """The reported feed: 2.3 MB, 20,000 items of one story. It took more than a minute to
    publish; now `aggregator once` finishes well within its timeout and publishes the rest."""
    # The parse's own budget is not what this checks (tests/test_parse_budget.py does): room
    # for a crowded machine, where parsing 20,000 items can take longer than the default 20 s.
    publish = 'max_items = 10\nmax_age = "30d"\n[poll]\nparse_timeout = "120s"'
    _write_feeds(tmp_path, _same_story(20_000), _good(3), publish)
    done = run_cli("once", "--config", str(tmp_path / "feeds.toml"), cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    titles = [
        i["title"] for i in json.loads((tmp_path / "output" / "feed.json").read_bytes())["items"]
    ]
    assert sorted(titles) == sorted([LONG, *(f"Good news number {i}" for i in range(3))])


def test_a_busy_source_mostly_filtered_out_does_not_push_a_quiet_one_out(tmp_path: Path) -> None:
    """3,000 items in the last day, one in a hundred kept by `include`, beside a quiet
    source's ten items of last week: every item the filters keep is published."""
    now = datetime.now(UTC).replace(microsecond=0)
    busy = [
        Item(
            f"{'Python' if i % 100 == 0 else 'Other'} news {i}",
            f"https://h.example/{i}",
            f"tag:h.example,2025:{i}",
            now - timedelta(seconds=30 * i + 1),
        )
        for i in range(3000)
    ]
    quiet = [
        Item(f"Quiet news {i}", f"https://g.example/{i}", f"tag:g.example,q:{i}",
             now - timedelta(days=3 + i // 2))
        for i in range(10)
    ]  # fmt: skip
    config_path = _write_feeds(tmp_path, busy, quiet, 'max_items = 50\nmax_age = "30d"')
    text = config_path.read_text(encoding="utf-8").replace(
        'url = "h.xml"\n', 'url = "h.xml"\ninclude = ["python"]\n'
    )
    config_path.write_text(text, encoding="utf-8")
    done = run_cli("once", "--config", str(config_path), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    items = json.loads((tmp_path / "output" / "feed.json").read_bytes())["items"]
    titles = {item["title"] for item in items}
    assert {f"Quiet news {i}" for i in range(10)} <= titles
    assert sum(title.startswith("Python") for title in titles) == 30

"""A publish costs the same bounded work whatever the feeds hold.

Story grouping is linear in the entries (counted: title keys computed, dates compared),
a publish reads a bounded number of rows from the store, and the daemon stays healthy and
stops on time while a publish is stuck.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from aggregator import timeline
from aggregator.text import title_key
from aggregator.types import SourceCredit, StoredEntry

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
    timeline.build_timeline(entries, SOURCES, now=NOW, max_items=50, max_age=timedelta(days=30))
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

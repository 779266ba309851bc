"""The daemon gives back what a burst of work freed (`daemon/memory.py`), and an archive
publish holds one day's items at a time, not the repr of them all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import archive
from aggregator.archive import ArchiveDay
from aggregator.daemon import memory
from tests.test_page import item, timeline

# Allocates 200 MB in 8 KB blocks (past pymalloc: they come from the C heap), keeps one in
# 32 (so nothing is free at the heap's top for free() to give back), frees the rest, and
# prints the resident size before and after `release_free_memory`.
_CHURN = textwrap.dedent(
    """
    from aggregator.daemon.memory import release_free_memory

    def resident_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    blocks = [bytearray(8192) for _ in range(25_000)]
    kept = blocks[::32]
    del blocks
    before = resident_mb()
    release_free_memory()
    print(before, resident_mb(), len(kept))
    """
)


@pytest.mark.skipif(memory._TRIM is None, reason="no malloc_trim in this C library (not glibc)")
def test_release_returns_the_free_pages_a_burst_left_inside_the_heap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, _ = (float(v) for v in done.stdout.split())
    # ~190 MB of the 200 are free but resident until released; released, they are gone.
    assert before - after > 100, (before, after)


def test_release_is_harmless_when_nothing_is_free() -> None:
    memory.release_free_memory()
    memory.release_free_memory()


_TITLES = st.text(st.characters(codec="utf-8"), max_size=20)


@given(st.lists(_TITLES, max_size=6), st.integers(0, 5), _TITLES)
def test_a_day_s_fingerprint_changes_with_any_item_and_only_then(
    titles: list[str], at: int, other: str
) -> None:
    """Hashed item by item, the fingerprint still tells every change apart: an item's
    title, an item more or less, a neighbour; the same day gives the same digest."""
    day = _day(titles)
    assert archive.day_fingerprint("b", day) == archive.day_fingerprint("b", _day(list(titles)))
    assert archive.day_fingerprint("b", day) != archive.day_fingerprint("c", day)
    assert archive.day_fingerprint("b", day) != archive.day_fingerprint(
        "b", replace(day, previous=date(2025, 7, 11))
    )
    assert archive.day_fingerprint("b", day) != archive.day_fingerprint("b", _day([*titles, "x"]))
    if titles and titles[at % len(titles)] != other:
        changed = list(titles)
        changed[at % len(titles)] = other
        assert archive.day_fingerprint("b", day) != archive.day_fingerprint("b", _day(changed))


def _day(titles: list[str]) -> ArchiveDay:
    items = [item(t, f"2025-07-13T{n % 24:02d}:00:00") for n, t in enumerate(titles)]
    return ArchiveDay(date(2025, 7, 13), timeline(*items), date(2025, 7, 12), None)

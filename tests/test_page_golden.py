"""The shipped theme's pages, byte for byte: tests/data/page/*.html beside the input they
come from (tests/test_page.py's Hindi and English timelines).

A change to the shipped templates shows here as a diff of these files: the rendered bytes
may change only where something is added. Set UPDATE_GOLDEN=1 to rewrite them after a
deliberate change, and read the diff before committing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from aggregator.render.page import render_html
from aggregator.types import Timeline
from tests.test_page import AMAR, BBC, JAGRAN, SITE_EN, SITE_HI, hindi_two_days, item, timeline

PAGES = Path(__file__).parent / "data" / "page"


def _hindi() -> bytes:
    return render_html(hindi_two_days(), SITE_HI, (JAGRAN, BBC, AMAR))


def _english_empty() -> bytes:
    return render_html(Timeline(), SITE_EN)


def _english_one() -> bytes:
    return render_html(timeline(item("Hello & <goodbye>", "2025-07-12T20:00:00")), SITE_EN)


CASES: dict[str, Callable[[], bytes]] = {
    "hindi.html": _hindi,
    "english-empty.html": _english_empty,
    "english-one.html": _english_one,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_theme_golden_page(name: str) -> None:
    got = CASES[name]()
    golden = PAGES / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(got)
    assert got == golden.read_bytes()

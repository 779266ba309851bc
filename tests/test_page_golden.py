"""The shipped theme's pages, byte for byte: tests/data/page/*.html beside the input they
come from (tests/test_page.py's Hindi and English timelines).

A change to the shipped templates shows here as a diff of these files: the rendered bytes
may change only where something is added. Set UPDATE_GOLDEN=1 to rewrite them after a
deliberate change, and read the diff before committing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from aggregator.render.context import ChannelInfo
from aggregator.render.page import DayPage, render_day_page, render_html
from aggregator.types import Timeline
from tests.test_page import AMAR, BBC, JAGRAN, SITE_EN, SITE_HI, hindi_two_days, item, timeline

PAGES = Path(__file__).parent / "data" / "page"


def _hindi() -> bytes:
    return render_html(hindi_two_days(), SITE_HI, (JAGRAN, BBC, AMAR))


def _english_empty() -> bytes:
    return render_html(Timeline(), SITE_EN)


def _english_one() -> bytes:
    return render_html(timeline(item("Hello & <goodbye>", "2025-07-12T20:00:00")), SITE_EN)


def _hindi_root_with_channels_and_days() -> bytes:
    channels = (ChannelInfo("news", "समाचार", "ख़बरें"), ChannelInfo("sport", "खेल"))
    return render_html(
        hindi_two_days(), SITE_HI, (JAGRAN,), channels=channels, earlier="2025-07-11"
    )


def _hindi_day() -> bytes:
    day = DayPage("2025-07-13", prev="2025-07-12", next="2025-07-14")
    return render_day_page(hindi_two_days(), SITE_HI, day, (JAGRAN, BBC))


def _english_channel() -> bytes:
    news = ChannelInfo("news", "News", "The news channel")
    own_site = replace(SITE_EN, base_url=SITE_EN.base_url + "news/")  # a channel's own site
    return render_html(timeline(item("Hello", "2025-07-12T20:00:00")), own_site, channel=news)


CASES: dict[str, Callable[[], bytes]] = {
    "hindi.html": _hindi,
    "english-empty.html": _english_empty,
    "english-one.html": _english_one,
    "hindi-root-channels-earlier.html": _hindi_root_with_channels_and_days,
    "hindi-day.html": _hindi_day,
    "english-channel.html": _english_channel,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_theme_golden_page(name: str) -> None:
    got = CASES[name]()
    golden = PAGES / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(got)
    assert got == golden.read_bytes()

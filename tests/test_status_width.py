"""`aggregator status` at 80 columns: every line fits, names are cut with "…" rather than
wrapped mid-word, times are relative ("3 min ago", "in 12 min") in the configured zone and
never finer than a second; `--wide` shows everything; `--json` keeps its exact values.

The real CLI in a subprocess, after a real `once` against a server on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.status_view import relative_time
from tests.conftest import run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer

GOOD = "world-english-service-of-a-broadcaster-with-a-really-long-name"
MISSING = "another-source-whose-name-is-far-too-long-for-an-eighty-column-tty"[:64]
REFUSED = "closed-port"
SUB_SECOND = re.compile(r"\d:\d\d\.\d|\d\.\d+ ?s\b|\+00:00|T\d\d:")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def polled(tmp_path: Path, feed_server: FeedServer) -> Path:
    """A feeds.toml in Asia/Kolkata whose three sources were polled once: one fine, one 404,
    one refused (a long error)."""
    good = feed_server.add("/good.xml", rss2("Good", "https://good.example/", []))
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[aggregator]\ntimezone = "Asia/Kolkata"\n\n'
        f'[[feeds]]\nname = "{GOOD}"\nurl = "{good}"\n\n'
        f'[[feeds]]\nname = "{MISSING}"\nurl = "{feed_server.url("/missing.xml")}"\n\n'
        f'[[feeds]]\nname = "{REFUSED}"\nurl = "http://127.0.0.1:{_closed_port()}/feed.xml"\n',
        encoding="utf-8",
    )
    once = run_cli("once", "--config", str(config))
    assert once.returncode in (0, 1), once.stderr
    # The last polls read "N s ago", not "now" (under half a second): a fast `once` and
    # `status` fit in that.
    time.sleep(1.5)
    return config


def test_status_fits_80_columns_with_relative_times_in_the_zone(polled: Path) -> None:
    result = run_cli("status", "--config", str(polled), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    assert not SUB_SECOND.search(result.stdout), result.stdout
    assert "Asia/Kolkata (IST)" in result.stdout
    assert "ago" in result.stdout and "in " in result.stdout  # last poll, next poll
    # Each long name is on one line, whole or cut with an ellipsis, never wrapped.
    for name in (GOOD, MISSING):
        holding = [line for line in lines if line.startswith(name[:5])]
        assert len(holding) == 1, result.stdout
        cell = holding[0].split()[0]
        assert cell == name or (cell.endswith("…") and name.startswith(cell[:-1])), cell
    assert not any(GOOD[-6:] in line for line in lines)


def test_status_wide_shows_names_errors_and_clock_times_in_full(polled: Path) -> None:
    result = run_cli("status", "--wide", "--config", str(polled), env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert GOOD in text and MISSING in text
    assert "HTTP 404" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST \(\d+ s ago|now\)", text), text
    assert not SUB_SECOND.search(text), text


def test_status_json_keeps_exact_values(polled: Path) -> None:
    result = run_cli("status", "--json", "--config", str(polled), env={"COLUMNS": "80"})
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {GOOD, MISSING, REFUSED}
    assert set(rows[GOOD]) == {
        "name", "url", "last_poll", "last_success", "outcome", "error", "items", "next_poll",
        "failures", "moved_to", "retry_after", "disabled", "websub",
    }  # fmt: skip
    assert datetime.fromisoformat(rows[GOOD]["next_poll"]).tzinfo is not None  # UTC, exact


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.4, "now"),
        (-12.6, "13 s ago"),
        (12 * 60 + 5, "in 12 min"),
        (-3 * 3600 - 59, "3 h ago"),
        (90 * 60, "in 1 h"),
        (-3 * 86400, "3 d ago"),
    ],
)
def test_relative_time_is_whole_units(seconds: float, expected: str) -> None:
    now = datetime(2025, 1, 2, 12, 0, 0, 123456, tzinfo=UTC)
    assert relative_time(now + timedelta(seconds=seconds), now) == expected


def test_status_at_60_columns_drops_columns_rather_than_cutting_every_cell(polled: Path) -> None:
    """A narrow terminal (a phone's ssh, a split pane) keeps what answers "is it working":
    the source, its outcome and when it is next polled, whole; the extra columns go."""
    result = run_cli("status", "--config", str(polled), env={"COLUMNS": "60"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 60, result.stdout
    header = next(line for line in lines if line.startswith("source"))
    assert "…" not in header, result.stdout  # no "last p…", "it…", "fa…"
    assert "next poll" in header and "outcome" in header, result.stdout
    assert re.search(r"in \d+ (min|h)\b", result.stdout), result.stdout  # not "in 15 …"
    refused = next(line for line in lines if line.startswith(REFUSED))
    assert "failed" in refused, result.stdout


@pytest.mark.parametrize("columns", ["0", "1"])
def test_status_with_no_width_to_speak_of_is_80_columns(polled: Path, columns: str) -> None:
    """COLUMNS=0 printed nothing at all (and exit 0); one column, a heap of ellipses."""
    result = run_cli("status", "--config", str(polled), env={"COLUMNS": columns})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert GOOD[:5] in result.stdout and "ago" in result.stdout

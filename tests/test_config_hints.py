"""The mistakes a new operator makes in feeds.toml, each refused at its own line with its fix.

A bare number as a duration, polling a remote source more often than once a minute, a web
address without its `https://`, `[feeds]` for `[[feeds]]`, an unquoted `15m`, one URL twice.
Each case runs the real CLI (`aggregator check`) in a subprocess, as an operator would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_config_errors import _check

REMOTE = '[[feeds]]\nurl = "https://example.org/feed.xml"\n'
TOO_OFTEN = (
    'is more often than a remote source should be polled; write "1m" or more '
    "(intervals under a minute are for local files and loopback hosts)"
)

REFUSED = [
    pytest.param(
        REMOTE + "interval = 15\n",
        "feeds.toml:3: feeds[0].interval: expected a duration with a unit, got the bare "
        'number 15: write "15m" for 15 minutes (or "15s", "15h")',
        id="bare-number-interval",
    ),
    pytest.param(
        "[poll]\ntimeout = 30\n" + REMOTE,
        "feeds.toml:2: poll.timeout: expected a duration with a unit, got the bare "
        'number 30: write "30m" for 30 minutes (or "30s", "30h")',
        id="bare-number-any-duration",
    ),
    pytest.param(
        REMOTE + 'interval = "10s"\n',
        f'feeds.toml:3: feeds[0].interval: "10s" {TOO_OFTEN}',
        id="remote-interval-under-a-minute",
    ),
    pytest.param(
        REMOTE + 'interval = "1ms"\n',
        f'feeds.toml:3: feeds[0].interval: "1ms" {TOO_OFTEN}',
        id="remote-interval-1ms",
    ),
    pytest.param(
        '[poll]\ninterval = "30s"\n\n'
        '[[feeds]]\nurl = "http://127.0.0.1:8000/local.xml"\n\n' + REMOTE,
        'feeds.toml:2: poll.interval: "30s" applies to remote sources (first feeds[1], '
        f"line 7) and {TOO_OFTEN}",
        id="poll-interval-applies-to-a-remote-source",
    ),
    pytest.param(
        '[[feeds]]\nurl = "example.com/feed.xml"\n',
        "feeds.toml:2: feeds[0].url: no such file, and not a URL (no http:// or https://): "
        '"example.com/feed.xml"; for a web feed write "https://example.com/feed.xml"',
        id="url-without-scheme",
    ),
    pytest.param(
        '[aggregator]\ntitle = "t"\n\n[feeds]\nurl = "https://a.example/f.xml"\n',
        "feeds.toml:4: feeds: [feeds] is a single table; write [[feeds]], one per source",
        id="single-feeds-table",
    ),
    pytest.param(
        '[feeds]\nurl = "https://a.example/f.xml"\n\n[feeds]\nurl = "https://b.example/f.xml"\n',
        "feeds.toml:1: feeds: [feeds] is a single table; write [[feeds]], one per source",
        id="feeds-table-twice",
    ),
    pytest.param(
        '[feeds]\nurl = "https://a.example/f.xml"\n\n[[feeds]]\nurl = "https://b.example/f.xml"\n',
        "feeds.toml:1: feeds: [feeds] is a single table; write [[feeds]], one per source",
        id="feeds-table-then-array",
    ),
    pytest.param(
        '[[feeds]]\nurl = "https://a.example/f.xml"\n\n[feeds]\nurl = "https://b.example/f.xml"\n',
        "feeds.toml:4: feeds: [feeds] is a single table; write [[feeds]], one per source",
        id="feeds-array-then-table",
    ),
    pytest.param(
        REMOTE + "interval = 15m  # every quarter hour\n",
        "feeds.toml:3: invalid TOML: Expected newline or end of document after a statement "
        '(column 14); quote it: "15m"',
        id="unquoted-duration",
    ),
    pytest.param(
        "[poll]\nmax_bytes = 10MB\n" + REMOTE,
        "feeds.toml:2: invalid TOML: Expected newline or end of document after a statement "
        '(column 15); quote it: "10MB"',
        id="unquoted-size",
    ),
    pytest.param(
        REMOTE + "\n" + REMOTE,
        "feeds.toml:5: feeds[1].url: duplicate source: the same URL as feeds[0] (line 2)",
        id="duplicate-url-without-names",
    ),
]


@pytest.mark.parametrize(("text", "expected"), REFUSED)
def test_the_mistake_is_named_at_its_line_with_its_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    status, _, stderr = _check(tmp_path, text)
    assert status == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines() == ["error: " + expected]


def test_short_intervals_stay_for_loopback_hosts_and_local_files(tmp_path: Path) -> None:
    """Tests and local setups poll 127.0.0.0/8, ::1, localhost and files every few seconds."""
    (tmp_path / "local.xml").write_text("<rss/>", encoding="utf-8")
    text = (
        '[poll]\ninterval = "2s"\n'
        '[[feeds]]\nurl = "http://127.0.0.1:8000/a.xml"\n'
        '[[feeds]]\nurl = "http://127.1.2.3:8000/b.xml"\ninterval = "500ms"\n'
        '[[feeds]]\nurl = "http://[::1]:8000/c.xml"\n'
        '[[feeds]]\nurl = "http://localhost:8000/d.xml"\ninterval = "5s"\n'
        '[[feeds]]\nurl = "local.xml"\n'
        '[[feeds]]\nurl = "https://example.org/feed.xml"\ninterval = "1m"\n'
    )
    status, stdout, stderr = _check(tmp_path, text)
    assert status == 0, stderr
    assert "feeds.toml: ok" in stdout


def test_a_short_poll_interval_is_fine_when_every_remote_source_sets_its_own(
    tmp_path: Path,
) -> None:
    text = '[poll]\ninterval = "10s"\n' + REMOTE + 'interval = "30m"\n'
    status, _, stderr = _check(tmp_path, text)
    assert status == 0, stderr


@pytest.mark.parametrize("written", ["feeds/local.xml", "./local.xml", "local.xml"])
def test_a_missing_local_file_is_named_where_it_was_looked_for(
    tmp_path: Path, written: str
) -> None:
    """`feeds/local.xml` is a path, not a host that lost its `https://`: the error says which
    file was missing (relative paths are read from the config's directory) and suggests no
    `https://feeds/local.xml`."""
    status, _, stderr = _check(tmp_path, f'[[feeds]]\nurl = "{written}"\n')
    assert status == 2, stderr
    missing = (tmp_path / written).resolve()
    assert stderr.splitlines() == [
        f"error: feeds.toml:2: feeds[0].url: no such file {missing} "
        f'(from "{written}", relative to the config file\'s directory)'
    ]


def test_a_quoted_number_without_a_unit_gets_the_same_fix_as_a_bare_one(tmp_path: Path) -> None:
    """`interval = "15"` is the near miss of `interval = 15`: the hint says which unit to add."""
    status, _, stderr = _check(tmp_path, REMOTE + 'interval = "15"\n')
    assert status == 2, stderr
    assert stderr.splitlines() == [
        'error: feeds.toml:3: feeds[0].interval: expected a duration with a unit, got "15": '
        'write "15m" for 15 minutes (or "15s", "15h")'
    ]

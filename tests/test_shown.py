"""Outside text (a server's or a hub's words) never drives the operator's terminal: every
control character reaches logs, `once` and `status` as a visible escape."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import unicodedata
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from aggregator.cli import _JsonFormatter, _Redacting
from aggregator.shown import one_line, terminal_safe
from tests.conftest import ROOT, run_cli

HOSTILE = "\x1b[31mRED\x1b[0m\x1b]0;pwned\x07 \x1b[2J\rfake line\x9b2J\x7f"


def _controls(text: str, allowed: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) == "Cc" and c not in allowed}


@given(st.text())
def test_no_control_character_but_tab_and_newline_is_left(text: str) -> None:
    assert not _controls(terminal_safe(text), "\t\n")
    assert not _controls(one_line(text), "")
    assert "\u2028" not in one_line(text)


@given(st.text(st.characters().filter(lambda c: unicodedata.category(c) != "Cc")))
def test_text_without_controls_is_unchanged(text: str) -> None:
    """Devanagari, its joiners (U+200C, U+200D) and every other printable text as is."""
    assert terminal_safe(text) == text
    assert one_line(text) == text.replace("\u2028", " ").replace("\u2029", " ")


def test_escapes_are_visible() -> None:
    assert terminal_safe("a\x1b[2Jb\tc\nd") == "a\\u001b[2Jb\tc\nd"
    assert one_line("a\x1b[2Jb\tc\r\nd") == "a\\u001b[2Jb c  d"


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aggregator.poll", logging.WARNING, __file__, 1, message, args, None)


def test_a_text_log_line_shows_escapes_and_masks_secrets() -> None:
    formatter = _Redacting(logging.Formatter("%(levelname)s %(message)s"))
    line = formatter.format(_record("%s: %s", "hub", f"denied by the hub: {HOSTILE}"))
    assert not _controls(line, "\t\n")
    assert "\\u001b[31mRED" in line and "\\u009b2J" in line

    secret = formatter.format(_record("moved to %s", "https://u:hunter2@example.org/\x1b[2J"))
    assert "hunter2" not in secret and "\x1b" not in secret


def test_a_json_log_line_reads_back_as_the_text_it_was() -> None:
    """json.dumps leaves C1 controls raw; escaped as `\\u009b`, the line is still JSON and
    a log shipper reads back the very characters the server sent."""
    formatter = _Redacting(_JsonFormatter(), lines=False)
    line = formatter.format(_record("%s", HOSTILE))
    assert not _controls(line, "")
    assert json.loads(line)["message"] == HOSTILE


def _config_with_a_dead_source(tmp_path: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[[feeds]]\nname = "dead"\nurl = "http://127.0.0.1:{port}/feed.xml"\n', encoding="utf-8"
    )
    return config


def test_status_shows_a_stored_error_s_controls_as_escapes(tmp_path: Path) -> None:
    """Whatever error text a store holds (an older version's, a hub's) reaches the table as
    one line with its escapes visible."""
    config = _config_with_a_dead_source(tmp_path)
    assert run_cli("once", "--config", str(config), cwd=tmp_path).returncode == 0
    markup = " [/x] [link=https://evil.example/]update here[/link]"
    with sqlite3.connect(tmp_path / "state" / "aggregator.db") as db:
        db.execute("UPDATE sources SET last_error = ?", (HOSTILE + markup,))
    status = run_cli(
        "status", "--config", str(config), "--wide", cwd=tmp_path, env={"FORCE_COLOR": "1"}
    )
    assert status.returncode == 0, status.stderr
    # Colour codes of the table's own, and nothing of the error's: its escapes shown, its
    # rich markup printed as the text it is (it raised, or drew a link of its choosing).
    assert not _controls(re.sub(r"\x1b\[[0-9;]*m", "", status.stdout), "\n")
    assert "\\u001b[31mRED" in status.stdout and "fake line" in status.stdout
    assert markup.strip() in re.sub(r"\x1b\[[0-9;]*m", "", status.stdout)
    assert "\x1b]8;" not in status.stdout


def test_once_reports_a_bug_in_one_line_and_keeps_what_it_polled(tmp_path: Path) -> None:
    """A bug while publishing (not a store or output error) was a traceback in cron's mail;
    now one line naming it, exit 1, and the polls' records kept."""
    config = _config_with_a_dead_source(tmp_path)
    script = (
        "import sys, aggregator.cycle as cycle\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('publishing broke \\x1b[2J here\\nERROR a forged line')\n"
        "cycle.publish_all = broken\n"
        "from aggregator.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUTF8": "1"}

    def once(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *options, "once", "--config", str(config)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    failed = once()
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: the cycle failed with an unexpected error, a bug (please report it; "
        "--log-level debug shows where): RuntimeError: publishing broke \\u001b[2J here "
        "ERROR a forged line"
    ]
    assert not any(line.startswith("ERROR a forged") for line in failed.stderr.splitlines())
    with sqlite3.connect(tmp_path / "state" / "aggregator.db") as db:
        assert db.execute("SELECT last_outcome FROM sources").fetchall() == [("failed",)]

    debug = once("--log-level", "debug")
    assert "Traceback" in debug.stderr and "in broken" in debug.stderr


def test_status_json_escapes_what_json_leaves_raw(tmp_path: Path) -> None:
    """json.dumps leaves C1 controls and DEL as they are: escaped, the JSON reads back as
    the text the store holds."""
    config = _config_with_a_dead_source(tmp_path)
    assert run_cli("once", "--config", str(config), cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "state" / "aggregator.db") as db:
        db.execute("UPDATE sources SET last_error = ?", (HOSTILE,))
    status = run_cli("status", "--config", str(config), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert not _controls(status.stdout, "\n")
    assert json.loads(status.stdout)[0]["error"] == HOSTILE


def test_a_terminal_that_cannot_show_devanagari_gets_escapes_not_a_traceback(
    tmp_path: Path,
) -> None:
    """On a Latin-1 locale (or a pipe told so), `check`, `once` and `status` ended in a
    UnicodeEncodeError traceback at the first Devanagari character."""
    (tmp_path / "khabar.xml").write_text(
        '<rss version="2.0"><channel><title>ख़बरें</title><link>https://k.example/</link>'
        "<description>d</description><item><title>आज की ख़बर</title>"
        "<link>https://k.example/1</link><guid>1</guid></item></channel></rss>",
        encoding="utf-8",
    )
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[publish]\noutput_dir = "आउटपुट"\n'
        '[[feeds]]\nname = "khabar"\ntitle = "ख़बरें"\nurl = "khabar.xml"\n',
        encoding="utf-8",
    )
    said = {}
    for command in ("check", "once", "status"):
        done = run_cli(
            command, "--config", str(config), cwd=tmp_path, env={"PYTHONIOENCODING": "latin-1"}
        )
        assert "Traceback" not in done.stdout + done.stderr, (command, done.stderr)
        assert done.returncode == 0, (command, done.stderr)
        said[command] = done.stdout
    assert "\\u0906\\u0909\\u091f" in said["once"]  # "published ... to आउटपुट", escaped


def test_a_line_break_in_a_message_forges_no_log_line() -> None:
    """A hub's `hub.reason` or a server's error holding "\\n2026-... ERROR ..." made a log
    line of its own; the message is one line, a traceback after it keeps its lines."""
    formatter = _Redacting(logging.Formatter("%(levelname)s %(message)s"))
    line = formatter.format(_record("denied by the hub: %s", "no\n2026-12-08 ERROR forged"))
    assert line == "WARNING denied by the hub: no 2026-12-08 ERROR forged"
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed: %s", "a\nb")
        record.exc_info = sys.exc_info()
    lines = formatter.format(record).splitlines()
    assert lines[0] == "WARNING failed: a b" and lines[1].startswith("Traceback")

"""The real CLI on what ships: the offline example, the shipped feeds.toml, a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest

from tests.conftest import ROOT, run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer


def _copy_example(tmp_path: Path) -> Path:
    example = tmp_path / "offline"
    shutil.copytree(
        ROOT / "examples" / "offline", example, ignore=shutil.ignore_patterns("output", "state")
    )
    return example / "feeds.toml"


def test_offline_example_publishes_every_sample_item(tmp_path: Path) -> None:
    config = _copy_example(tmp_path)
    # Run from elsewhere: relative paths resolve against the config's directory.
    result = run_cli("once", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "hindi-news     8 new",
        "world-english  6 new",
        "science-rdf    4 new",
    ]
    assert "published 18 items" in result.stdout
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse(io.BytesIO((config.parent / "output" / name).read_bytes()))
        assert not parsed.bozo
        assert len(parsed.entries) == 18
    assert (config.parent / "state" / "aggregator.db").exists()


def test_shipped_config_is_valid() -> None:
    result = run_cli("check", "--config", "feeds.toml")
    assert result.returncode == 0, result.stderr
    assert "bbc-hindi" in result.stdout
    assert result.stdout.rstrip().endswith("feeds.toml: ok")


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and (
        subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode == 0
    )


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rn` to cut the network off")
def test_shipped_config_without_network_reports_each_source(tmp_path: Path) -> None:
    """`make run` offline: every source fails with its own clear line; the run completes.

    The CLI runs in a fresh network namespace (`unshare -rn`), so nothing can leave the machine.
    """
    shutil.copy(ROOT / "feeds.toml", tmp_path / "feeds.toml")
    result = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "aggregator", "once", "--config", "feeds.toml"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    sources = [line for line in lines if not line.startswith("published")]
    assert len(sources) == 11
    for line in sources:
        name, _, outcome = line.partition("  ")
        assert outcome.strip().startswith("error: cannot "), line
        assert f"{name.strip()}: cannot " in result.stderr  # logged with the source's name
    assert lines[-1].startswith("published 0 items")
    assert lines[-1].endswith("sources: 11 failed")
    for name in ("rss.xml", "atom.xml"):
        assert not feedparser.parse(io.BytesIO((tmp_path / "output" / name).read_bytes())).bozo


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    config = _copy_example(tmp_path)
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert process.returncode == 0
    assert b"polling" in b"".join(chunks)
    assert b"published 18 items" in process.stdout


def test_once_with_stderr_closed_or_forced_to_colour(tmp_path: Path) -> None:
    """Cron with `2>&-`: no terminal, no stderr at all, and the cycle still runs; with
    FORCE_COLOR on a pipe, rich draws its progress display there, as it decides."""
    config = _copy_example(tmp_path)
    closed = subprocess.run(
        [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.close(2),
        env={**os.environ, "PYTHONUTF8": "1"},
        timeout=120,
        check=False,
    )
    assert closed.returncode == 0
    assert b"published 18 items" in closed.stdout
    forced = run_cli("once", "--config", str(config), env={"FORCE_COLOR": "1"})
    assert forced.returncode == 0, forced.stderr
    assert "polling" in forced.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("aggregator, version ")


def test_json_logs_name_the_source(tmp_path: Path) -> None:
    (tmp_path / "feeds.toml").write_text(
        '[[feeds]]\nname = "down"\nurl = "http://127.0.0.1:9/feed.xml"\n', encoding="utf-8"
    )
    result = run_cli("--log-format", "json", "once", "--config", "feeds.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events, "expected at least one log line"
    assert {"time", "level", "message"} <= set(events[0])
    assert any(
        e["level"] == "warning" and e["message"].startswith("down: connection refused")
        for e in events
    )


def test_add_discovers_the_feed_from_a_page(tmp_path: Path, feed_server: FeedServer) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('# my digest\n[aggregator]\ntitle = "x"\n', encoding="utf-8")
    feed_url = feed_server.add("/feed.xml", rss2("News", "https://n.example/", []))
    page = feed_server.add(
        "/",
        b'<!doctype html><html><head><link rel="alternate" type="application/rss+xml"'
        b' href="/feed.xml"></head><body>hi</body></html>',
        "text/html; charset=utf-8",
    )
    result = run_cli("add", page, "--name", "news", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f'added "news": {feed_url}' in result.stdout
    assert config.read_text(encoding="utf-8").startswith("# my digest\n")  # comments kept
    assert run_cli("check", "--config", str(config)).returncode == 0
    again = run_cli("add", feed_url, "--config", str(config))
    assert again.returncode == 1 and "Traceback" not in again.stderr


def test_import_opml_adds_new_feeds_and_skips_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nurl = "https://a.example/feed.xml"\n', encoding="utf-8")
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head><title>s</title></head><body>'
        '<outline text="News"><outline type="rss" text="A" xmlUrl="https://a.example/feed.xml"/>'
        '<outline type="rss" text="B" xmlUrl="https://b.example/rss"/></outline></body></opml>',
        encoding="utf-8",
    )
    result = run_cli("import-opml", str(opml), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "added    " in result.stdout and "skipped  https://a.example/feed.xml" in result.stdout
    assert "1 of 2 feeds" in result.stdout
    assert "https://b.example/rss" in config.read_text(encoding="utf-8")

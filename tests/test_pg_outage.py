"""The database goes away under a running daemon and comes back: nothing stops, nothing is
lost, and the operator reads a few clear lines, not a traceback per second.

A server of this test's own (the session's shared one must stay up), crashed with
`pg_ctl stop --mode immediate` while the daemon polls a small farm every 2 seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.farm import Farm
from tests.conftest import ROOT, start_server_or_skip
from tests.pgserver import PgServer
from tests.test_daemon import _free_port, wait_for

FEEDS = 4
ITEMS = 3


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    server = start_server_or_skip()
    try:
        yield server
    finally:
        server.stop()


def _config(directory: Path, port: int, farm: Farm) -> Path:
    lines = [
        "[aggregator]",
        'base_url = "https://digest.example.org/"',
        "[poll]",
        'interval = "2s"',
        'timeout = "3s"',
        'lease = "10s"',
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        f"port = {port}",
    ]
    lines += farm.feeds_toml()
    config = directory / "feeds.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def _start(
    directory: Path, server: PgServer, farm: Farm
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`aggregator run` on `server`'s database: the process, its base URL and its log."""
    port = _free_port()
    log = directory / "daemon.log"
    with log.open("ab") as sink:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "--log-level", "info", "run",
             "--config", str(_config(directory, port, farm))],
            cwd=ROOT,
            env={**os.environ, "AGGREGATOR_STORE_URL": server.url()},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )  # fmt: skip
    return daemon, f"http://127.0.0.1:{port}", log


def test_the_daemon_rides_out_a_database_outage(own_server: PgServer, tmp_path: Path) -> None:
    farm = Farm(feeds=FEEDS, items=ITEMS).start()
    daemon, base, log = _start(tmp_path, own_server, farm)

    def atom() -> str:
        return httpx.get(f"{base}/atom.xml", timeout=10).text

    def health() -> int:
        return httpx.get(f"{base}/healthz", timeout=10).status_code

    try:
        wait_for(lambda: atom().count("<entry>") == FEEDS * ITEMS, 60, "the first items")
        before = atom()
        own_server.crash()
        farm.churn(1.0, 1)  # every feed gets a new item while the database is away
        fresh = [farm._items[n][0].link for n in range(FEEDS)]
        wait_for(lambda: health() == 503, 30, "/healthz to report the store")
        time.sleep(6)  # three poll intervals, five seconds of follow-ups: all failing
        assert daemon.poll() is None  # still running
        assert health() == 503
        assert atom() == before  # readers still get the last published feed
        own_server.start_again()
        wait_for(lambda: health() == 200, 60, "/healthz once the database is back")
        wait_for(lambda: all(link in atom() for link in fresh), 60, "the items of the outage")
        assert atom().count("<entry>") == FEEDS * (ITEMS + 1)
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        finally:
            farm.stop()
    assert daemon.returncode == 0
    text = log.read_text(encoding="utf-8")
    assert "Traceback" not in text
    assert "error connecting" not in text  # the pool's warning at each reconnection attempt
    assert "maximum number of running instances" not in text  # ticks waiting for a claim
    # One line when claiming starts failing (perhaps a second as the error changes from a
    # cut connection to a refused one), not one per tick, and one when it works again.
    assert 1 <= text.count("claiming due sources failed") <= 3, text
    assert "claiming due sources works again" in text


def test_a_stop_while_the_database_is_away_is_clean(own_server: PgServer, tmp_path: Path) -> None:
    """A stop (a supervisor's restart, say) while polls wait for the database: the daemon
    still ends within its grace, with status 0 and no traceback."""
    farm = Farm(feeds=FEEDS, items=ITEMS).start()
    daemon, base, log = _start(tmp_path, own_server, farm)
    try:
        wait_for(
            lambda: httpx.get(f"{base}/atom.xml", timeout=10).text.count("<entry>") == 12,
            60,
            "the first items",
        )
        farm.server.set_delay(1.0)  # polls are under way when the database goes
        time.sleep(2.5)
        own_server.crash()
        time.sleep(1.0)
        daemon.terminate()
        daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        farm.stop()
    text = log.read_text(encoding="utf-8")
    assert daemon.returncode == 0, text
    assert "Traceback" not in text
    assert "stopped" in text

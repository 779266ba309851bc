"""Round trips to PostgreSQL per poll, counted on the wire (`tests/wire.py`), for a real
`aggregator run` polling a farm of 5-item feeds once each.

The performance issue's bound: at most 4 round trips per poll, everything the daemon says
to the database while it polls counted (claims, state reads, entries, records, publishes).
A round trip is a wait on the server, whatever number of statements it carries, so this
holds however busy the machine is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.cluster import polled, write_config
from bench.farm import Farm
from tests.conftest import ROOT
from tests.pgserver import _SOCKET_PORT, SERVER_USER, PgServer
from tests.test_daemon import _free_port, wait_for
from tests.wire import RoundTrips

SOURCES = 300
MOST_PER_POLL = 4.0


def _first_request(farm: Farm, wire: RoundTrips) -> int:
    """The round trips counted when the farm saw its first request: what start-up took."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = wire.count
        if farm.server.requests():
            return count
        time.sleep(0.005)
    raise AssertionError("the daemon sent no request within 60 s")


def test_a_poll_costs_at_most_four_round_trips(pg_server: PgServer, tmp_path: Path) -> None:
    schema = pg_server.new_schema()
    farm = Farm(SOURCES, 5).start()
    try:
        with RoundTrips(pg_server.socket_dir, _SOCKET_PORT, SERVER_USER) as wire:
            config = write_config(tmp_path / "daemon", farm, _free_port())
            log = tmp_path / "daemon.log"
            with log.open("wb") as out:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "aggregator", "--log-level", "warning", "run",
                     "--config", str(config)],
                    cwd=ROOT,
                    env={**os.environ, "AGGREGATOR_STORE_URL": wire.url("postgres", schema=schema)},
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )  # fmt: skip
            try:
                # Start-up (migrations, the sources' sync) ends where the first fetch begins.
                started = _first_request(farm, wire)
                wire.flights = []  # kept: a failure says what the round trips were
                direct = pg_server.url(schema=schema)
                wait_for(lambda: polled(direct) >= SOURCES, 120, "every source polled")
                polling = wire.count - started
                requests = sum(len(times) for times in farm.server.requests().values())
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
    finally:
        farm.stop()
        pg_server.drop_schema(schema)
    per_poll = polling / SOURCES
    print(f"{polling} round trips for {SOURCES} polls: {per_poll:.2f} per poll")
    assert requests == SOURCES
    assert per_poll <= MOST_PER_POLL, wire.summary()

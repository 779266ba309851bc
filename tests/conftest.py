"""Shared fixtures: a real feed server on 127.0.0.1, a throwaway PostgreSQL server, and the
real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.feedserver import FeedServer
from tests.pgserver import PgServer, PgUnavailable, start_server

ROOT = Path(__file__).resolve().parent.parent


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (as `make test` runs): two workers more than the usable cores.

    Much of the suite waits on real time (daemon start-ups, subprocesses, timeouts firing):
    with one worker per core the CPUs stayed idle over half the time (2 cores: 220 s of CPU
    in 290 s); with cores + 1, 271 s of CPU in 271 s; with cores + 2, 290 s in 216 s. Tests
    that feed a parse 10,000 items or more give it a budget a crowded machine cannot
    exhaust. PYTEST_XDIST_AUTO_NUM_WORKERS, when set, still decides (xdist reads it).
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 2


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session, or a skip that says why there is none.

    `AGGREGATOR_REQUIRE_PG=1` makes a missing server an error instead of a skip, for a
    machine where the PostgreSQL tests must run.
    """
    server = start_server_or_skip()
    try:
        yield server
    finally:
        server.stop()


def start_server_or_skip() -> PgServer:
    """A new PostgreSQL server, or the skip (or, when required, the failure) saying why not."""
    try:
        return start_server()
    except PgUnavailable as e:
        if os.environ.get("AGGREGATOR_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL is required (AGGREGATOR_REQUIRE_PG=1) but: {e}")
        pytest.skip(f"PostgreSQL tests skipped: {e}")


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A URL whose search path starts at a fresh, empty schema, dropped after the test."""
    schema = pg_server.new_schema()
    try:
        yield pg_server.url(schema=schema)
    finally:
        pg_server.drop_schema(schema)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m aggregator ARGS` exactly as an operator would run it (`env`: added to ours)."""
    env = {**os.environ, "PYTHONUTF8": "1", "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def start_serve(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`python -m aggregator serve --config feeds.toml` started in `directory`, its output
    and errors in `directory/serve.log`: (the process, the log). The caller stops it."""
    log = directory / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUTF8": "1"}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "serve", "--config", "feeds.toml"],
            cwd=directory,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return process, log

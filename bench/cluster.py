"""Several daemons on one PostgreSQL database: poll throughput by number of daemons.

    python -m bench.cluster [--feeds 10000] [--items 5] [--daemons 1,2,3]

For each daemon count, a fresh database (a throwaway server from tests/pgserver.py) and the
same local feed farm (bench/farm.py): the daemons start together with `interval = "1h"`, so
each source is due once, and the clock runs from the first request the farm sees until the
database has every source's first poll recorded. Reported: wall seconds, polls per second,
and how many requests the farm saw (more than the sources would mean a source polled
twice). On a 2-core machine the daemons compete for the same
cores with the farm and PostgreSQL: the number says how much claiming costs, not how far
more machines would go.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.farm import Farm
from tests.pgserver import PgServer, start_server

ROOT = Path(__file__).resolve().parent.parent


def _config(directory: Path, farm: Farm, port: int) -> Path:
    lines = [
        "[aggregator]",
        'base_url = "https://digest.example.org/"',
        "[poll]",
        'interval = "1h"',
        "concurrency = 20",
        "per_host = 20",  # one farm host stands in for many publishers
        "[publish]",
        'max_age = "3650d"',
        "[server]",
        f"port = {port}",
    ]
    for n, url in enumerate(farm.urls()):
        lines += ["[[feeds]]", f'name = "f{n}"', f'url = "{url}"']
    directory.mkdir(parents=True)
    path = directory / "feeds.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _polled(url: str) -> int:
    """How many sources have their poll recorded (0 before the schema exists)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('sources') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT count(*) FROM sources WHERE last_polled IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def run(server: PgServer, farm: Farm, daemons: int, work: Path) -> dict[str, float]:
    dbname = f"cluster_{daemons}"
    server.psql(f"CREATE DATABASE {dbname}")
    url = server.url(dbname)
    farm.reset()
    processes = []
    for k in range(daemons):
        config = _config(work / f"{daemons}-{k}", farm, _free_port())
        with (config.parent / "daemon.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "aggregator",
                        "--log-level",
                        "warning",
                        "run",
                        "--config",
                        str(config),
                    ],
                    cwd=ROOT,
                    env={**os.environ, "AGGREGATOR_STORE_URL": url},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if _polled(url) >= farm.feeds:
                break
            time.sleep(0.5)
        finished = time.time()
        asked = farm.server.requests()
        first = min(t for times in asked.values() for t in times)
        requests = sum(len(times) for times in asked.values())
    finally:
        for p in processes:
            p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    seconds = finished - first
    return {"seconds": seconds, "rate": farm.feeds / seconds, "requests": requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=10000)
    parser.add_argument("--items", type=int, default=5)
    parser.add_argument("--daemons", default="1,2,3")
    args = parser.parse_args()
    server = start_server()
    farm = Farm(args.feeds, args.items).start()
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-cluster-") as tmp:
            print(f"{args.feeds} sources x {args.items} items, first poll of each, PostgreSQL")
            print(f"{'daemons':>7}  {'seconds':>8}  {'polls/s':>8}  {'requests':>8}")
            for daemons in (int(d) for d in args.daemons.split(",")):
                result = run(server, farm, daemons, Path(tmp))
                print(
                    f"{daemons:>7}  {result['seconds']:>8.1f}  {result['rate']:>8.0f}  "
                    f"{int(result['requests']):>8}",
                    flush=True,
                )
    finally:
        farm.stop()
        server.stop()


if __name__ == "__main__":
    main()

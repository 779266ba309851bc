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
from bench.measure import stat_fields
from tests.pgserver import PgServer, start_server

ROOT = Path(__file__).resolve().parent.parent


def write_config(directory: Path, farm: Farm, port: int) -> Path:
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
    lines += farm.feeds_toml()
    directory.mkdir(parents=True)
    path = directory / "feeds.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def polled(url: str) -> int:
    """How many sources have their poll recorded (0 before the schema exists)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('sources') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT count(*) FROM sources WHERE last_polled IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, float, float]]:
    """Every process: pid -> (parent, command line, own CPU s, reaped children's CPU s)."""
    found = {}
    for name in os.listdir("/proc"):  # noqa: PTH208  (names only)
        if not name.isdigit():
            continue
        fields = stat_fields(int(name))
        try:
            command = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields:
            own = (int(fields[11]) + int(fields[12])) / _TICK
            reaped = (int(fields[13]) + int(fields[14])) / _TICK
            found[int(name)] = (int(fields[1]), command, own, reaped)
    return found


def _cpu(daemons: list[int], farm: int, dbname: str) -> dict[str, float]:
    """CPU seconds so far of the daemons' main processes, their parser processes (the fork
    server with the workers it reaped, and the live workers), PostgreSQL's backends for
    `dbname`, and the farm server (from its start: subtract an earlier reading)."""
    table = _processes()
    below: dict[int, list[int]] = {}
    for pid, (parent, *_) in table.items():
        below.setdefault(parent, []).append(pid)
    parsers = 0.0
    stack = [child for d in daemons for child in below.get(d, [])]
    while stack:
        pid = stack.pop()
        _, _, own, reaped = table[pid]
        parsers += own + reaped
        stack.extend(below.get(pid, []))
    return {
        "daemon": sum(table[d][2] for d in daemons if d in table),
        "parsers": parsers,
        "postgres": sum(
            own
            for _, command, own, _ in table.values()
            if command.startswith("postgres: ") and f" {dbname} " in command
        ),
        "farm": table[farm][2] if farm in table else 0.0,
    }


def run(server: PgServer, farm: Farm, daemons: int, work: Path) -> dict[str, float]:
    dbname = f"cluster_{work.name}"
    server.psql(f"CREATE DATABASE {dbname}")
    url = server.url(dbname)
    farm.reset()
    farm_before = _cpu([], farm.server.pid, dbname)["farm"]
    processes = []
    for k in range(daemons):
        config = write_config(work / f"daemon-{k}", farm, _free_port())
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
            if polled(url) >= farm.feeds:
                break
            time.sleep(0.5)
        finished = time.time()
        cpu = _cpu([p.pid for p in processes], farm.server.pid, dbname)
        cpu["farm"] -= farm_before
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
    _report_problems(work, daemons)
    return {"seconds": seconds, "rate": farm.feeds / seconds, "requests": requests, **cpu}


def _report_problems(work: Path, daemons: int) -> None:
    """The daemons' warnings and errors, counted, a few shown: when the farm saw more
    requests than sources, these say why (a poll that failed, a store error)."""
    lines = [
        line
        for k in range(daemons)
        for line in (work / f"daemon-{k}" / "daemon.log").read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ]
    if lines:
        print(f"  ({daemons} daemons: {len(lines)} warnings/errors, e.g.:", file=sys.stderr)
        for line in lines[:5]:
            print(f"     {line[:200]}", file=sys.stderr)


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
            print("CPU seconds: all daemons' main processes, their parser processes, PostgreSQL")
            print("backends, the farm; 'ms/poll' is their sum per source polled.")
            print(
                f"{'daemons':>7}  {'seconds':>8}  {'polls/s':>8}  {'requests':>8}  "
                f"{'daemon':>7}  {'parsers':>7}  {'postgres':>8}  {'farm':>6}  {'ms/poll':>7}"
            )
            for n, daemons in enumerate(int(d) for d in args.daemons.split(",")):
                # A fresh database and directory per run: "--daemons 2,2" repeats one.
                r = run(server, farm, daemons, Path(tmp) / f"run{n}_{daemons}")
                total = r["daemon"] + r["parsers"] + r["postgres"] + r["farm"]
                print(
                    f"{daemons:>7}  {r['seconds']:>8.1f}  {r['rate']:>8.0f}  "
                    f"{int(r['requests']):>8}  {r['daemon']:>7.1f}  {r['parsers']:>7.1f}  "
                    f"{r['postgres']:>8.1f}  {r['farm']:>6.1f}  {1000 * total / args.feeds:>7.1f}",
                    flush=True,
                )
    finally:
        farm.stop()
        server.stop()


if __name__ == "__main__":
    main()

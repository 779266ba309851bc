"""`make bench`: one poll-cycle workload through aggregator, `reader` and a naive script.

`python -m bench idle` measures the daemon's steady-state cost instead (bench/idle.py),
`python -m bench polls` the CPU of 304 polls in process (bench/polls.py),
`python -m bench publish` publishing from a large store, `python -m bench serve` serving,
`python -m bench stall` the daemon's slowest answer while it takes in a large feeds.toml.

Phases over one local feed farm: first (everything new), second (10% of feeds churned,
the rest unchanged), third (nothing changed). Each tool runs as its own process; wall
time, CPU time and peak memory cover its whole process tree (bench/measure.py). Ratios are
taken against `reader` measured in the same run, since the machine is shared and noisy.

    python -m bench [--feeds 200,1000] [--items 50] [--reader-workers 16] [--tools ...]

`--tools` picks and orders the tools (default: all): `aggregator`, `whole` (aggregator with
`[poll] partial_parse = false`, every changed document parsed whole: the partial parse's
"before"), `reader`, `naive`. `python -m bench partial` times the parse alone (bench/partial.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import idle, partial, peers, polls, publish, serve, stall
from bench.farm import Farm
from bench.measure import become_subreaper, measure

ROOT = Path(__file__).resolve().parent.parent
PHASES = (("first", 0.0), ("second", 0.1), ("third", 0.0))


@dataclass(frozen=True)
class Run:
    feeds: int
    phase: str
    tool: str
    wall: float
    cpu: float
    peak_mb: float
    requests: int
    not_modified: int
    connections: int
    stored: int | None


def _count(db: Path, sql: str) -> int | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as connection:
        return int(connection.execute(sql).fetchone()[0])


TOOLS = ("aggregator", "whole", "reader", "naive")
NAMES = {"whole": "aggregator, whole parse", "naive": "naive script"}


def run_size(
    feeds: int, items: int, reader_workers: int, chosen: Sequence[str] = TOOLS
) -> list[Run]:
    farm = Farm(feeds, items).start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as tmp:
            work = Path(tmp)
            feeds_toml = "".join(
                f'[[feeds]]\nname = "feed-{n}"\nurl = "{u}"\n' for n, u in enumerate(farm.urls())
            )
            # One farm host stands in for N publishers: the per-host limit (default 2) is
            # raised to the overall one (default 10, as the naive script's).
            config = work / "feeds.toml"
            config.write_text(
                '[publish]\nmax_age = "100000d"\n[store]\npath = "store.sqlite3"\n'
                "[poll]\nper_host = 10\n" + feeds_toml,
                encoding="utf-8",
            )
            whole = work / "whole" / "feeds.toml"
            whole.parent.mkdir()
            whole.write_text(
                '[publish]\nmax_age = "100000d"\n[store]\npath = "store.sqlite3"\n'
                "[poll]\nper_host = 10\npartial_parse = false\n" + feeds_toml,
                encoding="utf-8",
            )
            urls = work / "urls.txt"
            urls.write_text("\n".join(farm.urls()), encoding="utf-8")
            tools: dict[str, tuple[list[str], Path | None, str]] = {
                "aggregator": (
                    [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
                    work / "store.sqlite3",
                    "SELECT count(*) FROM entries",
                ),
                "whole": (
                    [sys.executable, "-m", "aggregator", "once", "--config", str(whole)],
                    whole.parent / "store.sqlite3",
                    "SELECT count(*) FROM entries",
                ),
                "reader": (
                    [
                        str(peers.PYTHON),  # installed by main() when chosen
                        str(ROOT / "bench" / "reader_update.py"),
                        str(urls),
                        str(work / "reader.sqlite"),
                        str(reader_workers),
                    ],
                    work / "reader.sqlite",
                    "SELECT count(*) FROM entries",
                ),
                "naive": (
                    [sys.executable, "-m", "bench.naive", str(urls), str(work / "naive.xml")],
                    None,
                    "",
                ),
            }
            for phase, fraction in PHASES:
                if fraction:
                    farm.churn(fraction, 5)
                for tool in chosen:
                    argv, db, sql = tools[tool]
                    farm.reset()
                    usage = measure(argv, ROOT)
                    requests, not_modified, connections = farm.counters()
                    stored = _count(db, sql) if db else None
                    runs.append(
                        Run(
                            feeds,
                            phase,
                            NAMES.get(tool, tool),
                            usage.wall,
                            usage.cpu,
                            usage.peak_mb,
                            requests,
                            not_modified,
                            connections,
                            stored,
                        )
                    )
                    print(
                        f"  {feeds} feeds, {phase}, {tool}: {usage.wall:.2f} s, "
                        f"cpu {usage.cpu:.2f} s",
                        file=sys.stderr,
                    )
    finally:
        farm.stop()
    return runs


def report(runs: list[Run], items: int, with_reader: bool = True) -> str:
    """The table, as printed and as pasted into bench/RESULTS.md."""
    reader = f"reader {peers.reader_version()}, " if with_reader else ""
    lines = [
        f"poll cycle, N feeds x {items} items, local farm on 127.0.0.1; "
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{reader}{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| feeds | phase | tool | wall s | cpu s | peak MB | requests | 304s | connections "
        "| stored | wall vs reader |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    yardstick = {(r.feeds, r.phase): r for r in runs if r.tool == "reader"}
    for r in runs:
        peer = yardstick.get((r.feeds, r.phase))
        ratio = f"{r.wall / peer.wall:.2f}x" if peer else "-"
        stored = "-" if r.stored is None else str(r.stored)
        lines.append(
            f"| {r.feeds} | {r.phase} | {r.tool} | {r.wall:.2f} | {r.cpu:.2f} | "
            f"{r.peak_mb:.0f} | {r.requests} | {r.not_modified} | {r.connections} | {stored} "
            f"| {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    others = {
        "idle": idle.main,
        "polls": polls.main,
        "publish": publish.main,
        "serve": serve.main,
        "partial": partial.main,
        "stall": stall.main,
    }
    if sys.argv[1:2] and sys.argv[1] in others:
        others[sys.argv[1]](sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", default="200,1000", help="comma-separated sizes")
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--reader-workers", type=int, default=16)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, in order")
    args = parser.parse_args()
    chosen = args.tools.split(",")
    if unknown := set(chosen) - set(TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))} (known: {', '.join(TOOLS)})")
    if "reader" in chosen:
        peers.peer_python()
    become_subreaper()
    runs: list[Run] = []
    for feeds in (int(f) for f in args.feeds.split(",")):
        runs.extend(run_size(feeds, args.items, args.reader_workers, chosen))
    print()
    print(report(runs, args.items, "reader" in chosen))


if __name__ == "__main__":
    main()

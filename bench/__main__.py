"""`make bench`: one poll-cycle workload through aggregator and through a naive script.

`python -m bench idle` measures the daemon's steady-state cost instead (bench/idle.py).

Phases over one local feed farm: first (everything new), second (10% of feeds churned,
the rest unchanged), third (nothing changed). Each tool runs as its own process; wall
time, CPU time and peak memory come from that process alone (os.wait4). Ratios are taken
against the naive script measured in the same run, since the machine is shared and noisy.

    python -m bench [--feeds 200] [--items 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import idle
from bench.farm import Farm


@dataclass(frozen=True)
class Run:
    phase: str
    tool: str
    wall: float
    cpu: float
    peak_mb: float
    requests: int
    not_modified: int
    detail: str


def _measure(argv: list[str], cwd: Path) -> tuple[float, float, float, str]:
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    output = process.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{argv[2:4]} failed with status {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


def main() -> None:
    if sys.argv[1:2] == ["idle"]:
        idle.main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    args = parser.parse_args()

    farm = Farm(args.feeds, args.items).start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as tmp:
            work = Path(tmp)
            config = work / "feeds.toml"
            config.write_text(
                '[publish]\nmax_age = "100000d"\n[poll]\nconcurrency = 20\n'
                + "".join(
                    f'[[feeds]]\nname = "feed-{n}"\nurl = "{u}"\n'
                    for n, u in enumerate(farm.urls())
                ),
                encoding="utf-8",
            )
            urls = work / "urls.txt"
            urls.write_text("\n".join(farm.urls()), encoding="utf-8")
            ours = [sys.executable, "-m", "aggregator", "once", "--config", str(config)]
            naive = [sys.executable, "-m", "bench.naive", str(urls), str(work / "naive.xml")]
            root = Path(__file__).resolve().parent.parent
            for phase, fraction in (("first", 0.0), ("second", 0.1), ("third", 0.0)):
                if phase == "second":
                    farm.churn(fraction, 5)
                for tool, argv in (("aggregator", ours), ("naive script", naive)):
                    farm.reset()
                    wall, cpu, peak, output = _measure(argv, root)
                    requests, not_modified = farm.counters()
                    detail = output.strip().splitlines()[-1] if output.strip() else ""
                    runs.append(Run(phase, tool, wall, cpu, peak, requests, not_modified, detail))
    finally:
        farm.stop()
    _report(runs, args.feeds, args.items)


def _report(runs: list[Run], feeds: int, items: int) -> None:
    print(f"\npoll cycle, {feeds} feeds x {items} items, local farm on 127.0.0.1")
    header = (
        f"{'phase':<7} {'tool':<13} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} "
        f"{'requests':>8} {'304s':>5} {'wall vs naive':>13}"
    )
    print(header)
    print("-" * len(header))
    naive = {r.phase: r for r in runs if r.tool == "naive script"}
    for r in runs:
        ratio = r.wall / naive[r.phase].wall
        print(
            f"{r.phase:<7} {r.tool:<13} {r.wall:7.2f} {r.cpu:7.2f} {r.peak_mb:8.1f} "
            f"{r.requests:8d} {r.not_modified:5d} {ratio:12.2f}x"
        )
    print("\naggregator's last line per phase:")
    for r in runs:
        if r.tool == "aggregator":
            print(f"  {r.phase}: {r.detail}")


if __name__ == "__main__":
    main()

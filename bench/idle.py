"""The daemon's memory and steady-state cost with N sources (50 items each).

First, `aggregator run` on an empty store: it polls, parses and stores all N feeds; the
peak memory of its whole process tree (summed PSS: the parser workers count) is sampled
until everything is stored and published, the archives of the feeds' past days included
(output/ unchanged for 30 s). Then two windows, same store, same sources: a
baseline where no source is due (interval 1 h: the scheduler ticks, nothing is fetched)
and the measured one (interval 30 s: every source is polled and answers 304 about twice a
minute). Reports the daemon's CPU time and memory in each, read from /proc, and the ratio.

    python -m bench idle [--feeds 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.farm import Farm
from bench.measure import Tree

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, farm: Farm, interval: str, port: int) -> None:
    path.write_text(
        f'[poll]\ninterval = "{interval}"\nper_host = 10\n[publish]\nmax_age = "100000d"\n'
        f"[server]\nport = {port}\n"
        + "".join(f'[[feeds]]\nname = "f{n}"\nurl = "{u}"\n' for n, u in enumerate(farm.urls())),
        encoding="utf-8",
    )


def _window(
    config: Path, farm: Farm, port: int, seconds: float
) -> tuple[float, float, float, int, int]:
    """Start the daemon, let it settle, measure CPU and memory over `seconds`, stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(5)  # start-up publish and imports are not steady state
        farm.reset()
        cpu_before = _cpu_seconds(process.pid)
        time.sleep(seconds)
        cpu = _cpu_seconds(process.pid) - cpu_before
        rss, peak = _memory_mb(process.pid)
        requests, not_modified, _ = farm.counters()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return cpu, rss, peak, requests, not_modified


QUIET = 30.0  # seconds without a change to output/: publishing has settled (a publish
# that leaves archive work for the next waits 4x its own duration, a few seconds, for it)


def _newest_change(output: Path) -> float:
    """The newest modification time under `output` (0.0 while it holds nothing)."""
    newest = 0.0
    for path in output.rglob("*") if output.exists() else ():
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:  # replaced while looked at
            continue
    return newest


def _first_start(config: Path, farm: Farm, feeds: int) -> tuple[float, float]:
    """Peak memory (MB, whole tree) and wall time of a daemon filling an empty store."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    output = config.parent / "output"
    started = time.monotonic()
    peak_kb = 0
    tree = Tree(process.pid)
    try:
        # Done once every feed was fetched and the output has stopped changing for QUIET
        # seconds: the publishes that build the archives of the feeds' past days come after
        # the first one, paced, and belong to the first start (else the baseline window,
        # a restart on this store, would do them).
        changed, last = started, -1.0
        while time.monotonic() - started < 600:
            peak_kb = max(peak_kb, *tree.sample_kb())
            newest = _newest_change(output)
            if newest != last:
                changed, last = time.monotonic(), newest
            fetched = farm.counters()[0] >= feeds
            if fetched and newest > 0 and time.monotonic() - changed > QUIET:
                break
            time.sleep(0.05)
        seconds = changed - started
    finally:
        process.terminate()
        process.wait(timeout=30)
    return peak_kb / 1024, seconds


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench idle")
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    farm = Farm(args.feeds, 50).start()
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-idle-") as tmp:
            config = Path(tmp) / "feeds.toml"
            port = _free_port()
            _config(config, farm, "1h", port)
            farm.reset()
            # Fills the store, so every later poll is a conditional GET answered 304.
            first_peak, first_seconds = _first_start(config, farm, args.feeds)
            baseline = _window(config, farm, port, args.seconds)
            _config(config, farm, "30s", port)
            polling = _window(config, farm, port, args.seconds)
    finally:
        farm.stop()
    print(
        f"\ndaemon first start, {args.feeds} sources x 50 items into an empty store: "
        f"peak memory {first_peak:.0f} MB (whole process tree, summed PSS), "
        f"all stored and published, archives included, in {first_seconds:.0f} s"
    )
    print(f"\ndaemon steady state, {args.feeds} sources, {args.seconds:.0f} s window")
    print(
        f"{'window':<26} {'cpu s':>6} {'cpu %':>6} {'rss MB':>7} {'peak MB':>8} "
        f"{'requests':>9} {'304s':>6}"
    )
    for label, (cpu, rss, peak, requests, not_modified) in (
        ("baseline (nothing due)", baseline),
        ("polling, all 304, 30 s", polling),
    ):
        print(
            f"{label:<26} {cpu:6.2f} {100 * cpu / args.seconds:6.1f} {rss:7.1f} {peak:8.1f} "
            f"{requests:9d} {not_modified:6d}"
        )
    per_poll_ms = 1000 * (polling[0] - baseline[0]) / max(polling[4], 1)
    ratio = polling[0] / max(baseline[0], 0.01)
    print(f"CPU per 304 poll: {per_poll_ms:.2f} ms; polling/baseline CPU: {ratio:.1f}x")

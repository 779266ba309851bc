"""How long the daemon keeps a reader waiting while it takes in a large feeds.toml.

`aggregator run` starts with one source; then its feeds.toml is replaced by one of N
sources, all on a loopback port that refuses (each poll fails at once, so the daemon claims,
polls and records as fast as it can) while it syncs them into the store and publishes pages
that list all N. A thread asks `/healthz` every 10 ms meanwhile; reported: the slowest
answers and how many took over 100 ms, for `--seconds` after the swap.

Each round runs the daemon as shipped (the GIL handed over within
`threads.LOOP_SWITCH_SECONDS`, 1 ms) and with CPython's default (5 ms), alternately, since
the machine is shared and noisy: the ratio is the figure.

    python -m bench stall [--sources 50000] [--seconds 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = (("shipped, 1 ms", None), ("CPython's 5 ms", 0.005))
# The daemon as `aggregator run` starts it, the switch interval set as a variant asks.
LAUNCH = """
import sys
from aggregator.daemon import threads
if sys.argv[1] != "-":
    threads.LOOP_SWITCH_SECONDS = float(sys.argv[1])
from aggregator.cli import main
main(["run", "--config", "feeds.toml"])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(sources: int, port: int, dead: int) -> str:
    head = f'[server]\nport = {port}\n\n[poll]\ninterval = "1h"\n\n'
    return head + "".join(
        f'[[feeds]]\nname = "s{n:06}"\nurl = "http://127.0.0.1:{dead}/{n}.xml"\n\n'
        for n in range(sources)
    )


def _round(switch: float | None, sources: int, seconds: float) -> list[float]:
    """The `/healthz` answer times (seconds) after the swap, for one daemon."""
    with tempfile.TemporaryDirectory(prefix="aggregator-stall-") as tmp:
        work = Path(tmp)
        port, dead = _free_port(), _free_port()
        (work / "feeds.toml").write_text(_config(1, port, dead), encoding="utf-8")
        daemon = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "-" if switch is None else str(switch)],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/healthz"
        answers: list[float] = []
        swapped = threading.Event()
        done = threading.Event()

        def probe() -> None:
            with httpx.Client(timeout=60) as client:
                while not done.is_set():
                    started = time.perf_counter()
                    try:
                        client.get(url)
                    except httpx.HTTPError:
                        time.sleep(0.05)  # not listening yet
                        continue
                    if swapped.is_set():
                        answers.append(time.perf_counter() - started)
                    time.sleep(0.01)

        prober = threading.Thread(target=probe)
        try:
            prober.start()
            time.sleep(3)  # started, first publish done
            bigger = work / "feeds.toml.new"
            bigger.write_text(_config(sources, port, dead), encoding="utf-8")
            bigger.replace(work / "feeds.toml")
            swapped.set()
            time.sleep(seconds)
        finally:
            done.set()
            prober.join()
            daemon.terminate()
            daemon.wait(30)
        return answers


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench stall",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sources", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"/healthz while a daemon takes in {args.sources:,} sources ({args.seconds:g} s)")
    worst: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    for n in range(args.rounds):
        for name, switch in VARIANTS:
            answers = sorted(_round(switch, args.sources, args.seconds), reverse=True)
            slow = sum(1 for a in answers if a > 0.1)
            worst[name].append(answers[0] if answers else float("nan"))
            slowest = ", ".join(f"{a:.3f}" for a in answers[:3])
            print(
                f"round {n + 1}, {name:>15}: slowest {slowest} s; {slow} of {len(answers)}"
                f" over 100 ms; median {statistics.median(answers):.3f} s"
            )
    shipped, default = (statistics.median(worst[name]) for name, _ in VARIANTS)
    print(
        f"slowest answer, median of rounds: {shipped:.3f} s shipped, {default:.3f} s at 5 ms "
        f"({shipped / default:.2f}x)"
    )

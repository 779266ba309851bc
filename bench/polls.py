"""The CPU of polls answered 304, in process: a fixed workload, repeatable on a busy machine.

`bench idle` measures the real daemon over a minute of wall time, which other processes on
a shared machine disturb. Here the daemon's own polling loop (`daemon.Polling`: claims,
state reads, fetches, records) polls every source of a filled store `--rounds` times, the
clock moved a day ahead before each round so that all are due, and the CPU time of this
process (no parser process starts: nothing is parsed) is divided by the polls.

    python -m bench polls [--feeds 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.config import load_config
from aggregator.daemon.polling import Polling
from aggregator.metrics import Metrics
from aggregator.store import open_store
from aggregator.store.adapter import AsyncStore
from bench.farm import Farm

ROOT = Path(__file__).resolve().parent.parent


async def _poll_rounds(config_path: Path, rounds: int) -> tuple[int, float]:
    """(polls, CPU seconds) of `rounds` rounds after one to warm up."""
    config = load_config(config_path)
    ahead = timedelta(0)

    def clock() -> datetime:
        return datetime.now(UTC) + ahead

    store = AsyncStore(open_store(config.store.path))
    polling = Polling(
        store,
        config=lambda: config,
        metrics=Metrics(),
        clock=clock,
        stopping=asyncio.Event(),
        on_stored=lambda: None,
        spawn=asyncio.ensure_future,
    )
    await polling.sync_store()

    async def one_round() -> None:
        target = polling.tally.polls + len(config.sources)
        while polling.tally.polls < target or polling.inflight:
            polling.claim_soon()
            await asyncio.sleep(0.05)

    try:
        ahead += timedelta(days=1)
        await one_round()  # connections opened, code warmed
        polls, cpu = polling.tally.polls, time.process_time()
        for _ in range(rounds):
            ahead += timedelta(days=1)
            await one_round()
        return polling.tally.polls - polls, time.process_time() - cpu
    finally:
        await polling.stop(1.0)
        await polling.close()
        store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench polls")
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    farm = Farm(args.feeds, 50).start()
    try:
        with tempfile.TemporaryDirectory(prefix="aggregator-polls-") as tmp:
            config = Path(tmp) / "feeds.toml"
            config.write_text(
                '[poll]\ninterval = "30s"\nper_host = 10\n[publish]\nmax_age = "100000d"\n'
                + "\n".join(farm.feeds_toml())
                + "\n",
                encoding="utf-8",
            )
            # Fills the store, so every later poll is a conditional GET answered 304.
            subprocess.run(
                [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            farm.reset()
            polls, cpu = asyncio.run(_poll_rounds(config, args.rounds))
            requests, not_modified, _ = farm.counters()
    finally:
        farm.stop()
    print(
        f"{polls} polls of {args.feeds} sources ({not_modified} of {requests} requests "
        f"answered 304): {cpu:.2f} s of CPU, {1000 * cpu / max(polls, 1):.3f} ms per poll"
    )

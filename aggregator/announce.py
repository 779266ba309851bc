"""What the daemon says about itself: where it serves and what it runs on (one line at
start), and what it has done (a summary line every `[server] summary_interval`).

An operator who starts `aggregator run` must see at once that it works and where; one who
reads the log a day later must see it kept working. Both lines are built here, as text;
the daemon and the CLI decide when to log them. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from aggregator.settings import Config, server_url
from aggregator.store.records import PollOutcome

# The start line's logger: the CLI lets it through at the default level (`warning`), so a
# healthy start is never silent; `--log-level error` silences it.
start_log = logging.getLogger("aggregator.start")

_ALL_ADDRESSES = {"0.0.0.0": "all IPv4 addresses", "::": "all addresses"}


def listen_description(host: str, port: int) -> str:
    """`http://127.0.0.1:8080/`, or with a hint when the host is a wildcard address."""
    url = server_url(host, port)
    every = _ALL_ADDRESSES.get(host)
    return f"{url} (listening on {every})" if every else url


def store_description(config: Config) -> str:
    """The SQLite file, or the PostgreSQL host and database without the password."""
    if config.store.url is None:
        return f"SQLite {config.store.path}"
    from aggregator.store.postgres_schema import describe  # noqa: PLC0415 (psycopg for PostgreSQL only)

    return f"PostgreSQL {describe(config.store.url)}"


def start_line(config: Config, *, polling: bool = True) -> str:
    """The line `run` (`polling`) and `serve` print when they start serving."""
    where = listen_description(config.server.host, config.server.port)
    if not polling:
        return f"serving {config.publish.output_dir} at {where}"
    sources = len(config.sources)
    noun = "source" if sources == 1 else "sources"
    return f"serving at {where}: {sources} {noun}, store {store_description(config)}"


@dataclass(frozen=True)
class PollTally:
    """Polls since the last summary: a value the daemon replaces after each poll."""

    polls: int = 0
    new_items: int = 0
    failures: int = 0

    def counted(self, outcome: PollOutcome, new: int) -> PollTally:
        failed = outcome is PollOutcome.FAILED
        return PollTally(self.polls + 1, self.new_items + new, self.failures + failed)


def summary_line(tally: PollTally, next_due: datetime | None, now: datetime) -> str:
    """`summary: 12 polls, 30 new items, 1 failed; next poll due 14:05:00 UTC (in 3 min)`."""
    done = f"summary: {tally.polls} polls, {tally.new_items} new items, {tally.failures} failed"
    if next_due is None:
        return f"{done}; no poll due"
    return f"{done}; next poll due {next_due:%Y-%m-%d %H:%M:%S} UTC ({_until(next_due, now)})"


def _until(when: datetime, now: datetime) -> str:
    seconds = int((when - now).total_seconds())
    if seconds <= 0:
        return "now"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"in {seconds // size} {unit}"
    return f"in {seconds} s"

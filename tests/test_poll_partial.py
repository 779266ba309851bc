"""A poll with the partial parse stores and publishes what one parsing whole does.

Each scenario (a source's successive documents, the clock moving, retention burying
entries) runs twice through the real poll (`run_cycle`: fetch from a real file or a server
on 127.0.0.1, parse, update, a real SQLite store, publish into a real output/): once with
`[poll] partial_parse` on, once off; the stored rows (entries, tombstones, sources) and the
published files must be the same, byte for byte. The golden timelines of tests/data and
documents hypothesis makes up and edits go through it; so do the cases where the poll must
parse the document whole after all (the store lost an entry the memory reuses). And a poll
of a feed with 3 new of 50 items parses 3: its report and the daemon's metrics say so.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sqlite3
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aggregator.config import load_config
from aggregator.cycle import run_cycle
from aggregator.daemon import Daemon, DaemonOptions
from aggregator.parse import pool as pool_module
from aggregator.parse.pool import DEFAULT_BUDGET, ParsePool, Partly
from aggregator.poll import SourceReport
from aggregator.store.sqlite import SqliteStore
from aggregator.types import ParsedFeed
from tests.feedserver import FeedServer
from tests.test_partial_parse import NOW, _channel, _document, _story, histories

DATA = Path(__file__).parent / "data" / "timeline"


class InProcessParsers(ParsePool):
    """The pool's own parse, run in this process: scenarios poll hundreds of times."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.feeds: list[ParsedFeed] = []

    async def parse(  # type: ignore[override]
        self,
        body: bytes,
        headers: dict[str, str],
        url: str,
        *,
        timezone: str = "UTC",
        budget: float = DEFAULT_BUDGET,
        partly: Partly | None = None,
    ) -> ParsedFeed:
        feed = pool_module._parse(body, dict(headers), url, timezone, partly)
        self.feeds.append(feed)
        return feed


@dataclass(frozen=True)
class Outcome:
    """What a scenario left: the store's rows and the published files."""

    entries: list[tuple[object, ...]]
    tombstones: list[tuple[object, ...]]
    sources: list[tuple[object, ...]]
    published: dict[str, bytes]
    reports: list[SourceReport]


Polls = Sequence[tuple[datetime, dict[str, bytes]]]  # at each moment, each source's document


@dataclass(frozen=True)
class Scenario:
    """A source's documents over time, with the rest of feeds.toml and per-source options,
    and what to do to the store after a poll (`between(index, database)`)."""

    polls: Polls
    config: str = ""
    options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    between: Callable[[int, Path], None] | None = None


def _config_text(scenario: Scenario, names: Sequence[str], *, partial: bool) -> str:
    lines = [f"[poll]\npartial_parse = {str(partial).lower()}", scenario.config]
    for name in names:
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{name}.xml"']
        lines += [
            f"{key} = {value!r}".replace("'", '"')
            for key, value in scenario.options.get(name, {}).items()
        ]
    return "\n".join(lines) + "\n"


def _run(workdir: Path, scenario: Scenario, *, partial: bool) -> Outcome:
    """Poll each source's documents at each moment (a file each) in `workdir`, emptied
    first (both runs see the same paths, which the published files name)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    parsers = InProcessParsers()
    reports: list[SourceReport] = []
    database = workdir / "state" / "aggregator.db"
    for index, (at, documents) in enumerate(scenario.polls):
        for name, body in documents.items():
            (workdir / f"{name}.xml").write_bytes(body)
            stamp = int(at.timestamp()) * 10**9  # the file's validators: the same both runs
            os.utime(workdir / f"{name}.xml", ns=(stamp, stamp))
        (workdir / "feeds.toml").write_text(
            _config_text(scenario, list(documents), partial=partial), encoding="utf-8"
        )
        loaded = load_config(workdir / "feeds.toml")
        store = SqliteStore.open(loaded.store.path)
        try:
            cycle = run_cycle(loaded, store, clock=functools.partial(_fixed, at), parsers=parsers)
            reports.extend(asyncio.run(cycle).sources)
        finally:
            store.close()
        if scenario.between is not None:
            scenario.between(index, database)
    return _snapshot(database, workdir / "output", reports)


def _fixed(moment: datetime) -> datetime:
    return moment


def _snapshot(database: Path, output: Path, reports: list[SourceReport]) -> Outcome:
    db = sqlite3.connect(database)
    try:
        columns = [c[1] for c in db.execute("PRAGMA table_info(sources)") if c[1] != "items"]
        return Outcome(
            db.execute("SELECT * FROM entries ORDER BY source, entry_id").fetchall(),
            db.execute("SELECT * FROM tombstones ORDER BY source, entry_id").fetchall(),
            db.execute(f"SELECT {', '.join(columns)} FROM sources ORDER BY name").fetchall(),
            # What is served (not the hidden record of inodes and mtimes).
            {
                str(p.relative_to(output)): p.read_bytes()
                for p in sorted(output.rglob("*"))
                if p.is_file() and not any(n[0] == "." for n in p.relative_to(output).parts)
            },
            reports,
        )
    finally:
        db.close()


def _same(workdir: Path, scenario: Scenario) -> Outcome:
    """Run the scenario both ways: the same rows, files and reports. The partial run's."""
    partly = _run(workdir, scenario, partial=True)
    whole = _run(workdir, scenario, partial=False)
    assert partly.entries == whole.entries
    assert partly.tombstones == whole.tombstones
    assert partly.sources == whole.sources
    assert partly.published.keys() == whole.published.keys()
    for name, data in partly.published.items():
        assert data == whole.published[name], name
    assert [_told(r) for r in partly.reports] == [_told(r) for r in whole.reports]
    assert all(r.reused == 0 for r in whole.reports)
    return partly


def _told(report: SourceReport) -> tuple[object, ...]:
    return (report.name, report.outcome, report.new, report.updated, report.warning, report.error)


# -- the golden timelines, both ways ---------------------------------------------------------


@pytest.mark.parametrize(
    "directory", sorted(p for p in DATA.iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_each_golden_case_stores_and_publishes_the_same_with_the_partial_parse(
    directory: Path, tmp_path: Path
):
    case = tomllib.loads((directory / "case.toml").read_text(encoding="utf-8"))
    polls = [
        (
            datetime.fromisoformat(poll["at"]),
            {name: (directory / file).read_bytes() for name, file in poll["feeds"].items()},
        )
        for poll in case["poll"]
    ]
    _same(tmp_path / "w", Scenario(polls, case.get("config", ""), case.get("sources", {})))


def _with_atom(items: list[str]) -> bytes:
    atom = b' xmlns:atom="http://www.w3.org/2005/Atom"'
    return _channel(items).replace(b'<rss version="2.0"', b'<rss version="2.0"' + atom)


def test_a_feed_edited_over_days_with_retention_stores_the_same(tmp_path: Path):
    """Entries buried by retention stay buried (their tombstones touched) though the partial
    parse does not read their items; an item dated in the future is read again once its
    date has come (the same bytes then change the entry)."""
    future = _story(1).replace(
        "</guid>", "</guid><atom:updated>2025-07-14T09:00:00Z</atom:updated>"
    )
    base = [_story(k) for k in range(5, 25)]
    polls = [
        (NOW, {"a": _with_atom([future, *base])}),
        (NOW + timedelta(days=1), {"a": _with_atom([_story(4), future, *base])}),
        (NOW + timedelta(days=3), {"a": _with_atom([_story(3), _story(4), future, *base])}),
        (
            NOW + timedelta(days=4),
            {"a": _with_atom([_story(2), _story(3), _story(4), future, *base[:-2]])},
        ),
    ]
    config = '[publish]\nmax_age = "2d"\n[store]\nkeep = "2d"\n'
    got = _same(tmp_path / "w", Scenario(polls, config))
    # The future item is read again at the second poll, when its date has passed.
    assert [(r.parsed, r.reused) for r in got.reports] == [(21, 0), (2, 20), (1, 22), (1, 21)]
    assert got.reports[1].updated == 1  # its `updated` stored now
    assert got.tombstones  # retention buried entries still in the feed


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(history=histories(), hours=st.lists(st.integers(1, 60), min_size=4, max_size=4))
def test_generated_feeds_store_and_publish_the_same(tmp_path: Path, history, hours):
    atom, versions = history
    moments = [NOW]
    for step in hours:
        moments.append(moments[-1] + timedelta(hours=step))
    polls = [
        (at, {"g": _document(atom, items)}) for at, items in zip(moments, versions, strict=False)
    ]
    # Retention at a day and a half: entries are buried while their items stay in the feed.
    config = '[publish]\nmax_age = "36h"\n[store]\nkeep = "36h"\n'
    got = _same(tmp_path / "w", Scenario(polls, config))
    event("some items reused" if any(r.reused for r in got.reports) else "parsed whole throughout")


# -- parsing whole after all -------------------------------------------------------------------


def test_an_entry_the_store_lost_makes_the_poll_parse_the_document_whole(tmp_path: Path):
    """The memory says the item is unchanged, but its entry is gone from the store (deleted
    by hand): a whole parse would store it again as new, so the poll parses whole."""

    def lose_an_entry(index: int, database: Path) -> None:
        if index == 0:
            with sqlite3.connect(database) as db:
                db.execute("DELETE FROM entries WHERE entry_id = 'tag:a,10'")

    before = _channel([_story(k) for k in range(3, 53)])
    after = _channel([_story(k) for k in range(0, 50)])
    polls = [(NOW, {"a": before}), (NOW + timedelta(hours=1), {"a": after})]
    got = _same(tmp_path / "w", Scenario(polls, between=lose_an_entry))
    second = got.reports[1]
    assert (second.new, second.parsed, second.reused) == (4, 50, 0)  # 0, 1, 2, and 10 again


# -- 3 new of 50: 3 parsed ---------------------------------------------------------------------


def test_a_poll_of_three_new_items_of_fifty_parses_three(tmp_path: Path):
    """Over HTTP from a real server, with the real parser processes."""
    server = FeedServer().start()
    try:
        server.add("/a.xml", _channel([_story(k) for k in range(3, 53)]))
        config = tmp_path / "feeds.toml"
        config.write_text(
            f'[[feeds]]\nname = "a"\nurl = "{server.url("/a.xml")}"\n', encoding="utf-8"
        )
        loaded = load_config(config)

        def cycle(at: datetime) -> SourceReport:
            store = SqliteStore.open(loaded.store.path)
            try:
                [report] = asyncio.run(run_cycle(loaded, store, clock=lambda: at)).sources
            finally:
                store.close()
            return report

        first = cycle(NOW)
        assert (first.new, first.parsed, first.reused) == (50, 50, 0)
        server.add(
            "/a.xml", _channel([_story(k) for k in range(0, 50)]), last_modified=1752500000.0
        )
        second = cycle(NOW + timedelta(hours=1))
        assert (second.new, second.parsed, second.reused) == (3, 3, 47)
    finally:
        server.stop()


def test_the_daemon_counts_items_parsed_and_reused(tmp_path: Path):
    (tmp_path / "a.xml").write_bytes(_channel([_story(k) for k in range(3, 53)]))
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[poll]\ninterval = "1s"\n[publish]\nmax_age = "3650d"\n'
        '[[feeds]]\nname = "a"\nurl = "a.xml"\n',
        encoding="utf-8",
    )
    daemon = Daemon(
        config,
        load_config(config),
        options=DaemonOptions(tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False),
    )
    stored = daemon.metrics.items_stored

    async def scenario() -> None:
        task = asyncio.create_task(daemon.run())
        try:
            await _until(lambda: stored._value.get() == 50, task)
            (tmp_path / "a.xml").write_bytes(_channel([_story(k) for k in range(0, 50)]))
            await _until(lambda: stored._value.get() == 53, task)
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    metrics = daemon.metrics.render().decode()
    assert 'aggregator_feed_items_total{how="parsed"} 53.0' in metrics
    assert 'aggregator_feed_items_total{how="reused"} 47.0' in metrics


async def _until(condition, task: asyncio.Task[None], seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        assert not task.done(), "the daemon ended"
        await asyncio.sleep(0.05)

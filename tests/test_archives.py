"""Archived feeds (RFC 5005 §4), published from a real SQLite store into a real output/.

Shows: following `prev-archive` from atom.xml reaches every stored item (300 items over 25
days, `max_items = 50`), each archive linking `current`, its neighbours and itself, its
items rendered exactly as in atom.xml; today is archived only once it ends; a second
publish with no change renders and rewrites no archive file; a changed item rewrites only
its day, a new day only itself and its neighbours; retention removes a day and relinks the
new oldest; a changed filter renders every day again in bounded batches, a changed source
title only that source's days; the result never depends on how the work was batched.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from lxml import etree

from aggregator import archiving
from aggregator import publish as publish_module
from aggregator.archive import archive_name
from aggregator.config import load_config
from aggregator.cycle import apply_retention
from aggregator.poll import store_entries, sync_sources
from aggregator.publish import PublishReport, publish_all, publish_timeline
from aggregator.render.workers import RenderWorkers
from aggregator.settings import Config
from aggregator.store import StoreAPI, open_store
from aggregator.timeline import public_id
from aggregator.types import ParsedFeed, Validators
from tests.conftest import start_serve
from tests.storedata import entry, succeeded

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)  # 17:30 in Kolkata
ZONE = ZoneInfo("Asia/Kolkata")
TODAY = NOW.astimezone(ZONE).date()
DAYS = 25
PER_DAY = 12
SOURCES = ("a", "b", "c")
ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
BASE = "http://127.0.0.1:8080/"


def write_config(
    directory: Path, *, max_items: int = 50, extra: str = "", base: str = BASE
) -> Path:
    path = directory / "feeds.toml"
    port = base.rstrip("/").rpartition(":")[2]
    path.write_text(
        f'[aggregator]\ntitle = "Archive test"\ntimezone = "Asia/Kolkata"\nbase_url = "{base}"\n'
        f"[server]\nport = {port}\n"
        f'[publish]\nmax_items = {max_items}\nmax_age = "3650d"\noutput_dir = "output"\n{extra}'
        '[store]\npath = "state/aggregator.db"\nkeep = "3650d"\n'
        + "".join(
            f'[[feeds]]\nname = "{s}"\nurl = "https://{s}.example.org/feed.xml"\n' for s in SOURCES
        ),
        encoding="utf-8",
    )
    return path


def moment(days_ago: int, n: int) -> datetime:
    """The n-th item's place on the day `days_ago` days before today (Kolkata)."""
    day = TODAY - timedelta(days=days_ago)
    start = datetime(day.year, day.month, day.day, 1, 0, tzinfo=ZONE)
    return (start + timedelta(minutes=37 * n)).astimezone(UTC)


def fill(store: StoreAPI, days: Iterable[int] = range(DAYS), per_day: int = PER_DAY) -> set[str]:
    """`per_day` items on each of `days` (days before today, 0 = today), spread over the
    sources, stored as polls would have the day they came out. Their public ids."""
    ids = set()
    for days_ago in days:
        for n in range(per_day):
            source = SOURCES[n % len(SOURCES)]
            published = moment(days_ago, n)
            item = entry(f"d{days_ago}-{n}", f"Story {n} of day {days_ago}", published=published)
            store_entries(store, source, [item], min(published + timedelta(minutes=5), NOW))
            ids.add(public_id(source, item.entry_id))
    return ids


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, StoreAPI]]:
    config = load_config(write_config(tmp_path))
    store = open_store(config.store.target)
    sync_sources(store, config.sources, NOW - timedelta(days=60))
    try:
        yield config, store
    finally:
        store.close()


def parse(path: Path) -> etree._Element:
    return etree.fromstring(path.read_bytes())


def links(feed: etree._Element) -> dict[str, str]:
    return {str(link.get("rel")): str(link.get("href")) for link in feed.findall(f"{ATOM}link")}


def entry_ids(feed: etree._Element) -> set[str]:
    return {str(e.findtext(f"{ATOM}id")) for e in feed.findall(f"{ATOM}entry")}


def local(output: Path, url: str) -> Path:
    assert url.startswith(BASE), url
    return output / url.removeprefix(BASE)


def walk(output: Path) -> tuple[set[str], list[Path]]:
    """Every entry id reachable from atom.xml by `prev-archive`, and the archives visited
    (newest first); checks each archive's RFC 5005 links on the way."""
    feed = parse(output / "atom.xml")
    ids = entry_ids(feed)
    visited: list[Path] = []
    newer = BASE + "atom.xml"
    while (url := links(feed).get("prev-archive")) is not None:
        path = local(output, url)
        feed = parse(path)
        own = links(feed)
        assert feed.find(f"{FH}archive") is not None, path
        assert own["self"] == url and feed.findtext(f"{ATOM}id") == url
        assert own["current"] == BASE + "atom.xml"
        assert own.get("next-archive", BASE + "atom.xml") == newer
        found = entry_ids(feed)
        assert found, f"{path}: an archive day without items"
        ids |= found
        visited.append(path)
        newer = url
    return ids, visited


def versions(output: Path) -> dict[str, tuple[int, int]]:
    """Every archive file's (inode, mtime): a rewrite changes them."""
    return {
        str(p.relative_to(output)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (output / "archive").rglob("*.atom")
    }


def publish(config: Config, store: StoreAPI, now: datetime = NOW) -> PublishReport:
    report = publish_timeline(config, store, now)
    while report.unfinished:  # the daemon asks for the next publish itself
        report = publish_timeline(config, store, now)
    return report


def day_file(days_ago: int) -> str:
    return archive_name(TODAY - timedelta(days=days_ago))


# -- the acceptance --------------------------------------------------------------------------


def test_following_prev_archive_from_atom_xml_reaches_every_item(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    stored = fill(store)
    assert len(stored) == DAYS * PER_DAY == 300
    publish(config, store)
    output = config.publish.output_dir
    atom = parse(output / "atom.xml")
    assert len(atom.findall(f"{ATOM}entry")) == 50
    reached, archives = walk(output)
    assert reached == stored
    # One document per past day, the newest first; today is not archived while it lasts.
    assert [p.relative_to(output).as_posix() for p in archives] == [
        day_file(d) for d in range(1, DAYS)
    ]
    assert not (output / day_file(0)).exists()
    assert len(list((output / "archive").rglob("*.atom"))) == DAYS - 1


def test_archive_items_are_rendered_as_in_atom_xml(setup: tuple[Config, StoreAPI]) -> None:
    """Ids, titles, links, teasers, source credits: byte for byte the entries of atom.xml."""
    config, store = setup
    fill(store)
    publish(config, store)
    output = config.publish.output_dir
    in_feed = {
        e.findtext(f"{ATOM}id"): _canonical(e)
        for e in parse(output / "atom.xml").iter(f"{ATOM}entry")
    }
    in_archives = {
        e.findtext(f"{ATOM}id"): _canonical(e)
        for path in walk(output)[1]
        for e in parse(path).iter(f"{ATOM}entry")
    }
    shared = set(in_feed) & set(in_archives)
    assert len(shared) == 50 - PER_DAY  # atom.xml's items of the days before today
    assert all(in_feed[i] == in_archives[i] for i in shared)


def _canonical(element: etree._Element) -> bytes:
    """An entry's XML, without the namespaces it does not use (the archive's `fh`)."""
    return etree.tostring(element, method="c14n", exclusive=True, with_tail=False)


def test_a_second_publish_with_no_change_renders_and_rewrites_no_archive(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    fill(store)
    publish(config, store)
    before = versions(config.publish.output_dir)
    again = publish_timeline(config, store, NOW + timedelta(minutes=5))
    assert (again.archive_days, again.unfinished, again.changed) == (0, False, ())
    assert versions(config.publish.output_dir) == before


def test_a_changed_item_rewrites_only_its_day(setup: tuple[Config, StoreAPI]) -> None:
    config, store = setup
    fill(store)
    publish(config, store)
    output = config.publish.output_dir
    before = versions(output)
    edited = entry("d7-4", "Story 4 of day 7, corrected", published=moment(7, 4))
    assert store_entries(store, SOURCES[4 % 3], [edited], NOW).updated == 1
    report = publish(config, store, NOW + timedelta(minutes=1))
    after = versions(output)
    assert report.archive_days == 1
    assert {n for n in after if after[n] != before.get(n)} == {day_file(7)}
    assert b"Story 4 of day 7, corrected" in (output / day_file(7)).read_bytes()


def test_a_new_day_rewrites_itself_and_its_neighbours_only(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    stored = fill(store, [d for d in range(1, DAYS) if d != 10])
    publish(config, store)
    output = config.publish.output_dir
    # Day 10 has nothing: the days around it link across the gap.
    assert not (output / day_file(10)).exists()
    assert links(parse(output / day_file(11)))["next-archive"] == BASE + day_file(9)
    before = versions(output)
    late = entry("late", "A late item of day 10", published=moment(10, 3))
    store_entries(store, "a", [late], NOW)
    publish(config, store, NOW + timedelta(minutes=1))
    after = versions(output)
    assert {n for n in after if after[n] != before.get(n)} == {
        day_file(9),
        day_file(10),
        day_file(11),
    }
    assert links(parse(output / day_file(11)))["next-archive"] == BASE + day_file(10)
    assert walk(output)[0] == stored | {public_id("a", "late")}


def test_retention_removes_a_day_and_fixes_the_neighbours_links(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    stored = fill(store)
    publish(config, store)
    output = config.publish.output_dir
    assert links(parse(output / day_file(DAYS - 2)))["prev-archive"] == BASE + day_file(DAYS - 1)
    before = versions(output)
    # Keep 23 days: the two oldest days go, and half of the third oldest.
    keep = NOW - moment(DAYS - 3, PER_DAY // 2)
    kept_config = dataclasses.replace(config, store=dataclasses.replace(config.store, keep=keep))
    assert apply_retention(kept_config, store, NOW) == 2 * PER_DAY + PER_DAY // 2
    publish(config, store, NOW + timedelta(minutes=1))
    after = versions(output)
    assert not (output / day_file(DAYS - 1)).exists()
    assert not (output / day_file(DAYS - 2)).exists()
    oldest = parse(output / day_file(DAYS - 3))
    assert "prev-archive" not in links(oldest)
    assert len(oldest.findall(f"{ATOM}entry")) == PER_DAY - PER_DAY // 2
    assert {n for n in after if after[n] != before.get(n)} == {day_file(DAYS - 3)}
    reached, _ = walk(output)
    assert len(reached) == len(stored) - 2 * PER_DAY - PER_DAY // 2


def test_today_becomes_an_archive_day_when_it_ends(setup: tuple[Config, StoreAPI]) -> None:
    config, store = setup
    stored = fill(store, range(3))
    publish(config, store)
    output = config.publish.output_dir
    assert not (output / day_file(0)).exists()
    before = versions(output)
    tomorrow = NOW + timedelta(days=1)
    report = publish(config, store, tomorrow)
    # Their prev-archive and "earlier days" now lead to the day ended.
    assert report.changed == ("atom.xml", "index.html")
    assert links(parse(output / "atom.xml"))["prev-archive"] == BASE + day_file(0)
    after = versions(output)
    assert {n for n in after if after[n] != before.get(n)} == {day_file(0), day_file(1)}
    assert links(parse(output / day_file(1)))["next-archive"] == BASE + day_file(0)
    assert walk(output)[0] == stored


# -- bounded work ----------------------------------------------------------------------------


def unpublished_elsewhere(config: Config, store: StoreAPI, output: Path) -> Config:
    """`config` publishing into `output`, and `store` as if it was never published."""
    for table in ("published", "publications"):
        store._db.execute(f"DELETE FROM {table}")  # type: ignore[attr-defined]
    return dataclasses.replace(
        config, publish=dataclasses.replace(config.publish, output_dir=output)
    )


def test_work_is_done_in_bounded_batches_with_the_same_result(
    tmp_path: Path, setup: tuple[Config, StoreAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store = setup
    fill(store)
    publish(config, store)
    whole = _files(config.publish.output_dir)
    # The same store published again from nothing, 30 entries read per publish at most.
    elsewhere = unpublished_elsewhere(config, store, tmp_path / "batched")
    monkeypatch.setattr(archiving, "ARCHIVE_BUDGET", 30)
    publishes = 1
    report = publish_timeline(elsewhere, store, NOW)
    while report.unfinished:
        # Days are read whole (12 entries each) until 30 were read: three, and the day
        # above them, whose prev-archive now leads to the newest of them.
        assert report.archive_days <= 4
        walk(elsewhere.publish.output_dir)  # every link leads to a document, at every step
        report = publish_timeline(elsewhere, store, NOW)
        publishes += 1
    assert publishes == 8  # 24 days, three at a time
    assert _files(elsewhere.publish.output_dir) == whole


def _files(output: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(output)): p.read_bytes()
        for p in output.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_a_changed_filter_renders_every_day_again(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    store = open_store(config.store.target)
    try:
        sync_sources(store, config.sources, NOW - timedelta(days=60))
        fill(store, range(6))
        publish(config, store)
        output = config.publish.output_dir
        # Only the items numbered 3 stay: each day keeps one.
        strict = load_config(write_config(tmp_path, extra='include = ["^Story 3 "]\n'))
        publish(strict, store)
        for days_ago in range(1, 6):
            assert len(parse(output / day_file(days_ago)).findall(f"{ATOM}entry")) == 1
        # Nothing left on a day: the day goes, and its neighbours link across it.
        none = load_config(write_config(tmp_path, extra='exclude = ["of day 3"]\n'))
        publish(none, store)
        assert not (output / day_file(3)).exists()
        assert links(parse(output / day_file(4)))["next-archive"] == BASE + day_file(2)
    finally:
        store.close()


def test_a_source_renamed_by_its_feed_rewrites_only_the_days_it_is_on(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    fill(store, range(1, 6), per_day=3)  # each day: one item per source
    store_entries(store, "a", [entry("extra", "Only a", published=moment(8, 1))], NOW)
    store_entries(store, "b", [entry("extra-b", "Only b", published=moment(9, 1))], NOW)
    publish(config, store)
    output = config.publish.output_dir
    before = versions(output)
    succeeded(
        store,
        "b",
        Validators(None, None),
        NOW,
        "updated",
        feed=ParsedFeed("B, renamed", "https://b.example.org/", None, ()),
    )
    publish(config, store, NOW + timedelta(minutes=1))
    after = versions(output)
    assert {n for n in after if after[n] != before.get(n)} == {
        day_file(d) for d in (1, 2, 3, 4, 5, 9)
    }
    assert b"B, renamed" in (output / day_file(9)).read_bytes()


@pytest.mark.slow
def test_a_feed_reader_follows_the_archives_over_http(tmp_path: Path) -> None:
    """`aggregator serve` (the real CLI) serves the archives; a real HTTP client follows
    `prev-archive` from atom.xml to every item, and a conditional request for an archive
    document is answered 304 after a publish that did not change it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = f"http://127.0.0.1:{port}/"
    config = load_config(write_config(tmp_path, base=base))
    store = open_store(config.store.target)
    try:
        sync_sources(store, config.sources, NOW - timedelta(days=60))
        stored = fill(store)
        publish(config, store)
    finally:
        store.close()
    server, log = start_serve(tmp_path)
    try:
        with httpx.Client(timeout=5) as client:
            feed = _fetch_when_up(client, base + "atom.xml", server, log)
            ids = entry_ids(feed)
            archives = 0
            while (url := links(feed).get("prev-archive")) is not None:
                response = client.get(url)
                assert response.status_code == 200, url
                assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
                feed = etree.fromstring(response.content)
                assert feed.find(f"{FH}archive") is not None
                ids |= entry_ids(feed)
                archives += 1
            assert (ids, archives) == (stored, DAYS - 1)
            # A reader revalidating an archive document: unchanged, 304.
            oldest = client.get(url := base + day_file(DAYS - 1))
            config = load_config(tmp_path / "feeds.toml")
            store = open_store(config.store.target)
            try:
                publish(config, store, NOW + timedelta(hours=1))
            finally:
                store.close()
            again = client.get(url, headers={"If-None-Match": oldest.headers["etag"]})
            assert again.status_code == 304
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)


def _fetch_when_up(
    client: httpx.Client, url: str, server: subprocess.Popen[bytes], log: Path
) -> etree._Element:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text("utf-8", "replace")
        try:
            response = client.get(url)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        assert response.status_code == 200
        return etree.fromstring(response.content)
    raise AssertionError("serve did not answer within 20 s\n" + log.read_text("utf-8", "replace"))


def test_once_publishes_until_the_archives_are_done(
    setup: tuple[Config, StoreAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aggregator once` has no next publish coming: `publish_all` goes on until done, and
    reports the main files the first publish wrote."""
    config, store = setup
    fill(store, range(6), per_day=2)
    monkeypatch.setattr(archiving, "ONCE_ARCHIVE_BUDGET", 1)
    report = publish_all(config, store, NOW)
    assert not report.unfinished
    # Five days, one per publish, newest first: each but the first relinks the one above.
    assert report.archive_days == 5 + 4
    assert "atom.xml" in report.changed
    assert len(walk(config.publish.output_dir)[1]) == 5


def test_once_renders_archive_days_in_worker_processes_to_the_same_bytes(
    tmp_path: Path, setup: tuple[Config, StoreAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`publish_all` renders the days on worker processes (`RenderWorkers`): every file as
    one publish after another renders it here."""
    config, store = setup
    fill(store)
    publish(config, store)
    here = _files(config.publish.output_dir)
    elsewhere = unpublished_elsewhere(config, store, tmp_path / "workers")
    used: list[int] = []

    class Two(RenderWorkers):  # however few the items: the test's days are small
        def __init__(self) -> None:
            super().__init__(2, min_items=0)

        def close(self, *, kill: bool = False) -> None:
            used.extend(self._executor._processes if self._executor else ())
            super().close(kill=kill)

    monkeypatch.setattr(publish_module, "RenderWorkers", Two)
    report = publish_all(elsewhere, store, NOW)
    assert report.archive_days == DAYS - 1
    assert len(used) == 2  # the days went to two worker processes
    assert _files(elsewhere.publish.output_dir) == here
    walk(elsewhere.publish.output_dir)


def test_a_clock_a_minute_behind_does_not_take_yesterday_back(
    setup: tuple[Config, StoreAPI],
) -> None:
    """Two daemons share a store; one's clock is behind. After the other archived the day
    that just ended, a publish by the one behind (still before midnight there) keeps it."""
    config, store = setup
    fill(store, range(3))
    midnight = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), ZONE)
    publish(config, store, (midnight + timedelta(minutes=1)).astimezone(UTC))
    output = config.publish.output_dir
    assert (output / day_file(0)).exists()
    before = versions(output)
    publish(config, store, (midnight - timedelta(minutes=1)).astimezone(UTC))
    assert versions(output) == before


def test_a_lost_state_renders_everything_again_and_removes_days_gone_meanwhile(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    fill(store, range(6))
    publish(config, store)
    output = config.publish.output_dir
    store._db.execute("UPDATE publications SET state = 'not json'")  # type: ignore[attr-defined]
    store.prune(moment(4, 0), NOW)  # days 5 and 4 (but its first item) go meanwhile
    before = versions(output)
    publish(config, store, NOW + timedelta(minutes=1))
    assert not (output / day_file(5)).exists()
    after = versions(output)
    # Everything was rendered again: only what differs was written.
    assert {n for n in after if after[n] != before.get(n)} == {day_file(4)}
    assert len(walk(output)[1]) == 4


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_a_store_holding_a_year_one_entry_still_publishes(tmp_path: Path, zone: str) -> None:
    """Versions before the parser's earliest date stored .NET's placeholder (0001-01-01) as
    an entry's date; moved to a zone west of UTC (or a day's midnight east of it, to UTC) it
    overflowed, and every publish failed from then on. A store holding one such entry, as
    they wrote it, publishes: the other entry's archive day included."""
    path = tmp_path / "feeds.toml"
    path.write_text(
        f'[aggregator]\ntimezone = "{zone}"\n[publish]\noutput_dir = "output"\n'
        '[store]\npath = "store.sqlite3"\n[[feeds]]\nname = "y"\nurl = "https://y.test/f"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    store = open_store(config.store.target)
    now = datetime.now(UTC).replace(microsecond=0)
    normal = now - timedelta(days=2)
    try:
        sync_sources(store, config.sources, now - timedelta(days=3))
        ancient = entry("ancient", "Ancient", published=datetime(1, 1, 1, tzinfo=UTC))
        store_entries(store, "y", [ancient, entry("normal", "Normal", published=normal)], now)
        report = publish_all(config, store, now)
    finally:
        store.close()
    assert report.items == 1
    day = archive_name(normal.astimezone(ZoneInfo(zone)).date())
    assert "Normal" in (tmp_path / "output" / day).read_text(encoding="utf-8")

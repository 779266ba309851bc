"""Archives per publication: the root and every channel keep their own RFC 5005 archives
(in their own time zone) and day pages, within the one published snapshot.

Shows, over a real SQLite store and a real output/: following `prev-archive` from each
publication's atom.xml reaches every item it holds (300 items over 25 days, `max_items =
50`); a second publish renders and rewrites nothing; a settled publication is still
archived at its midnight; a day page is rewritten with its day's document and only then;
every archive file has its gzipped sibling, and loses it with its day; a removed channel's
archives leave output/ and the snapshot; archive files are never WebSub topics; the real
`once` over a multi-day feed writes day pages linked from index.html and to each other.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import feedparser
import pytest
from lxml import etree, html

from aggregator.archive import archive_name, day_page_name
from aggregator.config import load_config
from aggregator.hub.topics import changed_topics
from aggregator.poll import store_entries, sync_sources
from aggregator.publish import PublishReport, publish_timeline
from aggregator.settings import Config
from aggregator.snapshot import follow_published
from aggregator.store import StoreAPI, open_store
from aggregator.timeline import public_id
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.storedata import entry

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)  # 17:30 in Kolkata
ZONE = ZoneInfo("Asia/Kolkata")
TODAY = NOW.astimezone(ZONE).date()
DAYS, PER_DAY = 25, 12
SOURCES = ("a", "b", "c")
ATOM = "{http://www.w3.org/2005/Atom}"
FH = "{http://purl.org/syndication/history/1.0}"
BASE = "http://127.0.0.1:8080/"
# "all" holds every source (the acceptance, per channel); "solo" holds a alone, its days
# counted in UTC (5:30 behind Kolkata).
ALL = '[[channels]]\nname = "all"\ntitle = "Everything"\ntags = ["t"]\n'
SOLO = '[[channels]]\nname = "solo"\ntitle = "A alone"\nsources = ["a"]\ntimezone = "UTC"\n'
CHANNELS = ALL + SOLO


def write_config(directory: Path, channels: str = CHANNELS, extra: str = "") -> Path:
    path = directory / "feeds.toml"
    path.write_text(
        '[aggregator]\ntitle = "Archive test"\ntimezone = "Asia/Kolkata"\n'
        f'base_url = "{BASE}"\n[publish]\nmax_items = 50\nmax_age = "3650d"\n{extra}'
        '[store]\npath = "state/aggregator.db"\nkeep = "3650d"\n'
        + "".join(
            f'[[feeds]]\nname = "{s}"\nurl = "https://{s}.example.org/feed.xml"\ntags = ["t"]\n'
            for s in SOURCES
        )
        + channels,
        encoding="utf-8",
    )
    return path


def moment(days_ago: int, n: int) -> datetime:
    """The n-th item's place on the day `days_ago` days before today (Kolkata): from 01:00
    every 37 minutes, so the last ones of a day fall on the next day in no zone."""
    day = TODAY - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, 1, 0, tzinfo=ZONE) + timedelta(minutes=37 * n)


def fill(store: StoreAPI, days: Iterable[int] = range(DAYS)) -> dict[str, set[str]]:
    """PER_DAY items on each of `days` over the sources; their public ids by source."""
    ids: dict[str, set[str]] = {s: set() for s in SOURCES}
    for days_ago in days:
        for n in range(PER_DAY):
            source = SOURCES[n % len(SOURCES)]
            published = moment(days_ago, n).astimezone(UTC)
            item = entry(f"d{days_ago}-{n}", f"Story {n} of day {days_ago}", published=published)
            store_entries(store, source, [item], min(published + timedelta(minutes=5), NOW))
            ids[source].add(public_id(source, item.entry_id))
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


def publish(config: Config, store: StoreAPI, now: datetime = NOW) -> PublishReport:
    report = publish_timeline(config, store, now)
    while report.unfinished:
        report = publish_timeline(config, store, now)
    return report


def links(feed: etree._Element) -> dict[str, str]:
    return {str(link.get("rel")): str(link.get("href")) for link in feed.findall(f"{ATOM}link")}


def entry_ids(feed: etree._Element) -> set[str]:
    return {str(e.findtext(f"{ATOM}id")) for e in feed.findall(f"{ATOM}entry")}


def walk(output: Path, directory: str = "") -> tuple[set[str], list[str]]:
    """Every entry id reachable from a publication's atom.xml by `prev-archive`, and the
    archive documents visited (paths under output/, newest first), each checked on the way:
    `fh:archive`, its own URL, `current`, and `next-archive` back to the one before."""
    base = BASE + directory
    feed = etree.fromstring((output / directory / "atom.xml").read_bytes())
    ids, visited, newer = entry_ids(feed), [], base + "atom.xml"
    while (url := links(feed).get("prev-archive")) is not None:
        assert url.startswith(base), url
        name = url.removeprefix(BASE)
        feed = etree.fromstring((output / name).read_bytes())
        own = links(feed)
        assert feed.find(f"{FH}archive") is not None, name
        assert (own["self"], own["current"]) == (url, base + "atom.xml")
        assert own.get("next-archive", base + "atom.xml") == newer
        assert entry_ids(feed), f"{name}: an archive day without items"
        ids |= entry_ids(feed)
        visited.append(name)
        newer = url
    return ids, visited


def hrefs(doc: html.HtmlElement, path: str) -> list[str]:
    """The strings an XPath finds (attributes: links)."""
    found = doc.xpath(path)
    assert isinstance(found, list)
    return [str(h) for h in found]


def headlines(doc: html.HtmlElement) -> set[str]:
    """The item titles of a page."""
    return set(hrefs(doc, "//main//h3/a/text()"))


def versions(output: Path) -> dict[str, tuple[int, int]]:
    """Every file under output/ (archives, pages, gzipped siblings, records): (inode, mtime)."""
    return {
        p.relative_to(output).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in output.rglob("*")
        if p.is_file()
    }


def rewritten(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {n for n in after.keys() | before.keys() if before.get(n) != after.get(n)}


def day(days_ago: int) -> str:
    return archive_name(TODAY - timedelta(days=days_ago))


def page(days_ago: int) -> str:
    return day_page_name(TODAY - timedelta(days=days_ago))


# -- the acceptance, for the root and for a channel ----------------------------------------------


def test_prev_archive_reaches_every_item_of_the_root_and_of_each_channel(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    ids = fill(store)
    assert sum(len(s) for s in ids.values()) == DAYS * PER_DAY == 300
    publish(config, store)
    output = config.publish.output_dir
    everything = set().union(*ids.values())
    for directory in ("", "all/"):
        assert (
            len(entry_ids(etree.fromstring((output / directory / "atom.xml").read_bytes()))) == 50
        )
        reached, visited = walk(output, directory)
        assert reached == everything, directory
        assert visited == [directory + day(d) for d in range(1, DAYS)]  # today is not archived
    reached, visited = walk(output, "solo/")
    assert reached == ids["a"]  # the channel's own items, and nothing else
    assert len(visited) == DAYS  # its days are UTC's: today's first items were yesterday


def test_a_second_publish_renders_and_rewrites_nothing(setup: tuple[Config, StoreAPI]) -> None:
    config, store = setup
    fill(store)
    publish(config, store)
    before = versions(config.publish.output_dir)
    again = publish_timeline(config, store, NOW + timedelta(minutes=5))
    assert (again.built, again.rendered, again.archive_days, again.changed) == ((), (), 0, ())
    assert versions(config.publish.output_dir) == before


def test_a_channel_archives_its_days_in_its_own_time_zone(setup: tuple[Config, StoreAPI]) -> None:
    config, store = setup
    late = datetime(2025, 7, 10, 20, 0, tzinfo=UTC)  # 11 July, 01:30 in Kolkata
    store_entries(store, "a", [entry("late", "Late on the tenth", published=late)], NOW)
    publish(config, store)
    output = config.publish.output_dir
    assert (output / "archive/2025/07/11.atom").exists()
    assert not (output / "archive/2025/07/10.atom").exists()
    assert (output / "solo/archive/2025/07/10.atom").exists()
    assert not (output / "solo/archive/2025/07/11.atom").exists()
    assert (output / "all/archive/2025/07/11.html").exists()


# -- settled publications and the day that ends ----------------------------------------------------


def test_a_settled_publication_is_still_archived_at_its_midnight(
    setup: tuple[Config, StoreAPI],
) -> None:
    """Nothing is stored between 23:50 and 00:10 (Kolkata): the publish at 23:55 builds
    nothing, the one after midnight archives the day that ended, in every publication
    whose day it was (the UTC channel's day ends 5:30 later)."""
    config, store = setup
    fill(store, range(3))
    midnight = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), ZONE)
    publish(config, store, (midnight - timedelta(minutes=10)).astimezone(UTC))
    output = config.publish.output_dir
    assert not (output / day(0)).exists()
    quiet = publish_timeline(config, store, (midnight - timedelta(minutes=5)).astimezone(UTC))
    assert quiet.built == ()
    before = versions(output)
    after_midnight = publish(config, store, (midnight + timedelta(minutes=10)).astimezone(UTC))
    assert after_midnight.built == ("", "all/")
    for directory in ("", "all/"):
        assert links(etree.fromstring((output / directory / "atom.xml").read_bytes()))[
            "prev-archive"
        ] == BASE + directory + day(0)
        assert (output / directory / page(0)).exists()
    assert rewritten(before, versions(output)) >= {day(0), page(0), "all/" + day(0)}
    assert not any(n.startswith("solo/") for n in rewritten(before, versions(output)))


def test_archive_work_left_over_keeps_a_publication_from_settling(
    setup: tuple[Config, StoreAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One publish's archive work is bounded, for all its publications together: the next
    one, at the same input, goes on."""
    from aggregator import archiving  # noqa: PLC0415

    config, store = setup
    fill(store, range(8))
    monkeypatch.setattr(archiving, "ARCHIVE_BUDGET", 30)
    publishes = 1
    report = publish_timeline(config, store, NOW)
    while report.unfinished:
        # Days are read whole (13 entries' worth in the root) until 30 were read: three
        # days there and the one above them relinked; a publication reached with nothing
        # left examines one day (and relinks the one above).
        assert report.archive_days <= 4 + 2 + 2
        assert report.built  # never taken as settled while work is left
        report = publish_timeline(config, store, NOW)
        publishes += 1
    assert publishes > 2
    for directory in ("", "all/"):
        assert len(walk(config.publish.output_dir, directory)[1]) == 7


# -- day pages -----------------------------------------------------------------------------------


def test_a_day_page_is_rewritten_with_its_days_document_only(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    fill(store, range(6))
    publish(config, store)
    output = config.publish.output_dir
    before = versions(output)
    edited = entry("d3-4", "Story 4 of day 3, corrected", published=moment(3, 4).astimezone(UTC))
    store_entries(store, SOURCES[4 % 3], [edited], NOW)
    report = publish(config, store, NOW + timedelta(minutes=1))
    assert report.archive_days == 2  # the root's day, the "all" channel's day
    changed = {n for n in rewritten(before, versions(output)) if "/archive/" in f"/{n}"}
    assert changed == {
        f"{d}{n}{gz}" for d in ("", "all/") for n in (day(3), page(3)) for gz in ("", ".gz")
    }
    assert "Story 4 of day 3, corrected" in (output / page(3)).read_text(encoding="utf-8")


def test_day_pages_link_their_neighbours_and_the_main_page_links_the_newest(
    setup: tuple[Config, StoreAPI],
) -> None:
    config, store = setup
    fill(store, [1, 2, 4])
    publish(config, store)
    output = config.publish.output_dir
    for directory in ("", "all/"):
        main = html.fromstring((output / directory / "index.html").read_bytes())
        assert main.xpath("//p[@class='earlier']/a/@href") == [page(1)]
        two = html.fromstring((output / directory / page(2)).read_bytes())
        assert two.xpath("//a[@rel='prev']/@href") == ["../../../" + page(4)]
        assert two.xpath("//a[@rel='next']/@href") == ["../../../" + page(1)]
        assert two.xpath("//li[@class='main']/a/@href") == ["../../../index.html"]
        assert headlines(two) == {f"Story {n} of day 2" for n in range(PER_DAY)}
    channel = html.fromstring((output / "all" / page(2)).read_bytes())
    assert channel.xpath("//head/link[@type='application/atom+xml']/@href") == [
        BASE + "all/atom.xml"
    ]


# -- gzipped siblings, removal, followers, WebSub -------------------------------------------------


def test_every_archive_file_has_its_gzipped_sibling_and_loses_it_with_its_day(
    setup: tuple[Config, StoreAPI], tmp_path: Path
) -> None:
    config, store = setup
    fill(store, range(6))
    publish(config, store)
    output = config.publish.output_dir
    archived = [
        p for p in output.rglob("*") if p.suffix in (".atom", ".html") and "archive" in p.parts
    ]
    assert len(archived) == 2 * (5 + 5 + 6)  # root, "all", "solo" (UTC: one day more)
    for path in archived:
        sibling = path.with_name(path.name + ".gz")
        assert gzip.decompress(sibling.read_bytes()) == path.read_bytes()
        assert sibling.stat().st_mtime_ns == path.stat().st_mtime_ns
    follower = tmp_path / "follower"
    follow_published(follower, store)
    assert (follower / "all" / day(5)).with_name(day(5).rpartition("/")[2] + ".gz").exists()
    store.prune(moment(4, 0).astimezone(UTC), NOW)  # day 5 goes
    publish(config, store, NOW + timedelta(minutes=1))
    follow_published(follower, store)
    for root in (output, follower):
        for directory in ("", "all/"):
            gone = [directory + n + gz for n in (day(5), page(5)) for gz in ("", ".gz")]
            assert not any((root / name).exists() for name in gone), root


def test_a_removed_channel_takes_its_archives_along(
    setup: tuple[Config, StoreAPI], tmp_path: Path
) -> None:
    config, store = setup
    fill(store, range(4))
    publish(config, store)
    output = config.publish.output_dir
    follower = tmp_path / "follower"
    follow_published(follower, store)
    assert (follower / "all" / page(2)).exists()
    fewer = load_config(write_config(tmp_path, channels=SOLO))
    report = publish(fewer, store, NOW + timedelta(minutes=1))
    assert "all/" + day(2) in report.changed
    assert not (output / "all").exists()
    assert set(store.published_fingerprints()) == {"", "solo/"}
    assert store.published_digests("all/") == {}
    follow_published(follower, store)
    assert not (follower / "all").exists() and (follower / "solo" / "atom.xml").exists()


def test_archive_files_are_never_websub_topics(setup: tuple[Config, StoreAPI]) -> None:
    """Only a publication's feeds are topics: a publish that changes archive days alone
    announces nothing, and no archive file's name is a topic."""
    config, store = setup
    fill(store, range(20))
    publish(config, store)
    names = [p.relative_to(config.publish.output_dir).as_posix() for p in
             config.publish.output_dir.rglob("*") if p.is_file()]  # fmt: skip
    assert sorted(changed_topics(BASE, names)) == sorted(
        BASE + d + f for d in ("", "all/", "solo/") for f in ("atom.xml", "rss.xml", "feed.json")
    )
    # An edit of an item of 15 days ago (out of every atom.xml's 50): archives only.
    edited = entry("d15-0", "Story 0 of day 15, corrected", published=moment(15, 0).astimezone(UTC))
    store_entries(store, "a", [edited], NOW)
    report = publish(config, store, NOW + timedelta(minutes=1))
    assert report.archive_days == 3 and report.changed == ()
    assert changed_topics(BASE, report.changed) == ()


# -- the real CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_once_over_a_multi_day_feed_writes_linked_day_pages(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """`aggregator once` over a feed of four past days: a day page per day, the main page
    links the newest ("earlier days"), each day page its neighbours; every link leads to
    a file that exists, and each day page lists its own day's items."""
    now = datetime.now(UTC).replace(microsecond=0)
    zone = ZoneInfo("Asia/Kolkata")
    days = [(now.astimezone(zone) - timedelta(days=d)).date() for d in range(1, 5)]
    items = [
        Item(
            f"Item {n} of {d.isoformat()}",
            f"https://a.example/{d.isoformat()}/{n}",
            f"g-{d.isoformat()}-{n}",
            datetime(d.year, d.month, d.day, 9 + n, tzinfo=zone).astimezone(UTC),
        )
        for d in days
        for n in range(2)
    ]
    feed_server.add("/a.xml", rss2("A", "https://a.example/", items))
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[aggregator]\ntimezone = "Asia/Kolkata"\n[publish]\nmax_items = 3\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a.xml")}"\n',
        encoding="utf-8",
    )
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    output = tmp_path / "output"
    pages = {d: output / day_page_name(d) for d in days}
    assert all(p.exists() for p in pages.values())
    newest, *_, oldest = days
    index = html.fromstring((output / "index.html").read_bytes())
    (earlier,) = hrefs(index, "//p[@class='earlier']/a/@href")
    assert _target(output, "index.html", earlier) == pages[newest]
    for d, path in pages.items():
        doc = html.fromstring(path.read_bytes())
        name = path.relative_to(output).as_posix()
        prev, following = hrefs(doc, "//a[@rel='prev']/@href"), hrefs(doc, "//a[@rel='next']/@href")
        older = days.index(d) + 1
        assert [_target(output, name, h) for h in prev] == (
            [pages[days[older]]] if d != oldest else []
        )
        assert [_target(output, name, h) for h in following] == (
            [pages[days[days.index(d) - 1]]] if d != newest else []
        )
        assert _target(output, name, hrefs(doc, "//li[@class='main']/a/@href")[0]) == (
            output / "index.html"
        )
        assert headlines(doc) == {f"Item {n} of {d.isoformat()}" for n in range(2)}
    # The archive documents hold what the pages show.
    archived = feedparser.parse(io.BytesIO((output / archive_name(oldest)).read_bytes()))
    assert {e.title for e in archived.entries} == {
        f"Item {n} of {oldest.isoformat()}" for n in range(2)
    }


def _target(output: Path, page_name: str, href: str) -> Path:
    """The file a relative link on `page_name` leads to."""
    resolved = urljoin(f"http://x/{page_name}", href)
    return output / urlsplit(resolved).path.lstrip("/")


def test_the_operators_day_template_renders_every_day_page_and_no_archive_document(
    setup: tuple[Config, StoreAPI], tmp_path: Path
) -> None:
    """A theme is the look of the day pages too: a new `day.html.j2` rewrites each
    publication's day pages, never its archive documents (their bytes are the same)."""
    config, store = setup
    fill(store, range(4))
    publish(config, store)
    output = config.publish.output_dir
    before = versions(output)
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "day.html.j2").write_text(
        '<!DOCTYPE html>\n<p class="mine">{{ archive.day.date }} · {{ channel.name if channel'
        ' else "root" }}{% for d in days %} · {{ d.items | length }}{% endfor %}</p>\n',
        encoding="utf-8",
    )
    themed = load_config(write_config(tmp_path, extra='templates = "theme"\n'))
    report = publish(themed, store, NOW + timedelta(minutes=1))
    assert report.archive_days == 3 + 3 + 4
    changed = rewritten(before, versions(output))
    assert not any(n.endswith((".atom", ".atom.gz")) for n in changed)
    assert {n for n in changed if n.endswith(".html")} == {
        f"{d}{page(n)}" for d in ("", "all/") for n in (1, 2, 3)
    } | {f"solo/{day_page_name(d)}" for d in _solo_days(output)}
    assert (output / "all" / page(2)).read_text(encoding="utf-8") == (
        f'<!DOCTYPE html>\n<p class="mine">{TODAY - timedelta(days=2)} · all · {PER_DAY}</p>\n'
    )


def _solo_days(output: Path) -> list[date]:
    """The archive days of the UTC channel, from its files."""
    return [
        date.fromisoformat(
            p.relative_to(output / "solo" / "archive").as_posix()[:10].replace("/", "-")
        )
        for p in (output / "solo" / "archive").rglob("*.atom")
    ]


def test_an_archive_file_removed_by_hand_comes_back(
    setup: tuple[Config, StoreAPI], tmp_path: Path
) -> None:
    """A settled publication checks its main files only (its archives are thousands of
    files): a day page removed by hand comes back when the publication is next built, and
    at once in a daemon copying the snapshot."""
    config, store = setup
    fill(store, range(4))
    publish(config, store)
    output, follower = config.publish.output_dir, tmp_path / "follower"
    follow_published(follower, store)
    kept = (output / page(2)).read_bytes()
    (output / page(2)).unlink()
    (follower / page(2)).unlink()
    follow_published(follower, store)
    assert (follower / page(2)).read_bytes() == kept
    assert publish_timeline(config, store, NOW + timedelta(minutes=1)).built == ()
    store_entries(store, "b", [entry("new", "New today", published=NOW)], NOW)
    report = publish_timeline(config, store, NOW + timedelta(minutes=2))
    assert "" in report.built and report.archive_days == 0
    assert (output / page(2)).read_bytes() == kept

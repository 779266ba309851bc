"""Publishing channels: each holds exactly its sources' items, beside a root that holds all;
an unchanged channel is neither read, rendered nor rewritten; a removed one leaves output/
and the snapshot; daemons sharing a store copy (and remove) channels like the root.

Real SQLite files (and PostgreSQL where a test says so), real output/ directories, the real
CLI where the behaviour is the CLI's.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest

from aggregator.archiving import days_renderer, update_archives
from aggregator.config import load_config
from aggregator.poll import store_entries, sync_sources
from aggregator.publications import publications_of
from aggregator.publish import (
    archive_target,
    framing,
    publication_timeline,
    publish_timeline,
    source_credits,
)
from aggregator.render import OUTPUT_FILES, render_archive_day, render_outputs
from aggregator.settings import Config
from aggregator.shared_reads import SharedReads
from aggregator.snapshot import digest as digest_of
from aggregator.snapshot import follow_published
from aggregator.store import StoreAPI, open_store, sqlite_schema
from aggregator.store.records import PublicationHead, PublishedChange, PublishedFile
from aggregator.store.sqlite import SqliteStore
from aggregator.types import ParsedFeed, Validators
from tests.conftest import ROOT, run_cli
from tests.storedata import NOW, entry, succeeded

HEAD = """\
[aggregator]
title = "Digest"
base_url = "https://digest.example.org/"
[publish]
max_age = "30d"
"""
SOURCES = """\
[[feeds]]
name = "a"
url = "https://a.example.org/feed.xml"
tags = ["x"]
[[feeds]]
name = "b"
url = "https://b.example.org/feed.xml"
tags = ["y"]
[[feeds]]
name = "c"
url = "https://c.example.org/feed.xml"
tags = ["y"]
"""
CHANNEL_X = '[[channels]]\nname = "ex"\ntags = ["x"]\n'
CHANNEL_Y = '[[channels]]\nname = "why"\ntags = ["y"]\n'


def _load(path: Path, text: str, env: dict[str, str]) -> Config:
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=env)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment naming the store: none (the SQLite file) or a PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    return {"AGGREGATOR_STORE_URL": request.getfixturevalue("pg_url")}


@pytest.fixture
def digest(tmp_path: Path, backend: dict[str, str]) -> Iterator[tuple[StoreAPI, Config]]:
    """Sources a (tag x), b and c (tag y), channels "ex" and "why"; two items each."""
    config = _load(tmp_path / "feeds.toml", HEAD + SOURCES + CHANNEL_X + CHANNEL_Y, backend)
    store = open_store(config.store.target)
    sync_sources(store, config.sources, NOW)
    for name in ("a", "b", "c"):
        store_entries(
            store,
            name,
            [
                entry(f"{name}-{n}", f"{name} story {n}", published=NOW - timedelta(hours=n))
                for n in (1, 2)
            ],
            NOW,
        )
    try:
        yield store, config
    finally:
        store.close()


def _versions(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory`: (inode, mtime), by path."""
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _atom_ids(path: Path) -> set[str]:
    return {e.id for e in feedparser.parse(io.BytesIO(path.read_bytes())).entries}


def _counted_reads(monkeypatch: pytest.MonkeyPatch, store: StoreAPI) -> list[str]:
    """Every read of entries the store answers, by method name, from now on."""
    calls: list[str] = []
    for name in ("recent_entries", "earlier_copies"):
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return calls


# -- what each channel holds -------------------------------------------------------------------


def test_two_channels_by_tag_over_the_offline_example(tmp_path: Path) -> None:
    """The shipped example's channels: "hindi" (tag hindi) and "english" (tag english)."""
    example = tmp_path / "offline"
    shutil.copytree(
        ROOT / "examples" / "offline", example, ignore=shutil.ignore_patterns("output", "state")
    )
    result = run_cli("once", "--config", str(example / "feeds.toml"))
    assert result.returncode == 0, result.stderr
    output = example / "output"
    by_source: dict[str, set[str]] = {}
    for e in feedparser.parse(io.BytesIO((output / "atom.xml").read_bytes())).entries:
        by_source.setdefault(e.source.title, set()).add(e.id)
    assert {k: len(v) for k, v in by_source.items()} == {
        "समाचार डाइजेस्ट": 8,
        "World Desk": 6,
        "Science Notes": 4,
    }
    hindi, english = (
        _atom_ids(output / "hindi" / "atom.xml"),
        _atom_ids(output / "english" / "atom.xml"),
    )
    assert hindi == by_source["समाचार डाइजेस्ट"]
    assert english == by_source["World Desk"] | by_source["Science Notes"]
    for channel, ids in (("hindi", hindi), ("english", english)):
        directory = output / channel
        # The outputs, each with its gzipped sibling, and the channel's archive days.
        assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == sorted(
            [*OUTPUT_FILES, *(f"{name}.gz" for name in OUTPUT_FILES), "archive"]
        )
        rss = feedparser.parse(io.BytesIO((directory / "rss.xml").read_bytes()))
        assert {e.id for e in rss.entries} == ids
        assert {i["id"] for i in json.loads((directory / "feed.json").read_bytes())["items"]} == ids
        atom = feedparser.parse(io.BytesIO((directory / "atom.xml").read_bytes())).feed
        assert atom.id == f"http://127.0.0.1:8080/{channel}/atom.xml"  # its own id and self link
        assert (
            f'href="http://127.0.0.1:8080/{channel}/atom.xml"'.encode()
            in (directory / "index.html").read_bytes()
        )
    english_atom = (output / "english" / "atom.xml").read_text(encoding="utf-8")
    assert "<title>English desk</title>" in english_atom and 'xml:lang="en"' in english_atom
    page = (output / "index.html").read_text(encoding="utf-8")
    assert '<a href="http://127.0.0.1:8080/hindi/"' in page
    assert '<a href="http://127.0.0.1:8080/english/"' in page
    # The second `once` changes nothing: every file keeps its inode and mtime.
    before = _versions(output)
    again = run_cli("once", "--config", str(example / "feeds.toml"))
    assert again.returncode == 0, again.stderr
    assert "(unchanged)" in again.stdout
    assert _versions(output) == before


def test_a_channels_filters_apply_on_top_of_its_selection(tmp_path: Path) -> None:
    config = _load(
        tmp_path / "feeds.toml",
        HEAD + SOURCES + '[[channels]]\nname = "ones"\ntags = ["y"]\ninclude = ["story 1"]\n',
        {},
    )
    store = open_store(config.store.target)
    try:
        sync_sources(store, config.sources, NOW)
        for name in ("a", "b", "c"):
            store_entries(
                store,
                name,
                [entry(f"{name}-{n}", f"{name} story {n}", published=NOW) for n in (1, 2)],
                NOW,
            )
        publish_timeline(config, store, NOW)
    finally:
        store.close()
    titles = {
        e.title
        for e in feedparser.parse(
            io.BytesIO((config.publish.output_dir / "ones" / "atom.xml").read_bytes())
        ).entries
    }
    assert titles == {"b story 1", "c story 1"}
    assert len(_atom_ids(config.publish.output_dir / "atom.xml")) == 6  # the root: unfiltered


# -- an unchanged channel costs nothing ----------------------------------------------------------


def test_a_change_in_one_channel_rewrites_that_channel_and_the_root_only(
    digest: tuple[StoreAPI, Config],
) -> None:
    store, config = digest
    output = config.publish.output_dir
    first = publish_timeline(config, store, NOW)
    assert first.rendered == ("", "ex/", "why/")
    assert len(_atom_ids(output / "ex" / "atom.xml")) == 2
    assert len(_atom_ids(output / "why" / "atom.xml")) == 4
    ex_before, why_before = _versions(output / "ex"), _versions(output / "why")

    store_entries(store, "b", [entry("b-new", "b news", published=NOW)], NOW)
    report = publish_timeline(config, store, NOW + timedelta(minutes=1))
    assert report.built == report.rendered == ("", "why/")
    assert _versions(output / "ex") == ex_before  # not rewritten: same inodes, same mtimes
    assert _versions(output / "why")["atom.xml"] != why_before["atom.xml"]
    assert "why/atom.xml" in report.changed and "atom.xml" in report.changed
    assert not any(name.startswith("ex/") for name in report.changed)
    assert len(_atom_ids(output / "why" / "atom.xml")) == 5


def test_an_unchanged_publish_reads_builds_and_renders_nothing(
    digest: tuple[StoreAPI, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, config = digest
    publish_timeline(config, store, NOW)
    before = _versions(config.publish.output_dir)
    reads = _counted_reads(monkeypatch, store)
    report = publish_timeline(config, store, NOW + timedelta(minutes=5))
    assert (report.built, report.rendered, report.changed) == ((), (), ())
    assert reads == []
    assert report.items == 6  # as the record of the last publish says
    assert _versions(config.publish.output_dir) == before


def test_the_settled_check_reads_only_the_records_head(
    digest: tuple[StoreAPI, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publication's whole record lists every archive file it wrote; the check that tells
    a settled publication, at every publish, reads only its head (its main files): the
    archive files' list is parsed only when a publication is built or copied."""
    store, config = digest
    publish_timeline(config, store, NOW)
    for publication in publications_of(config):
        directory = config.publish.output_dir / publication.directory
        head = json.loads((directory / ".published-head.json").read_bytes())
        whole = json.loads((directory / ".published.json").read_bytes())
        assert set(head["files"]) == {n for n in whole["files"] if "/" not in n}
        assert {k: v for k, v in head.items() if k != "files"} == {
            k: v for k, v in whole.items() if k != "files"
        }
    read: list[str] = []
    original = Path.read_bytes

    def reading(path: Path) -> bytes:
        read.append(path.name)
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", reading)
    report = publish_timeline(config, store, NOW + timedelta(minutes=5))
    assert report.built == ()
    assert ".published.json" not in read and ".published-head.json" in read


def _window_moves(store: StoreAPI, config: Config) -> None:
    """Nothing changes but the time: the window's edge passes the 2-hour-old items."""


def _credit_changes(store: StoreAPI, config: Config) -> None:
    """a's feed now calls itself something else (what the root and "ex" credit it as)."""
    feed = ParsedFeed("A renamed", "https://a.example.org/", None, ())
    succeeded(store, "a", Validators(), NOW, "updated", feed=feed)


def _retention_prunes(store: StoreAPI, config: Config) -> None:
    """Retention deletes the 2-hour-old entries (of every source)."""
    store.prune(NOW - timedelta(minutes=90), NOW)


# The first publish at LATE - 3 h: its window (30 days) holds every item; the second at LATE -
# 90 min, when the window's edge has passed the 2-hour-old items (within `MAX_EDGE_GAP`).
LATE = NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("change", "second", "built"),
    [
        pytest.param(_window_moves, LATE - timedelta(minutes=90), ("", "ex/", "why/"), id="window"),
        pytest.param(_window_moves, LATE - timedelta(minutes=150), (), id="window-passes-none"),
        pytest.param(_credit_changes, LATE - timedelta(hours=3), ("", "ex/"), id="credit"),
        pytest.param(
            _retention_prunes, LATE - timedelta(hours=3), ("", "ex/", "why/"), id="retention"
        ),
    ],
)
def test_a_settled_channel_is_built_again_when_its_input_changes(
    digest: tuple[StoreAPI, Config], change: Any, second: Any, built: tuple[str, ...]
) -> None:
    """What `settled` must not miss: the window's edge passing items, a source's credit,
    retention. What it publishes then is what rendering from scratch gives."""
    store, config = digest
    publish_timeline(config, store, LATE - timedelta(hours=3))
    change(store, config)
    report = publish_timeline(config, store, second)
    assert report.built == built
    credits = source_credits(config, store)
    for publication in publications_of(config):
        timeline = publication_timeline(publication, SharedReads(store), second, credits)
        mine = {name: credits[name] for name in publication.sources}
        archives = update_archives(  # built from nothing
            store,
            archive_target(publication),
            mine,
            None,
            second,
            render=days_renderer(render_archive_day),
        )
        files = render_outputs(
            publication.site, timeline, mine, framing(publication, archives.newest)
        )
        for name, data in files.items():
            published = config.publish.output_dir / publication.directory / name
            assert published.read_bytes() == data, publication.path(name)


def test_a_channel_settled_earlier_does_not_make_the_others_look_changed(
    digest: tuple[StoreAPI, Config],
) -> None:
    """Publications built at different publishes keep different window edges: each is
    checked against the entries placed since its own edge. b's item leaving the window
    rebuilt the root and "why" once; "ex" (a only) stayed settled with its older edge, and
    must not make the root, which holds b, rebuild for that same item again."""
    store, config = digest
    store_entries(store, "b", [entry("b-old", "b older", published=NOW - timedelta(hours=3))], NOW)
    start = LATE - timedelta(hours=3)
    publish_timeline(config, store, start - timedelta(minutes=5))
    passing = publish_timeline(config, store, start + timedelta(minutes=5))
    assert passing.built == ("", "why/")  # b's 3-hour-old item left their window
    later = publish_timeline(config, store, start + timedelta(minutes=15))
    assert later.built == ()


def test_a_file_removed_by_hand_is_put_back(digest: tuple[StoreAPI, Config]) -> None:
    store, config = digest
    publish_timeline(config, store, NOW)
    lost = config.publish.output_dir / "ex" / "rss.xml"
    kept = lost.read_bytes()
    lost.unlink()
    report = publish_timeline(config, store, NOW)
    assert lost.read_bytes() == kept
    assert report.rendered == ()  # copied from the stored snapshot, not rendered again
    assert report.changed == ("ex/rss.xml",)


def test_another_daemons_snapshot_is_not_taken_for_ours(digest: tuple[StoreAPI, Config]) -> None:
    store, config = digest
    publish_timeline(config, store, NOW)
    # Another daemon (another version, say) stored other files under its own fingerprint.
    foreign = PublishedFile("ex/atom.xml", digest_of(b"<feed/>"), b"<feed/>", "ex/")
    head = PublicationHead("elsewhere", '{"main": "elsewhere"}')
    store.save_published(PublishedChange((foreign,), heads={"ex/": head}))
    report = publish_timeline(config, store, NOW)
    assert report.built == ("ex/",) and report.rendered == ("ex/",)
    assert store.published_fingerprints()["ex/"] != "elsewhere"


# -- removing a channel ------------------------------------------------------------------------


def test_a_removed_channel_leaves_output_and_the_snapshot(
    digest: tuple[StoreAPI, Config], tmp_path: Path, backend: dict[str, str]
) -> None:
    store, config = digest
    output = config.publish.output_dir
    publish_timeline(config, store, NOW)
    (output / "why" / "notes.txt").write_text("the operator's own", encoding="utf-8")
    config = _load(tmp_path / "feeds.toml", HEAD + SOURCES, backend)
    report = publish_timeline(config, store, NOW)
    assert not (output / "ex").exists()
    assert sorted(p.name for p in (output / "why").iterdir()) == ["notes.txt"]  # not ours
    assert set(store.published_fingerprints()) == {""}
    assert {f"ex/{name}" for name in OUTPUT_FILES} <= set(report.changed)
    page = (output / "index.html").read_text(encoding="utf-8")
    assert "/ex/" not in page and 'class="channels"' not in page


def test_followers_copy_each_channel_and_remove_a_removed_one(
    digest: tuple[StoreAPI, Config], tmp_path: Path, backend: dict[str, str]
) -> None:
    store, config = digest
    follower = tmp_path / "follower"
    publish_timeline(config, store, NOW)
    written = follow_published(follower, store)
    assert {name for name, changed in written.items() if changed} == {
        f"{d}{n}" for d in ("", "ex/", "why/") for n in OUTPUT_FILES
    }
    for name in ("atom.xml", "ex/atom.xml", "why/index.html"):
        assert (follower / name).read_bytes() == (config.publish.output_dir / name).read_bytes()
    assert follow_published(follower, store) == {}
    # One channel changes: only its files (and the root's) are copied again.
    store_entries(store, "a", [entry("a-new", "a news", published=NOW)], NOW)
    publish_timeline(config, store, NOW)
    copied = {name for name, changed in follow_published(follower, store).items() if changed}
    assert "ex/atom.xml" in copied and not any(n.startswith("why/") for n in copied)
    # The channel is removed where it was published: every follower removes it too.
    config = _load(tmp_path / "feeds.toml", HEAD + SOURCES + CHANNEL_Y, backend)
    publish_timeline(config, store, NOW)
    removed = follow_published(follower, store)
    assert {f"ex/{n}" for n in OUTPUT_FILES} <= set(removed)
    assert not (follower / "ex").exists() and (follower / "why" / "atom.xml").exists()


# -- the store ---------------------------------------------------------------------------------


def test_an_older_stores_snapshot_is_published_again(tmp_path: Path) -> None:
    """A store from before archives held one fingerprint per publication on every file: its
    snapshot is emptied by the migration, and the next publish stores it file by file."""
    path = tmp_path / "state" / "aggregator.sqlite3"
    path.parent.mkdir()
    before = next(
        i for i, m in enumerate(sqlite_schema.MIGRATIONS) if "RENAME COLUMN fingerprint" in m
    )
    old = SqliteStore(sqlite3.connect(path, isolation_level=None))
    try:
        sqlite_schema.migrate(old._db, old._transaction, None, sqlite_schema.MIGRATIONS[:before])
        old._db.execute(
            "INSERT INTO published (name, fingerprint, data) VALUES ('atom.xml', 'f', x'00')"
        )
    finally:
        old._db.close()
    config = _load(tmp_path / "feeds.toml", HEAD + SOURCES, {})
    store = open_store(path)
    try:
        assert store.published_fingerprints() == {}
        assert store.load_published(["atom.xml"]) == []
        sync_sources(store, config.sources, NOW)
        publish_timeline(config, store, NOW)
        (atom,) = store.load_published(["atom.xml"])
        assert atom.data == (config.publish.output_dir / "atom.xml").read_bytes()
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_schema.MIGRATIONS)

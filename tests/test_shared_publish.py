"""Publishing with a shared store: one publisher renders, every output/ gets the same bytes.

Two "daemons" here are two configurations differing only in their output directory, on one
store (SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.poll import store_entries, sync_sources
from aggregator.publish import publish_timeline
from aggregator.render import OUTPUT_FILES
from aggregator.settings import Config
from aggregator.snapshot import follow_published
from aggregator.store import StoreAPI, open_store
from tests.storedata import NOW, entry

FEEDS = '[publish]\nmax_age = "3650d"\n[[feeds]]\nname = "a"\nurl = "https://a.example.org/"\n'


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[StoreAPI, Config]]:
    config_path = tmp_path / "feeds.toml"
    config_path.write_text(FEEDS, encoding="utf-8")
    env = (
        {}
        if request.param == "sqlite"
        else {"AGGREGATOR_STORE_URL": request.getfixturevalue("pg_url")}
    )
    config = load_config(config_path, environ=env)
    store = open_store(config.store.target)
    sync_sources(store, config.sources, NOW)
    try:
        yield store, config
    finally:
        store.close()


def _elsewhere(config: Config, output_dir: Path) -> Config:
    return dataclasses.replace(
        config, publish=dataclasses.replace(config.publish, output_dir=output_dir)
    )


def _files(output_dir: Path) -> dict[str, bytes]:
    return {name: (output_dir / name).read_bytes() for name in OUTPUT_FILES}


def test_every_daemon_serves_the_snapshot_the_last_publisher_stored(
    shared: tuple[StoreAPI, Config], tmp_path: Path
) -> None:
    store, config = shared
    one = _elsewhere(config, tmp_path / "one")
    two = _elsewhere(config, tmp_path / "two")
    store_entries(store, "a", [entry("1", published=NOW)], NOW)
    first = publish_timeline(one, store, NOW)
    assert first.changed == OUTPUT_FILES
    # The second daemon copies it; publishing the same input there renders nothing.
    assert follow_published(two.publish.output_dir, store) == dict.fromkeys(OUTPUT_FILES, True)
    assert _files(two.publish.output_dir) == _files(one.publish.output_dir)
    assert publish_timeline(two, store, NOW).changed == ()
    assert follow_published(two.publish.output_dir, store) == {}
    # New data published by the second daemon reaches the first one the same way.
    store_entries(store, "a", [entry("2", published=NOW)], NOW)
    assert "atom.xml" in publish_timeline(two, store, NOW).changed
    written = follow_published(one.publish.output_dir, store)
    assert written["atom.xml"] and not written["sources.opml"]  # unchanged files stay as they are
    assert _files(one.publish.output_dir) == _files(two.publish.output_dir)
    assert b"example.org/2" in _files(one.publish.output_dir)["atom.xml"]


def _tree(output_dir: Path) -> dict[str, bytes]:
    """Every published file under `output_dir`, archives and gzipped siblings included (not
    the hidden record)."""
    return {
        p.relative_to(output_dir).as_posix(): p.read_bytes()
        for p in output_dir.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _versions(output_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(output_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in output_dir.rglob("*.atom")
    }


def test_every_daemon_serves_the_same_archive_bytes(
    shared: tuple[StoreAPI, Config], tmp_path: Path
) -> None:
    """Archives are thousands of files: the snapshot carries them file by file, a follower
    copies only those whose digest changed and removes those gone."""
    store, config = shared
    one = _elsewhere(config, tmp_path / "one")
    two = _elsewhere(config, tmp_path / "two")
    days = [NOW - timedelta(days=d, hours=1) for d in range(1, 8)]
    store_entries(store, "a", [entry(f"{n}", published=day) for n, day in enumerate(days)], NOW)
    assert publish_timeline(one, store, NOW).archive_days == 7
    follow_published(two.publish.output_dir, store)
    # Each day: its Atom document and its page; every file: its gzipped sibling.
    assert len(_tree(two.publish.output_dir)) == 2 * (len(OUTPUT_FILES) + 2 * 7)
    assert _tree(two.publish.output_dir) == _tree(one.publish.output_dir)
    # The second daemon publishes an edit of one day's item (in atom.xml too): the first
    # copies that day's archive, and no other.
    before = _versions(one.publish.output_dir)
    store_entries(store, "a", [entry("3", "Edited", published=days[3])], NOW)
    assert publish_timeline(two, store, NOW).archive_days == 1
    written = follow_published(one.publish.output_dir, store)
    copied = [n for n, w in written.items() if w]
    assert [n for n in copied if n.startswith("archive/")] == [
        "archive/2025/07/09.atom",
        "archive/2025/07/09.html",
    ]
    assert "sources.opml" not in copied
    after = _versions(one.publish.output_dir)
    assert {n for n in after if after[n] != before[n]} == {"archive/2025/07/09.atom"}
    assert _tree(one.publish.output_dir) == _tree(two.publish.output_dir)
    # Retention takes the two oldest days: gone from every output/.
    store.prune(days[5] + timedelta(hours=1), NOW)
    publish_timeline(one, store, NOW)
    follow_published(two.publish.output_dir, store)
    assert len(_tree(two.publish.output_dir)) == 2 * (len(OUTPUT_FILES) + 2 * 5)
    assert _tree(two.publish.output_dir) == _tree(one.publish.output_dir)
    assert not (two.publish.output_dir / "archive/2025/07/06.atom").exists()
    assert not (two.publish.output_dir / "archive/2025/07/05").exists()  # no empty folder left

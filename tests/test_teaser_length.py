"""`[publish] teaser_length` applies at the next publish: teasers are cut when rendering.

The store keeps each entry's text uncut (as far as the longest allowed teaser reaches), so a
changed length needs no fetch and no parse; stores written when the teaser was cut at parse
time have it recomputed from the stored summary when they are migrated.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import regex
from lxml import etree, html

from aggregator import timeline
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.filters import FilterPattern, Filters
from aggregator.poll import store_entries, sync_sources
from aggregator.publish import publish_timeline
from aggregator.store import open_store, postgres_schema, sqlite_schema
from aggregator.text import ELLIPSIS, TEASER_LENGTH_LIMIT, make_teaser
from aggregator.timeline import Selection, build_timeline
from aggregator.types import SourceCredit, StoredEntry
from tests.conftest import run_cli
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.storedata import NOW, entry, undo_migrations

ATOM = "{http://www.w3.org/2005/Atom}"
# 70 words, 400-odd characters: longer than the default teaser of 200.
STORY = " ".join(f"word{n}" for n in range(70))
SITE = "https://site.example.org/"


def _clusters(text: str) -> int:
    return len(regex.findall(r"\X", text))


def _config(root: Path, feed_url: str, teaser_length: int) -> Path:
    config = root / "feeds.toml"
    config.write_text(
        "[publish]\n"
        'max_age = "100000d"\n'
        f"teaser_length = {teaser_length}\n"
        "[[feeds]]\n"
        'name = "a"\n'
        f'url = "{feed_url}"\n',
        encoding="utf-8",
    )
    return config


def _page_teasers(output: Path) -> list[str]:
    page = html.fromstring((output / "index.html").read_bytes())
    return [p.text or "" for p in page.iterfind(".//p[@class='teaser']")]


def _titles_of_untitled(items: list[etree._Element], title: str) -> list[str]:
    """The titles made from the teaser: those of items the feed gave no title."""
    return [t for item in items if (t := item.findtext(title) or "").startswith("word")]


def _outputs(output: Path) -> dict[str, list[str]]:
    """Where each output shows a teaser: the page's briefs, JSON Feed's summaries, and the
    RSS and Atom title of the untitled item (its teaser stands in for it)."""
    feed = json.loads((output / "feed.json").read_bytes())
    rss = etree.fromstring((output / "rss.xml").read_bytes())
    atom = etree.fromstring((output / "atom.xml").read_bytes())
    return {
        "index.html": _page_teasers(output),
        "feed.json": [item["summary"] for item in feed["items"]],
        "rss.xml": _titles_of_untitled(rss.findall("channel/item"), "title"),
        "atom.xml": _titles_of_untitled(atom.findall(f"{ATOM}entry"), f"{ATOM}title"),
    }


def test_a_changed_teaser_length_rewrites_every_output_at_the_next_once(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """The acceptance test of issue 13: 200 → 60, `once` again, nothing fetched anew."""
    date = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
    items = [
        Item("A titled story", f"{SITE}a", "a", date, summary_html=f"<p>{STORY}</p>"),
        Item("", f"{SITE}b", "b", date - timedelta(hours=1), summary_html=f"<p>{STORY}</p>"),
    ]
    feed_server.add("/feed.xml", rss2("Feed", SITE, items))
    config = _config(tmp_path, feed_server.url("/feed.xml"), 200)
    first = run_cli("once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    before = _outputs(tmp_path / "output")
    long = make_teaser(STORY, 200)
    assert before["index.html"] == [long, long]
    assert before["feed.json"] == [long, long]
    assert before["rss.xml"] == before["atom.xml"] == [make_teaser(long, 80)]

    _config(tmp_path, feed_server.url("/feed.xml"), 60)
    feed_server.clear()
    second = run_cli("once", "--config", str(config))
    assert second.returncode == 0, second.stderr
    # Nothing fetched again (a conditional request answered 304), so nothing parsed again.
    assert [r.status for r in feed_server.seen()] == [304]
    short = make_teaser(STORY, 60)
    assert short.endswith(ELLIPSIS) and _clusters(short) <= 60
    after = _outputs(tmp_path / "output")
    assert after == {name: [short] * len(teasers) for name, teasers in before.items()}


def _open_sqlite(tmp_path: Path) -> tuple[str, Callable[[int], None]]:
    path = tmp_path / "state" / "aggregator.sqlite3"

    def set_version(version: int) -> None:
        with closing(sqlite3.connect(path)) as db:
            for statement in undo_migrations(sqlite_schema.MIGRATIONS[version:]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")

    return str(path), set_version


@pytest.mark.parametrize(
    ("backend", "before_teaser_text"), [("sqlite", 8), ("postgresql", 2)], ids=["sqlite", "pg"]
)
def test_migrating_a_store_of_cut_teasers_publishes_them_at_the_configured_length(
    backend: str, before_teaser_text: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store written while teasers were cut at parse (here to 40) is migrated: the next
    publish, configured for 200, shows teasers of 200, cut from the stored summary."""
    if backend == "sqlite":
        where, set_version = _open_sqlite(tmp_path)
    else:
        where = request.getfixturevalue("pg_url")

        def set_version(version: int) -> None:
            with psycopg.connect(where, autocommit=True) as conn:
                for statement in undo_migrations(postgres_schema.MIGRATIONS[version:]):
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_migrations WHERE version > %s", (version,))

    config_file = _config(tmp_path, "https://a.example.org/feed.xml", 200)
    config = load_config(config_file)
    summary = f"<p>{STORY}</p><p>More <b>text</b>.</p>"
    old = replace(
        entry("1", "A story", published=NOW - timedelta(hours=1), summary_html=summary),
        teaser=make_teaser(STORY, 40),  # as a parse with teaser_length = 40 stored it
    )
    store = open_store(where)
    try:
        sync_sources(store, config.sources, NOW)
        store_entries(store, "a", [old], NOW)
    finally:
        store.close()
    set_version(before_teaser_text)

    store = open_store(where)  # migrates
    try:
        publish_timeline(config, store, NOW)
    finally:
        store.close()
    teasers = _page_teasers(config.publish.output_dir)
    assert teasers == [make_teaser(f"{STORY} More text.", 200)]
    assert _clusters(teasers[0]) > 40


@pytest.mark.parametrize("length", [0, TEASER_LENGTH_LIMIT + 1])
def test_teaser_length_is_bounded_by_what_the_store_keeps(tmp_path: Path, length: int) -> None:
    with pytest.raises(ConfigError, match="teaser_length"):
        load_config(_config(tmp_path, "https://a.example.org/feed.xml", length))
    assert load_config(_config(tmp_path, "https://a.example.org/feed.xml", TEASER_LENGTH_LIMIT))


def _stored(entry_id: str, text: str) -> StoredEntry:
    return StoredEntry(
        source="a",
        entry_id=entry_id,
        title=f"Story {entry_id}",
        link=None,
        summary_html=f"<p>{text}</p>",
        teaser=text,
        author=None,
        categories=(),
        published=None,
        updated=None,
        first_seen=NOW,
        sort_date=NOW,
    )


def test_filters_see_the_teaser_as_published_not_the_stored_text() -> None:
    """As when the teaser was cut at parse: a word past `teaser_length` is not matched."""
    late = _stored("late", f"{STORY} needle")
    early = _stored("early", f"needle {STORY}")
    credits = {"a": SourceCredit("a", "A", "https://a.example.org/feed.xml")}

    def published(**filters: tuple[FilterPattern, ...]) -> dict[str, str]:
        timeline = build_timeline(
            [late, early],
            credits,
            now=NOW,
            selection=Selection(
                max_items=10,
                max_age=timedelta(days=1),
                filters=Filters(**filters),
                teaser_length=60,
            ),
        )
        return {item.entry.entry_id: item.entry.teaser for item in timeline.items}

    assert published() == {
        "late": make_teaser(STORY, 60),
        "early": make_teaser(f"needle {STORY}", 60),
    }
    assert published(exclude=(FilterPattern("needle"),)).keys() == {"late"}
    assert published(include=(FilterPattern("needle"),)).keys() == {"early"}


def test_the_cut_teaser_cache_is_bounded_in_code_points_not_only_in_entries() -> None:
    """At teaser_length 2,000 a teaser may hold 8,000 code points: 4,096 of them would be
    32 M code points kept; the cache is emptied before it holds more than its bound."""
    long_text = "क्षत्रिय " * 2_000
    for n in range(600):
        timeline.cut_teaser(f"{n} {long_text}", TEASER_LENGTH_LIMIT)
        held = sum(len(teaser) for teaser in timeline._cuts.values())
        assert held == timeline._cut_code_points[0] <= timeline._CUT_CACHE_CODE_POINTS

"""The embedded store: SQLite in WAL mode. The only module that speaks SQL.

Sources keep their fetch state (validators, outcomes, failures); entries are keyed by
(source, entry id) and upserted. Each write is one short `BEGIN IMMEDIATE` transaction,
so a `kill -9` loses at most the source being written and never corrupts the file, and a
second process (`aggregator status`) can read while the daemon writes. The schema version
lives in `PRAGMA user_version`; migrations run in order on open.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import StorageError
from aggregator.policy import ServerHints, is_overdue_schedule, next_poll
from aggregator.settings import SourceConfig
from aggregator.store.records import SourceState, StoreResult
from aggregator.store.rows import state_from_row
from aggregator.text import html_to_text, story_keys, teaser_text
from aggregator.timeline import CLOCK_SKEW, order_date
from aggregator.types import ParsedEntry, ParsedFeed, SourceCredit, StoredEntry, Validators

_MIGRATIONS: tuple[str, ...] = (
    # 1: sources with fetch state, entries keyed by (source, entry_id).
    """
    CREATE TABLE sources (
        name          TEXT PRIMARY KEY,
        url           TEXT NOT NULL,
        title         TEXT,
        site_url      TEXT,
        feed_id       TEXT,
        etag          TEXT,
        last_modified TEXT,
        last_polled   TEXT,
        last_success  TEXT,
        last_outcome  TEXT,
        last_error    TEXT,
        failures      INTEGER NOT NULL DEFAULT 0,
        added         TEXT NOT NULL
    );
    CREATE TABLE entries (
        source       TEXT NOT NULL,
        entry_id     TEXT NOT NULL,
        title        TEXT NOT NULL,
        link         TEXT,
        summary_html TEXT NOT NULL,
        teaser       TEXT NOT NULL,
        author       TEXT,
        categories   TEXT NOT NULL,
        published    TEXT,
        updated      TEXT,
        first_seen   TEXT NOT NULL,
        sort_date    TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        PRIMARY KEY (source, entry_id)
    ) WITHOUT ROWID;
    CREATE INDEX entries_by_date ON entries (sort_date DESC);
    """,
    # 2: each source's next poll time, so a restarted daemon resumes its schedule.
    """
    ALTER TABLE sources ADD COLUMN next_poll TEXT;
    CREATE INDEX sources_by_next_poll ON sources (next_poll);
    """,
    # 3: ids of entries deleted by retention, so one still in its feed does not come back.
    """
    CREATE TABLE tombstones (
        source     TEXT NOT NULL,
        entry_id   TEXT NOT NULL,
        last_seen  TEXT NOT NULL,
        PRIMARY KEY (source, entry_id)
    ) WITHOUT ROWID;
    CREATE INDEX tombstones_by_last_seen ON tombstones (last_seen);
    """,
    # 4: politeness: a Retry-After to honour, a permanent redirect to follow, a 410 Gone.
    """
    ALTER TABLE sources ADD COLUMN retry_after TEXT;
    ALTER TABLE sources ADD COLUMN moved_to TEXT;
    ALTER TABLE sources ADD COLUMN disabled TEXT;
    ALTER TABLE sources ADD COLUMN body_hash TEXT;
    """,
    # 5: the feed's own freshness hint (<ttl>, sy:updatePeriod), kept for its 304s.
    """
    ALTER TABLE sources ADD COLUMN lifetime REAL;
    """,
    # 6: story keys (normalized link and title), to find a story's older copies quickly.
    """
    ALTER TABLE entries ADD COLUMN link_key TEXT;
    ALTER TABLE entries ADD COLUMN title_key TEXT;
    CREATE INDEX entries_by_link_key ON entries (link_key);
    CREATE INDEX entries_by_title_key ON entries (title_key);
    """,
    # 7: claims: a daemon polling a source holds it until `claimed_until` (a lease), so the
    # daemons sharing a store poll each due source once. Recording the poll's end (success,
    # failure or 410: each writes last_polled) releases the claim.
    """
    ALTER TABLE sources ADD COLUMN claimed_by TEXT;
    ALTER TABLE sources ADD COLUMN claimed_until TEXT;
    CREATE TRIGGER sources_release_claim AFTER UPDATE OF last_polled ON sources
    WHEN NEW.claimed_by IS NOT NULL
    BEGIN
        UPDATE sources SET claimed_by = NULL, claimed_until = NULL WHERE name = NEW.name;
    END;
    """,
    # 8: the files last published, so that every daemon sharing the store serves the same
    # bytes: the publisher stores what it rendered, the others copy it into their output/.
    """
    CREATE TABLE published (
        name        TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        data        BLOB NOT NULL
    );
    """,
    # 9: `teaser` holds the entry's text uncut; publishing cuts it to `teaser_length`.
    # Rows stored before hold a cut teaser: `_backfill_teaser_text` recomputes them.
    """
    -- no schema change: the backfill rewrites the column
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, each whole: a trigger's body holds semicolons of its own."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.replace(";", "").strip():
                yield statement
            statement = ""
    if statement.replace(";", "").strip():
        yield statement  # incomplete: let SQLite say what is wrong with it


def _enable_wal(db: sqlite3.Connection, patience: float = 10.0) -> None:
    """Switch to WAL, waiting while another connection switches: SQLite answers "database
    is locked" at once there, without its busy timeout (stores opened at the same moment)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _ts(value: datetime | None, *, precise: bool = False) -> str | None:
    """UTC timestamps as ISO text, so text order is time order.

    Entry dates keep whole seconds (what feeds carry); schedule times keep microseconds, since
    truncating a next-poll time would move a poll up to a second early.
    """
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds" if precise else "seconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _backfill_story_keys(db: sqlite3.Connection) -> None:
    """Schema 6: compute the story keys of entries stored before they existed."""
    rows = db.execute("SELECT source, entry_id, link, title FROM entries").fetchall()
    db.executemany(
        "UPDATE entries SET link_key = ?, title_key = ? WHERE source = ? AND entry_id = ?",
        [(*story_keys(link, title), source, entry_id) for source, entry_id, link, title in rows],
    )


# Rows read and rewritten at a time by a backfill: summaries can be 512 KiB each.
_BACKFILL_BATCH = 500


def _backfill_teaser_text(db: sqlite3.Connection) -> None:
    """Schema 9: the uncut text of entries stored with a teaser cut at parse time.

    From the stored summary, as the parser makes it (`teaser_text(html_to_text(...))`),
    in batches of `_BACKFILL_BATCH` rows in key order.
    """
    after = ("", "")
    while True:
        rows = db.execute(
            "SELECT source, entry_id, summary_html FROM entries WHERE (source, entry_id) > (?, ?)"
            " ORDER BY source, entry_id LIMIT ?",
            (*after, _BACKFILL_BATCH),
        ).fetchall()
        if not rows:
            return
        db.executemany(
            "UPDATE entries SET teaser = ? WHERE source = ? AND entry_id = ?",
            [(teaser_text(html_to_text(html)), source, entry) for source, entry, html in rows],
        )
        after = (rows[-1][0], rows[-1][1])


_ENTRY_COLUMNS = """
    source, entry_id, title, link, summary_html, teaser, author, categories,
    published, updated, first_seen, sort_date
"""


def _entry_from_row(r: Sequence[Any]) -> StoredEntry:
    return StoredEntry(
        source=r[0],
        entry_id=r[1],
        title=r[2],
        link=r[3],
        summary_html=r[4],
        teaser=r[5],
        author=r[6],
        categories=tuple(json.loads(r[7])),
        published=_dt(r[8]),
        updated=_dt(r[9]),
        first_seen=_required_dt(r[10]),
        sort_date=_required_dt(r[11]),
    )


class SqliteStore:
    """One SQLite connection; open with `SqliteStore.open(path)`, close with `close()`."""

    remote = False  # calls are made on the event loop: one connection, no round trips

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> SqliteStore:
        """Open (creating directories and schema as needed) and migrate the store at `path`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
            _enable_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db)
            store._migrate()
        except sqlite3.Error as e:
            raise StorageError(f"cannot open the store at {path}: {e}") from e
        except OSError as e:
            raise StorageError(f"cannot open the store at {path}: {e.strerror or e}") from e
        return store

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite's errors ("database is locked") become StorageError."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StorageError(f"the store failed: {e}") from e

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the store has schema version {version}, newer than this aggregator knows "
                f"({SCHEMA_VERSION}); upgrade aggregator"
            )
        for number in range(version, SCHEMA_VERSION):
            with self._transaction() as db:
                # Another process may have migrated while we waited for the write lock.
                if int(db.execute("PRAGMA user_version").fetchone()[0]) > number:
                    continue
                for statement in _statements(_MIGRATIONS[number]):
                    db.execute(statement)
                if number + 1 == 6:
                    _backfill_story_keys(db)
                if number + 1 == 9:
                    _backfill_teaser_text(db)
                db.execute(f"PRAGMA user_version = {number + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- sources ---------------------------------------------------------------------------

    def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> None:
        """Make the sources table know every configured source; a changed URL drops validators.

        Sources no longer configured keep their rows and entries (the timeline ignores them),
        so putting a source back does not re-announce its old items.
        """
        with self._transaction() as db:
            for source in sources:
                db.execute(
                    """
                    INSERT INTO sources (name, url, added) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET
                        url = excluded.url, etag = NULL, last_modified = NULL,
                        failures = 0, next_poll = NULL, retry_after = NULL, moved_to = NULL,
                        disabled = NULL, body_hash = NULL, lifetime = NULL
                    WHERE sources.url != excluded.url
                    """,
                    (source.name, source.url, _ts(now)),
                )
                # A shortened interval applies now, not after the old, longer wait.
                last, scheduled, failures, wait, lifetime = db.execute(
                    """
                    SELECT last_polled, next_poll, failures, retry_after, lifetime FROM sources
                    WHERE name = ?
                    """,
                    (source.name,),
                ).fetchone()
                if last and scheduled:
                    last_polled, next_at = _required_dt(last), _required_dt(scheduled)
                    hints = ServerHints(
                        retry_after=_dt(wait),  # a Retry-After still holds
                        lifetime=timedelta(seconds=lifetime) if lifetime else None,
                    )
                    if is_overdue_schedule(next_at, last_polled, source.interval, failures, hints):
                        when = next_poll(source.name, source.interval, last_polled, failures, hints)
                        db.execute(
                            "UPDATE sources SET next_poll = ? WHERE name = ?",
                            (_ts(when, precise=True), source.name),
                        )

    _STATE_COLUMNS = """
        SELECT name, url, title, site_url, etag, last_modified, last_polled, last_success,
               last_outcome, last_error, failures,
               (SELECT count(*) FROM entries WHERE entries.source = sources.name), next_poll,
               retry_after, moved_to, disabled, body_hash, lifetime
        FROM sources
    """

    def source_state(self, name: str) -> SourceState | None:
        row = self._db.execute(self._STATE_COLUMNS + " WHERE name = ?", (name,)).fetchone()
        return None if row is None else state_from_row(row, _dt)

    def source_states(self) -> list[SourceState]:
        """Every source the store knows, configured or not, by name."""
        return [
            state_from_row(r, _dt) for r in self._db.execute(self._STATE_COLUMNS + " ORDER BY name")
        ]

    def due_sources(self, names: Sequence[str], now: datetime) -> list[str]:
        """Configured sources whose next poll has come (never polled ones first)."""
        rows = self._db.execute(
            """
            SELECT name FROM sources
            WHERE name IN (SELECT value FROM json_each(?)) AND disabled IS NULL
              AND (next_poll IS NULL OR next_poll <= ?)
            ORDER BY next_poll IS NOT NULL, next_poll, name
            """,
            (json.dumps(list(names)), _ts(now, precise=True)),
        )
        return [r[0] for r in rows]

    def ping(self) -> None:
        """Raise StorageError unless the store answers."""
        try:
            self._db.execute("SELECT count(*) FROM sources").fetchone()
        except sqlite3.Error as e:
            raise StorageError(f"the store does not answer: {e}") from e

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow without bound."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def record_success(
        self,
        name: str,
        validators: Validators,
        now: datetime,
        outcome: str,
        *,
        feed: ParsedFeed | None = None,
        next_poll: datetime | None = None,
        url: str | None = None,
        moved_to: str | None = None,
        body_hash: str | None = None,
    ) -> None:
        """A 200 or 304: new validators are saved even when the body turns out unchanged.

        `moved_to`: a chain of permanent redirects ended there; later polls go there.
        With `url`, nothing is written if the source's URL changed meanwhile (a reload while
        the poll ran): the old URL's validators must not be used for the new one. A parsed
        `feed` also records its freshness hint; an unparsed 304 or unchanged body keeps the
        source's tombstones alive (whatever the feed held, it still holds).
        """
        with self._transaction() as db:
            db.execute(
                """
                UPDATE sources SET etag = ?, last_modified = ?, last_polled = ?, last_success = ?,
                    last_outcome = ?, last_error = NULL, failures = 0, next_poll = ?,
                    retry_after = NULL, moved_to = ifnull(?, moved_to),
                    body_hash = ifnull(?, body_hash)
                WHERE name = ? AND url = ifnull(?, url)
                """,
                (
                    validators.etag,
                    validators.last_modified,
                    _ts(now),
                    _ts(now),
                    outcome,
                    _ts(next_poll, precise=True),
                    moved_to,
                    body_hash,
                    name,
                    url,
                ),
            )
            if feed is not None:
                lifetime = feed.lifetime.total_seconds() if feed.lifetime else None
                db.execute(
                    """
                    UPDATE sources SET title = ?, site_url = ?, feed_id = ?, lifetime = ?
                    WHERE name = ? AND url = ifnull(?, url)
                    """,
                    (feed.title, feed.link, feed.feed_id, lifetime, name, url),
                )
            else:
                db.execute("UPDATE tombstones SET last_seen = ? WHERE source = ?", (_ts(now), name))

    def record_failure(
        self,
        name: str,
        error: str,
        now: datetime,
        next_poll: datetime | None = None,
        *,
        url: str | None = None,
        retry_after: datetime | None = None,
    ) -> None:
        with self._transaction() as db:
            db.execute(
                """
                UPDATE sources SET last_polled = ?, last_outcome = 'failed', last_error = ?,
                    failures = failures + 1, next_poll = ?, retry_after = ?
                WHERE name = ? AND url = ifnull(?, url)
                """,
                (
                    _ts(now),
                    error,
                    _ts(next_poll, precise=True),
                    _ts(retry_after, precise=True),
                    name,
                    url,
                ),
            )

    def forget_move(self, name: str) -> None:
        """Poll the configured URL again instead of where a permanent redirect led."""
        with self._transaction() as db:
            db.execute(
                "UPDATE sources SET moved_to = NULL, etag = NULL, last_modified = NULL "
                "WHERE name = ?",
                (name,),
            )

    def disable(self, name: str, reason: str, now: datetime, *, url: str | None = None) -> None:
        """Stop polling a source (410 Gone) until its URL in feeds.toml changes."""
        with self._transaction() as db:
            db.execute(
                """
                UPDATE sources SET disabled = ?, last_polled = ?, last_outcome = 'disabled',
                    last_error = ?, next_poll = NULL
                WHERE name = ? AND url = ifnull(?, url)
                """,
                (reason, _ts(now), reason, name, url),
            )

    def source_credits(self, sources: Sequence[SourceConfig]) -> dict[str, SourceCredit]:
        """How each configured source is credited: the operator's title, else the feed's own."""
        known = {
            row[0]: row[1:]
            for row in self._db.execute("SELECT name, title, site_url, feed_id FROM sources")
        }
        credits = {}
        for source in sources:
            title, site_url, feed_id = known.get(source.name, (None, None, None))
            credits[source.name] = SourceCredit(
                name=source.name,
                title=source.title or title or source.name,
                feed_url=source.url,
                site_url=site_url,
                feed_id=feed_id,
            )
        return credits

    # -- entries ---------------------------------------------------------------------------

    def store_entries(
        self, source: str, entries: Sequence[ParsedEntry], now: datetime
    ) -> StoreResult:
        """Insert new entries and update changed ones; `first_seen` and `sort_date` never move."""
        if not entries:
            return StoreResult(0, 0)
        with self._transaction() as db:
            known = dict(
                db.execute(
                    """
                    SELECT entry_id, content_hash || '|' || ifnull(published, '')
                                     || '|' || ifnull(updated, '')
                    FROM entries WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
                    """,
                    (source, json.dumps([e.entry_id for e in entries])),
                ).fetchall()
            )
            buried = {
                row[0]
                for row in db.execute(
                    """
                    SELECT entry_id FROM tombstones
                    WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
                    """,
                    (source, json.dumps([e.entry_id for e in entries])),
                )
            }
            if buried:
                # Deleted by retention but still in the feed: not new; remember it is still there.
                db.execute(
                    """
                    UPDATE tombstones SET last_seen = ?
                    WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
                    """,
                    (_ts(now), source, json.dumps(sorted(buried))),
                )
            new_rows, changed_rows = [], []
            undated = 0
            for e in entries:
                if e.entry_id in buried:
                    continue
                # An `updated` in the future is the publisher's clock; until it has come, it is
                # no date at all (keeping it would make the published feeds change every run).
                updated = None if e.updated and e.updated > now + CLOCK_SKEW else e.updated
                signature = f"{e.content_hash}|{_ts(e.published) or ''}|{_ts(updated) or ''}"
                if known.get(e.entry_id) == signature:
                    continue  # most of a changed feed is unchanged items: nothing to compute
                fields = (
                    e.title, e.link, e.summary_html, e.teaser, e.author,
                    json.dumps(e.categories, ensure_ascii=False), _ts(e.published), _ts(updated),
                    e.content_hash, e.story_link, e.story_title,
                )  # fmt: skip
                if e.entry_id not in known:
                    sort_date = order_date(e.published, updated, now)
                    if e.published is None and updated is None:
                        # Undated items seen together keep their document order, a second
                        # apart, instead of all sharing one moment.
                        sort_date -= timedelta(seconds=undated)
                        undated += 1
                    new_rows.append((source, e.entry_id, *fields, _ts(now), _ts(sort_date)))
                else:
                    changed_rows.append((*fields, source, e.entry_id))
            db.executemany(
                """
                INSERT INTO entries (source, entry_id, title, link, summary_html, teaser, author,
                    categories, published, updated, content_hash, link_key, title_key,
                    first_seen, sort_date)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                new_rows,
            )
            db.executemany(
                """
                UPDATE entries SET title = ?, link = ?, summary_html = ?, teaser = ?, author = ?,
                    categories = ?, published = ?, updated = ?, content_hash = ?, link_key = ?,
                    title_key = ?
                WHERE source = ? AND entry_id = ?
                """,
                changed_rows,
            )
        return StoreResult(new=len(new_rows), updated=len(changed_rows))

    def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int
    ) -> list[StoredEntry]:
        """The newest entries of `sources` with `sort_date >= since`: only what can be published.

        `+source` keeps SQLite off the primary key (source, entry_id), which would read every
        entry of every source and sort them; the date index yields the newest first.
        """
        rows = self._db.execute(
            f"""
            SELECT {_ENTRY_COLUMNS} FROM entries
            WHERE +source IN (SELECT value FROM json_each(?)) AND sort_date >= ?
            ORDER BY sort_date DESC, source, entry_id
            LIMIT ?
            """,
            (json.dumps(list(sources)), _ts(since), limit),
        ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def earlier_copies(
        self, sources: Iterable[str], of: Iterable[StoredEntry], before: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries placed before `before` that share a story key (link or title) with `of`.

        The timeline needs them to know a story's first copy even when that copy has left
        the window: the story is then not published again under another copy's id.
        `+source`, as above: the link and title indexes find the few candidates. At most
        `limit` of them, the first seen: those are what decides a story's first copy.
        """
        links, titles = set(), set()
        for entry in of:
            link, title = story_keys(entry.link, entry.title)
            if link:
                links.add(link)
            if title:
                titles.add(title)
        if not links and not titles:
            return []
        rows = self._db.execute(
            f"""
            SELECT {_ENTRY_COLUMNS} FROM entries
            WHERE +source IN (SELECT value FROM json_each(?)) AND sort_date < ?
              AND (link_key IN (SELECT value FROM json_each(?))
                   OR title_key IN (SELECT value FROM json_each(?)))
            ORDER BY first_seen, sort_date, source, entry_id
            LIMIT ?
            """,
            (json.dumps(list(sources)), _ts(before), json.dumps(sorted(links)),
             json.dumps(sorted(titles)), limit),
        ).fetchall()  # fmt: skip
        return [_entry_from_row(r) for r in rows]

    def prune(self, before: datetime, now: datetime) -> int:
        """Retention: delete entries placed before `before`, leaving tombstones of their ids.

        A tombstone lasts until its entry has been absent from its feed for as long as
        entries are kept, so an item still in its feed never comes back as new.
        """
        with self._transaction() as db:
            db.execute(
                """
                INSERT OR REPLACE INTO tombstones (source, entry_id, last_seen)
                SELECT source, entry_id, ? FROM entries WHERE sort_date < ?
                """,
                (_ts(now), _ts(before)),
            )
            deleted = db.execute("DELETE FROM entries WHERE sort_date < ?", (_ts(before),)).rowcount
            # `before` is now minus the retention period: the same span for tombstones.
            db.execute("DELETE FROM tombstones WHERE last_seen < ?", (_ts(before),))
        return int(deleted)

    def first_added(self) -> datetime | None:
        """When the first source was added: a stable date for a feed with nothing in it yet."""
        return _dt(self._db.execute("SELECT min(added) FROM sources").fetchone()[0])

    def count_entries(self, source: str | None = None) -> int:
        if source is None:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])
        return int(
            self._db.execute("SELECT count(*) FROM entries WHERE source = ?", (source,)).fetchone()[
                0
            ]
        )

    # -- claims: several pollers sharing one store -------------------------------------------

    def claim_due(
        self,
        names: Sequence[str],
        now: datetime,
        owner: str,
        lease: timedelta,
        *,
        limit: int | None = None,
        due_by: datetime | None = None,
    ) -> list[str]:
        """Claim for `owner`, until `now + lease`, the due sources nobody else holds.

        Due as in `due_sources` at `due_by` (default `now`; in its order), and unclaimed or
        with a lease expired at `now`.
        One write transaction (`BEGIN IMMEDIATE`) both picks and marks them, so two claimers
        never get the same source. A claim ends with `release` or when the poll is recorded
        (`record_success`, `record_failure`, `disable`), else when its lease runs out.
        """
        at = _ts(now, precise=True)
        due = _ts(due_by if due_by is not None else now, precise=True)
        with self._transaction() as db:
            claimed = [
                row[0]
                for row in db.execute(
                    """
                    SELECT name FROM sources
                    WHERE name IN (SELECT value FROM json_each(?)) AND disabled IS NULL
                      AND (next_poll IS NULL OR next_poll <= ?)
                      AND (claimed_until IS NULL OR claimed_until <= ?)
                    ORDER BY next_poll IS NOT NULL, next_poll, name
                    LIMIT ?
                    """,
                    (json.dumps(list(names)), due, at, -1 if limit is None else limit),
                )
            ]
            db.executemany(
                "UPDATE sources SET claimed_by = ?, claimed_until = ? WHERE name = ?",
                [(owner, _ts(now + lease, precise=True), name) for name in claimed],
            )
        return claimed

    def release(self, name: str, owner: str) -> None:
        """Give back `owner`'s claim on a source (a claim since taken over is left alone)."""
        with self._transaction() as db:
            db.execute(
                """
                UPDATE sources SET claimed_by = NULL, claimed_until = NULL
                WHERE name = ? AND claimed_by = ?
                """,
                (name, owner),
            )

    def claim_holders(self, now: datetime) -> list[str]:
        """The owners holding a lease that has not run out at `now`, by name."""
        rows = self._db.execute(
            "SELECT DISTINCT claimed_by FROM sources WHERE claimed_until > ? ORDER BY 1",
            (_ts(now, precise=True),),
        )
        return [r[0] for r in rows]

    def release_all(self, owner: str) -> int:
        """End every claim of `owner` (known dead); returns how many there were."""
        with self._transaction() as db:
            released = db.execute(
                "UPDATE sources SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?",
                (owner,),
            ).rowcount
        return int(released)

    # -- the published snapshot --------------------------------------------------------------

    def save_published(self, fingerprint: str, files: Mapping[str, bytes]) -> None:
        """Replace the stored snapshot of the published files with `files`, all at once."""
        with self._transaction() as db:
            db.execute("DELETE FROM published")
            db.executemany(
                "INSERT INTO published (name, fingerprint, data) VALUES (?, ?, ?)",
                [(name, fingerprint, data) for name, data in files.items()],
            )

    def published_fingerprint(self) -> str | None:
        """The fingerprint of the stored snapshot (of its render input), None before any."""
        row = self._db.execute("SELECT fingerprint FROM published LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def load_published(self) -> tuple[str, dict[str, bytes]] | None:
        """The stored snapshot, read in one statement: (fingerprint, {name: bytes})."""
        rows = self._db.execute(
            "SELECT name, fingerprint, data FROM published ORDER BY name"
        ).fetchall()
        if not rows:
            return None
        return str(rows[0][1]), {str(name): bytes(data) for name, _, data in rows}

    @contextmanager
    def publish_lock(self) -> Iterator[None]:
        """Held while publishing: one publisher at a time among all users of this file.

        An exclusive `flock` on `<database>-publish.lock` beside the database, so it holds
        across processes and across `SqliteStore` objects in one process, and dies with its holder.
        Taking it waits for the current holder; store writes are not blocked meanwhile.
        """
        database = self._db.execute("PRAGMA database_list").fetchone()[2]
        if not database:  # an in-memory database: nobody else can see it
            yield
            return
        try:
            lock = os.open(f"{database}-publish.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open the publish lock: {e.strerror or e}") from e
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            os.close(lock)  # which releases the lock

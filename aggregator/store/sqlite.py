"""The embedded store: SQLite in WAL mode. It reads and writes rows and decides nothing.

Sources keep their fetch state (validators, outcomes, failures); entries are keyed by
(source, entry id). Each write is one short `BEGIN IMMEDIATE` transaction, so a `kill -9`
loses at most the source being written and never corrupts the file, and a second process
(`aggregator status`) can read while the daemon writes. The schema and its migrations are
in `sqlite_schema`; what to write is decided by the update rules (`aggregator.update`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.errors import StorageError
from aggregator.settings import SourceConfig
from aggregator.store import rows
from aggregator.store.hub import HubStatements
from aggregator.store.records import (
    Backfills,
    EntryMarks,
    EntryWrites,
    FeedMeta,
    KnownEntries,
    Reschedule,
    Schedule,
    SourceState,
    StoryKeys,
)
from aggregator.store.shared import SharedStatements, Steps
from aggregator.store.sqlite_schema import SCHEMA_VERSION, enable_wal, migrate
from aggregator.types import StoredEntry

__all__ = ["SCHEMA_VERSION", "SqliteStore"]


def _ts(value: datetime | None, *, precise: bool = False) -> str | None:
    """UTC timestamps as ISO text, so text order is time order.

    Entry dates keep whole seconds (what feeds carry); schedule times keep microseconds, since
    truncating a next-poll time would move a poll up to a second early.
    """
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds" if precise else "seconds")


def _at(value: datetime | None) -> str | None:
    return _ts(value, precise=True)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _categories(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value))


def _json(values: Iterable[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def _entry(row: Sequence[Any]) -> StoredEntry:
    return rows.entry_from_row(row, _dt, _categories)


_INSERT_ENTRY = f"""
    INSERT INTO entries (source, entry_id, {", ".join(rows.WRITTEN_COLUMNS)},
        first_seen, sort_date, stored_in)
    VALUES (?, ?, {", ".join("?" for _ in rows.WRITTEN_COLUMNS)}, ?, ?, ?)
    {rows.upsert_clause("IS NOT")}
"""
_UPDATE_ENTRY = f"""
    UPDATE entries SET {", ".join(f"{c} = ?" for c in rows.WRITTEN_COLUMNS)}, stored_in = ?
    WHERE source = ? AND entry_id = ?
"""


# `claim_due`'s reads. For a few names, or names all wanted (`once` claims a batch), those
# rows by name; for many with a limit (a daemon passes every configured source and claims
# what it has room for), the due ones from the next-poll index, filtered here: the list
# made into an SQL table cost 0.5 ms per claim, and the due sources are found in a few
# rows (but every row when all are due: `once`'s batch of 50 among 20,000 took 3 s that
# way). Never polled ones first either way.
_FEW = 32
_UNCLAIMED = "disabled IS NULL AND (claimed_until IS NULL OR claimed_until <= ?)"
_NAMED_DUE = f"""
    SELECT name FROM sources
    WHERE name IN (SELECT value FROM json_each(?)) AND {_UNCLAIMED}
      AND (next_poll IS NULL OR next_poll <= ?)
    ORDER BY next_poll IS NOT NULL, next_poll, name
    LIMIT ?
"""
_NEVER_POLLED = f"SELECT name FROM sources WHERE next_poll IS NULL AND {_UNCLAIMED} ORDER BY name"
_DUE_BY = f"""
    SELECT name FROM sources WHERE next_poll <= ? AND {_UNCLAIMED} ORDER BY next_poll, name
"""


def _pick_due(
    db: sqlite3.Connection, names: Sequence[str], due: str | None, at: str | None, limit: int | None
) -> list[str]:
    """The unclaimed sources of `names` due by `due`, in due order, at most `limit`."""
    wanted = set(names)
    room = len(wanted) if limit is None else min(limit, len(wanted))
    if len(wanted) <= _FEW or limit is None:
        found = db.execute(_NAMED_DUE, (_json(wanted), at, due, room))
        return [row[0] for row in found]
    picked: list[str] = []
    for sql, params in ((_NEVER_POLLED, (at,)), (_DUE_BY, (due, at))):
        cursor = db.execute(sql, params)
        for (name,) in cursor:
            if len(picked) >= room:
                break
            if name in wanted:
                picked.append(name)
        cursor.close()
    return picked


class SqliteStore(SharedStatements, HubStatements):
    """One SQLite connection; open with `SqliteStore.open(path)`, close with `close()`."""

    remote = False  # calls are made on the event loop: one connection, no round trips

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path, *, backfills: Backfills | None = None) -> SqliteStore:
        """Open (creating directories and schema as needed) and migrate the store at `path`.

        `story_keys` keys the entries of a store from before schema 6 (`open_store` gives it).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
            enable_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db)
            migrate(db, store._transaction, backfills)
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

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def _apply(self, steps: Steps) -> list[int]:
        with self._transaction() as db:
            return [db.executemany(sql, params).rowcount for sql, params in steps]

    _schedule_time = staticmethod(_at)
    _read_time = staticmethod(_dt)
    _entry_time = staticmethod(_ts)

    def _write_entries(self, tx: Any, source: str, writes: EntryWrites) -> None:
        _insert_entries(tx, source, writes)

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def ping(self) -> None:
        """Raise StorageError unless the store answers."""
        try:
            self._db.execute("SELECT count(*) FROM sources").fetchone()
        except sqlite3.Error as e:
            raise StorageError(f"the store does not answer: {e}") from e

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow without bound."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- sources ---------------------------------------------------------------------------

    def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> list[Schedule]:
        """Make the sources table know every configured source; a changed URL drops its
        fetch state and the claim on the old one (a poll of it under way is not recorded:
        `PollRecord.url`), so the new one is due at once, not when that lease runs out.
        Returns their schedules, for the next-poll repair (`update`).

        Sources no longer configured keep their rows and entries (the timeline ignores them),
        so putting a source back does not re-announce its old items.
        """
        wanted = list(sources)
        names = _json(s.name for s in wanted)
        added = _ts(now)
        with self._transaction() as db:
            known = dict(
                db.execute(
                    "SELECT name, url FROM sources WHERE name IN (SELECT value FROM json_each(?))",
                    (names,),
                ).fetchall()
            )
            # Only new sources and changed URLs are written: a reload of 50,000 sources that
            # changes one wrote every row (0.3 s, on the event loop).
            changed = [s for s in wanted if known.get(s.name) != s.url]
            db.executemany(  # a new URL's document is not the one its items came from
                "DELETE FROM source_items WHERE name = ?",
                [(s.name,) for s in changed if s.name in known],
            )
            db.executemany(self._UPSERT_SOURCE, [(s.name, s.url, added) for s in changed])
            found = db.execute(
                f"""
                SELECT {rows.SCHEDULE_COLUMNS} FROM sources
                WHERE name IN (SELECT value FROM json_each(?))
                """,
                (names,),
            ).fetchall()
        return [rows.schedule_from_row(r, _dt) for r in found]

    def reschedule(self, moves: Sequence[Reschedule]) -> None:
        """Move next polls, each only if it is still the one the move was decided from."""
        if not moves:
            return
        with self._transaction() as db:
            db.executemany(
                "UPDATE sources SET next_poll = ? WHERE name = ? AND next_poll = ?",
                [(_at(m.to), m.name, _at(m.was)) for m in moves],
            )

    def source_state(self, name: str) -> SourceState | None:
        row = self._db.execute(
            f"SELECT {rows.STATE_COLUMNS} FROM sources WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else rows.state_from_row(row, _dt)

    def source_states(self) -> list[SourceState]:
        """Every source the store knows, configured or not, by name."""
        found = self._db.execute(f"SELECT {rows.STATE_COLUMNS} FROM sources ORDER BY name")
        return [rows.state_from_row(r, _dt) for r in found]

    def poll_states(self, names: Sequence[str]) -> dict[str, SourceState]:
        """What polls of `names` need, their subscriptions included, in one read (no count
        of entries)."""
        if len(names) == 1:  # `once`, a source at a time: no list to decode
            where, params = "sources.name = ?", tuple(names)
        else:
            where, params = "sources.name IN (SELECT value FROM json_each(?))", (_json(names),)
        found = self._db.execute(rows.poll_state_query(where), params)
        return {r[0]: rows.poll_state_from_row(r, _dt) for r in found}

    def due_sources(self, names: Sequence[str], now: datetime) -> list[str]:
        """Configured sources whose next poll has come (never polled ones first)."""
        found = self._db.execute(
            """
            SELECT name FROM sources
            WHERE name IN (SELECT value FROM json_each(?)) AND disabled IS NULL
              AND (next_poll IS NULL OR next_poll <= ?)
            ORDER BY next_poll IS NOT NULL, next_poll, name
            """,
            (_json(names), _at(now)),
        )
        return [r[0] for r in found]

    def feed_metas(self) -> dict[str, FeedMeta]:
        """What each source's feed said about itself when last parsed (for credits)."""
        found = self._db.execute(f"SELECT {rows.FEED_COLUMNS} FROM sources")
        return dict(rows.feed_from_row(r) for r in found)

    # -- entries ---------------------------------------------------------------------------

    def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        """What the store holds of these entry ids of `source`: signatures and tombstones."""
        if not ids:
            return KnownEntries()
        wanted = _json(ids)
        found = self._db.execute(
            """
            SELECT entry_id, content_hash, published, updated FROM entries
            WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (source, wanted),
        )
        signatures = dict(rows.signature_from_row(r, _dt) for r in found)
        buried = self._db.execute(
            """
            SELECT entry_id FROM tombstones
            WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (source, wanted),
        )
        return KnownEntries(signatures, frozenset(r[0] for r in buried))

    def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int, *, by_source: bool = False
    ) -> list[StoredEntry]:
        """The newest entries of `sources` with `sort_date >= since`: only what can be published.

        `+source` keeps SQLite off the indexes that start with the source, which would read
        every entry of every source since `since` and sort them; the date index yields the
        newest first. That is right for many sources; for a few that hold a small share of
        the entries (`by_source`: a channel) the date index walks past everybody else's, and
        the (source, sort_date) index reads theirs alone (a quiet source's: 0.2 ms, not 0.8 s).
        """
        column = "source" if by_source else "+source"
        found = self._db.execute(
            f"""
            SELECT {rows.ENTRY_COLUMNS} FROM entries
            WHERE {column} IN (SELECT value FROM json_each(?)) AND sort_date >= ?
            ORDER BY sort_date DESC, source, entry_id
            LIMIT ?
            """,
            (_json(sources), _ts(since), limit),
        ).fetchall()
        return [_entry(r) for r in found]

    def earlier_copies(
        self, sources: Iterable[str], keys: StoryKeys, before: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries placed before `before` with one of the story `keys` (link or title).

        The timeline needs them to know a story's first copy even when that copy has left
        the window. `+source`, as above: the link and title indexes find the few candidates.
        At most `limit` of them, the first seen: those are what decides a story's first copy.
        """
        if not keys.links and not keys.titles:
            return []
        found = self._db.execute(
            f"""
            SELECT {rows.ENTRY_COLUMNS} FROM entries
            WHERE +source IN (SELECT value FROM json_each(?)) AND sort_date < ?
              AND (link_key IN (SELECT value FROM json_each(?))
                   OR title_key IN (SELECT value FROM json_each(?)))
            ORDER BY first_seen, sort_date, source, entry_id
            LIMIT ?
            """,
            (_json(sources), _ts(before), _json(sorted(keys.links)),
             _json(sorted(keys.titles)), limit),
        ).fetchall()  # fmt: skip
        return [_entry(r) for r in found]

    def prune(self, before: datetime, now: datetime) -> int:
        """Retention: delete entries placed before `before`, leaving tombstones of their ids.

        A tombstone lasts until its entry has been absent from its feed for as long as
        entries are kept, so an item still in its feed never comes back as new. It keeps
        the entry's place and story keys, stamped with this write: `entry_marks` reads the
        deletion like any other change.
        """
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM entries WHERE sort_date < ?", (_ts(before),)).fetchone():
                # Their sources' entries change: publishing must not take them as unchanged.
                db.execute(
                    "UPDATE sources SET entries_version = entries_version + 1 WHERE name IN "
                    "(SELECT DISTINCT source FROM entries WHERE sort_date < ?)",
                    (_ts(before),),
                )
                db.execute(
                    """
                    INSERT OR REPLACE INTO tombstones (source, entry_id, last_seen, sort_date,
                        link_key, title_key, stored_in)
                    SELECT source, entry_id, ?, sort_date, link_key, title_key, ?
                    FROM entries WHERE sort_date < ?
                    """,
                    (_ts(now), _next_write(db), _ts(before)),
                )
            deleted = db.execute("DELETE FROM entries WHERE sort_date < ?", (_ts(before),)).rowcount
            # `before` is now minus the retention period: the same span for tombstones.
            db.execute("DELETE FROM tombstones WHERE last_seen < ?", (_ts(before),))
        return int(deleted)

    # -- archives: what changed, and one day's entries --------------------------------------

    def entry_marks(self, sources: Iterable[str], since: str | None, limit: int) -> EntryMarks:
        """The marks of entries of `sources` stored or deleted after the change token `since`
        (of every entry of theirs when None), at most `limit`, and the token as of now.

        The token is the write counter, read first: a write committing meanwhile has a
        higher number, so it is read again next time rather than missed.
        """
        token = str(self._db.execute("SELECT counter FROM entry_writes").fetchone()[0])
        params: list[Any] = [_json(sources)]
        if since is None:  # the primary key (source, entry_id) finds one source's entries
            where = "source IN (SELECT value FROM json_each(?))"
        elif since.isdigit():
            where = "stored_in > ? AND +source IN (SELECT value FROM json_each(?))"
            params.insert(0, int(since))
        else:  # not a token of this store's: everything may have changed
            return EntryMarks(token, complete=False)
        if since is None:
            sql = f"SELECT {rows.MARK_COLUMNS} FROM entries WHERE {where} LIMIT ?"
        else:  # and the entries retention deleted since (their tombstones)
            sql = f"""
                SELECT {rows.MARK_COLUMNS} FROM entries WHERE {where}
                UNION ALL
                SELECT {rows.MARK_COLUMNS} FROM tombstones
                WHERE {where} AND sort_date IS NOT NULL
                LIMIT ?
            """
            params = [*params, *params]
        found = self._db.execute(sql, (*params, limit + 1)).fetchall()
        marks = tuple(rows.mark_from_row(r, _dt) for r in found[:limit])
        return EntryMarks(token, marks, complete=len(found) <= limit)

    def story_dates(self, sources: Iterable[str], keys: StoryKeys, limit: int) -> list[datetime]:
        """When the entries of `sources` with one of the story `keys` sit (`sort_date`), at
        most `limit` of them: the days a story's copies touch."""
        if not keys.links and not keys.titles:
            return []
        found = self._db.execute(
            """
            SELECT sort_date FROM entries
            WHERE +source IN (SELECT value FROM json_each(?))
              AND (link_key IN (SELECT value FROM json_each(?))
                   OR title_key IN (SELECT value FROM json_each(?)))
            LIMIT ?
            """,
            (_json(sources), _json(sorted(keys.links)), _json(sorted(keys.titles)), limit),
        ).fetchall()
        return [datetime.fromisoformat(r[0]) for r in found]

    def entries_between(
        self,
        sources: Iterable[str],
        start: datetime,
        end: datetime,
        limit: int,
        *,
        by_source: bool = False,
    ) -> list[StoredEntry]:
        """Entries of `sources` placed in [start, end), the earliest first, at most `limit`.

        As `recent_entries`: for many sources (the root's: all of them) `+source` walks the
        day by date and stops at `limit` (24 ms for 2,000 of a day of 3,500 entries, not
        57: a search per source, then a sort of the whole day); for a few (`by_source`: a
        channel) it would read every source's rows of the day (a tenth of them: 24 ms, not
        3), and (source, sort_date) reads theirs alone.
        """
        column = "source" if by_source else "+source"
        found = self._db.execute(
            f"""
            SELECT {rows.ENTRY_COLUMNS} FROM entries
            WHERE {column} IN (SELECT value FROM json_each(?)) AND sort_date >= ? AND sort_date < ?
            ORDER BY sort_date, source, entry_id
            LIMIT ?
            """,
            (_json(sources), _ts(start), _ts(end), limit),
        ).fetchall()
        return [_entry(r) for r in found]

    def copies_outside(
        self, sources: Iterable[str], start: datetime, end: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries of `sources` placed outside [start, end) that share a story key (link or
        title) with one placed inside: at most `limit`, the first seen (they decide a
        story's first copy). The keys are the stored ones, matched in SQL; the day's are
        read through (source, sort_date)."""
        # The day's keys are read once; each is looked up in its index with the entry's
        # place beside it, so an entry of the day itself is passed over without reading
        # its row; only the copies' rows are read. (Written as one `IN (...) OR IN (...)`
        # over the rows, the planner read every key's row, or walked the dates.)
        found = self._db.execute(
            f"""
            WITH inside AS MATERIALIZED (
                SELECT link_key, title_key FROM entries
                WHERE source IN (SELECT value FROM json_each(:sources))
                  AND sort_date >= :start AND sort_date < :end
            ),
            copies AS (
                SELECT source, entry_id FROM entries
                WHERE link_key IN (SELECT link_key FROM inside WHERE link_key IS NOT NULL)
                  AND (sort_date < :start OR sort_date >= :end)
                UNION
                SELECT source, entry_id FROM entries
                WHERE title_key IN (SELECT title_key FROM inside WHERE title_key IS NOT NULL)
                  AND (sort_date < :start OR sort_date >= :end)
            )
            SELECT {rows.ENTRY_COLUMNS} FROM entries
            WHERE (source, entry_id) IN copies
              AND +source IN (SELECT value FROM json_each(:sources))
            ORDER BY first_seen, sort_date, source, entry_id
            LIMIT :limit
            """,
            {"sources": _json(sources), "start": _ts(start), "end": _ts(end), "limit": limit},
        ).fetchall()
        return [_entry(r) for r in found]

    def oldest_entry(self, sources: Iterable[str]) -> datetime | None:
        """The earliest `sort_date` among the entries of `sources` (None: none stored)."""
        found = self._db.execute(
            """
            SELECT sort_date FROM entries WHERE +source IN (SELECT value FROM json_each(?))
            ORDER BY sort_date LIMIT 1
            """,
            (_json(sources),),
        ).fetchone()
        return None if found is None else datetime.fromisoformat(found[0])

    def latest_before(self, sources: Iterable[str], before: datetime) -> datetime | None:
        """The latest `sort_date` before `before` among the entries of `sources`."""
        found = self._db.execute(
            """
            SELECT sort_date FROM entries
            WHERE +source IN (SELECT value FROM json_each(?)) AND sort_date < ?
            ORDER BY sort_date DESC LIMIT 1
            """,
            (_json(sources), _ts(before)),
        ).fetchone()
        return None if found is None else datetime.fromisoformat(found[0])

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
        (`record_poll`), else when its lease runs out.
        """
        at = _ts(now, precise=True)
        due = _ts(due_by if due_by is not None else now, precise=True)
        with self._transaction() as db:
            claimed = _pick_due(db, names, due, at, limit)
            db.executemany(
                "UPDATE sources SET claimed_by = ?, claimed_until = ? WHERE name = ?",
                [(owner, _ts(now + lease, precise=True), name) for name in claimed],
            )
        return claimed

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


def _next_write(db: sqlite3.Connection) -> int:
    """This write's number: the counter's order is the commit order (one writer at a time)."""
    return int(
        db.execute("UPDATE entry_writes SET counter = counter + 1 RETURNING counter").fetchone()[0]
    )


def _insert_entries(db: sqlite3.Connection, source: str, writes: EntryWrites) -> None:
    """Insert new entries (one another writer inserted meanwhile takes this write's content,
    but its `first_seen` and `sort_date` never move), update changed ones, touch buried ones."""
    seen = _ts(writes.seen)
    if writes.still_buried:
        db.execute(
            """
            UPDATE tombstones SET last_seen = ?
            WHERE source = ? AND entry_id IN (SELECT value FROM json_each(?))
            """,
            (seen, source, _json(writes.still_buried)),
        )
    if not (writes.new or writes.changed):
        return
    stored_in = _next_write(db)
    # To the microsecond: the first copy of a story is the one published (its id stays), and
    # whole seconds made two copies first seen in one second a tie, broken by source name.
    first_seen = _at(writes.seen)
    db.executemany(
        _INSERT_ENTRY,
        [
            (source, w.entry.entry_id, *rows.entry_values(w, _ts, _json), first_seen,
             _ts(w.sort_date), stored_in)
            for w in writes.new
        ],
    )  # fmt: skip
    db.executemany(
        _UPDATE_ENTRY,
        [
            (*rows.entry_values(w, _ts, _json), stored_in, source, w.entry.entry_id)
            for w in writes.changed
        ],
    )

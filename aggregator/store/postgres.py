"""The shared store: PostgreSQL, for several daemons polling one source list.

It implements `aggregator.store.StoreAPI` with the semantics of the SQLite `SqliteStore`; one
body of contract tests (tests/test_store_contract.py) runs against both. It reads and
writes rows and decides nothing: what to write comes from `aggregator.update`.

- Connections come from a psycopg_pool `ConnectionPool`, so one `PgStore` serves several
  threads. Each write is one transaction; reads run in autocommit.
- Times are `timestamptz`, returned as UTC. Entry dates are cut to the second and schedule
  times keep microseconds, exactly as the SQLite store's ISO text does, so both give equal
  answers. Names and entry ids use the "C" collation: rows come back in SQLite's byte order
  whatever locale the database was created with.
- Claims: `claim_due` picks due sources with `SELECT … FOR UPDATE SKIP LOCKED` and writes the
  lease in the same statement, so concurrent daemons get disjoint sets without waiting.
- Publishing: `publish_lock` is a session advisory lock, held on a connection of its own
  and released by PostgreSQL if its holder dies.
- The schema and its migrations are in `postgres_schema`.

It must not hold a transaction open across a network fetch or any other slow work.
"""

from __future__ import annotations

import contextlib
import re
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregator.errors import StorageError
from aggregator.settings import SourceConfig
from aggregator.store import rows
from aggregator.store.hub import HubStatements
from aggregator.store.postgres_schema import (
    SCHEMA_VERSION,
    Connection,
    describe,
    migrate,
    schema_version,
    without_password,
)
from aggregator.store.postgres_writes import seconds, upsert_entries
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
from aggregator.types import StoredEntry

__all__ = ["SCHEMA_VERSION", "PgStore", "describe"]

# Advisory lock key, per database: a bigint spelling "aggr-pub".
_PUBLISH_LOCK = int.from_bytes(b"aggr-pub", "big")
PING_SECONDS = 3.0  # how long a health check waits for a pooled connection
# A change token of this store's: a snapshot as `pg_snapshot` prints it ("xmin:xmax:xip,…").
_SNAPSHOT = re.compile(r"\d+:\d+:(?:\d+(?:,\d+)*)?")


def _as_is(value: datetime) -> datetime:
    """A schedule time as PostgreSQL holds it: psycopg adapts an aware datetime itself."""
    return value


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _entry(row: Sequence[Any]) -> StoredEntry:
    return rows.entry_from_row(row, _utc, tuple)


# A pooled connection unused for longer than this is checked (one round trip) before it is
# lent: the database may have restarted meanwhile. One used moments ago is lent as it is.
IDLE_CHECK_SECONDS = 2.0


class _IdleCheck:
    """The pool's `check`: ping a connection before lending it only when it sat in the pool
    for a while, rather than before every borrow (a round trip per store call, most of a
    poll's). A connection the server dropped within the last moments fails its one
    statement instead, which the caller handles as any store error (the pool then
    discards it: a broken connection is never lent again). `returned` is called by
    `PgStore._connection` as a borrower is done, not as the pool's `reset` callback: that
    would send every return through the pool's maintenance threads (slower returns, and
    more connections opened while callers wait for them)."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()

    def returned(self, conn: Connection) -> None:
        self._returned[conn] = time.monotonic()

    def check(self, conn: Connection) -> None:
        since = self._returned.get(conn)
        if since is None or time.monotonic() - since > IDLE_CHECK_SECONDS:
            ConnectionPool.check_connection(conn)


class PgStore(SharedStatements, HubStatements):
    """A pool of connections to one database; open with `PgStore.open(url)`, end with `close()`.

    Thread-safe: each call borrows a pooled connection, so callers in several threads
    (`remote`, see `store.adapter.AsyncStore`) wait on the server at the same time.
    """

    remote = True
    _param = "%s"

    def __init__(
        self,
        pool: ConnectionPool[Connection],
        where: str,
        idle: _IdleCheck,
    ) -> None:
        self._pool = pool
        self._where = where  # for messages: the URL without its password
        self._idle = idle  # the pool's check, told when a borrower is done

    @classmethod
    def open(
        cls,
        url: str,
        *,
        max_connections: int = 4,
        timeout: float = 10.0,
        backfills: Backfills | None = None,
    ) -> PgStore:
        """Connect to the database `url` names, migrate its schema, and keep a pool open.

        The pool holds one to `max_connections` connections; `publish_lock` keeps one of
        them while it is held, so there must be at least two. `backfills`: the rules an
        upgrade of rows stored by an older version needs (`open_store` gives them).
        """
        where = describe(url)
        try:
            # One plain connection first: its error says why (refused, no such database,
            # authentication), where a pool would only time out.
            with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout))) as c:
                migrate(c, backfills)
        except psycopg.Error as e:
            reason = without_password(str(e), url)
            # Not `from e`: a traceback would print the unscrubbed text.
            raise StorageError(f"cannot open the store at {where}: {reason}") from None
        idle = _IdleCheck()
        pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, max_connections),
            kwargs={"autocommit": True},
            check=idle.check,
            open=False,
            timeout=timeout,
            name="aggregator-store",
        )
        try:
            pool.open(wait=True, timeout=timeout)
        except psycopg.Error as e:
            pool.close()
            reason = without_password(str(e), url)
            # Not `from e`: a traceback would print the unscrubbed text.
            raise StorageError(f"cannot open the store at {where}: {reason}") from None
        return cls(pool, where, idle)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A pooled connection (waiting at most `timeout` for one, default the pool's);
        psycopg's errors become StorageError."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                try:
                    yield conn
                finally:
                    self._idle.returned(conn)
        except PoolTimeout as e:
            # The pool keeps trying to reconnect meanwhile; its own warnings are muted.
            raise StorageError(f"the database does not answer ({self._where}): {e}") from e
        except psycopg.Error as e:
            raise StorageError(f"the store failed: {e}") from e

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _unanswered_transaction(self) -> Iterator[Connection]:
        """A transaction in pipeline mode: BEGIN, every statement and COMMIT go out together
        and are answered together, one round trip. An error in any of them is raised at the
        end, and nothing of the transaction is kept.

        BEGIN and COMMIT are statements of its own, not `conn.transaction()`: psycopg
        wraps that in pipelines of its own which wait for BEGIN's answer and for COMMIT's
        (three round trips where one does)."""
        with self._connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                # A failed statement left the transaction aborted, or the caller raised in
                # it: roll back, so the connection goes back to the pool clean.
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _apply(self, steps: Steps) -> list[int]:
        counts = []
        with self._transaction() as conn, conn.cursor() as cursor:
            for sql, params in steps:
                cursor.executemany(sql, params)
                counts.append(cursor.rowcount)
        return counts

    _schedule_time = staticmethod(_as_is)
    _read_time = staticmethod(_utc)
    _entry_time = staticmethod(seconds)

    def _write_entries(self, tx: Any, source: str, writes: EntryWrites) -> None:
        upsert_entries(tx, source, writes)

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return schema_version(conn)

    def ping(self) -> None:
        """Raise StorageError unless the store answers (within PING_SECONDS: a health
        check must answer while the database is away)."""
        with self._connection(timeout=PING_SECONDS) as conn:
            conn.execute("SELECT 1 FROM sources LIMIT 1").fetchone()

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints and vacuums by itself."""

    # -- sources ---------------------------------------------------------------------------

    def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> list[Schedule]:
        """As `SqliteStore.sync_sources`. Only new sources and changed URLs are written, in name
        order: `INSERT … ON CONFLICT DO UPDATE` locks a row even when it changes nothing, and
        a daemon syncing thousands of sources must not hold every row while the other
        daemons wait to record their polls (their leases would run out meanwhile)."""
        wanted = sorted(sources, key=lambda s: s.name)
        names = [s.name for s in wanted]
        with self._transaction() as conn:
            known = dict(
                conn.execute(
                    "SELECT name, url FROM sources WHERE name = ANY(%s::text[])", (names,)
                ).fetchall()
            )
            changed = [(s.name, s.url, seconds(now)) for s in wanted if known.get(s.name) != s.url]
            if changed:
                with conn.cursor() as cursor:
                    cursor.executemany(self._sql(self._UPSERT_SOURCE), changed)
                # A new URL's document is not the one its items came from.
                conn.execute(
                    "DELETE FROM source_items WHERE name = ANY(%s::text[])",
                    ([name for name, _, _ in changed],),
                )
            found = conn.execute(
                f"SELECT {rows.SCHEDULE_COLUMNS} FROM sources WHERE name = ANY(%s::text[])",
                (names,),
            ).fetchall()
        return [rows.schedule_from_row(r, _utc) for r in found]

    def reschedule(self, moves: Sequence[Reschedule]) -> None:
        """Move next polls, each only if it is still the one the move was decided from."""
        if not moves:
            return
        with self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE sources SET next_poll = %s WHERE name = %s AND next_poll = %s",
                [(m.to, m.name, m.was) for m in moves],
            )

    def source_state(self, name: str) -> SourceState | None:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {rows.STATE_COLUMNS} FROM sources WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else rows.state_from_row(row, _utc)

    def source_states(self) -> list[SourceState]:
        """Every source the store knows, configured or not, by name."""
        with self._connection() as conn:
            found = conn.execute(f"SELECT {rows.STATE_COLUMNS} FROM sources ORDER BY name")
            return [rows.state_from_row(r, _utc) for r in found.fetchall()]

    def poll_states(self, names: Sequence[str]) -> dict[str, SourceState]:
        """What polls of `names` need, their subscriptions included, in one round trip (no
        count of entries)."""
        with self._connection() as conn:
            found = conn.execute(
                rows.poll_state_query("sources.name = ANY(%s::text[])"), (list(names),)
            ).fetchall()
        return {r[0]: rows.poll_state_from_row(r, _utc) for r in found}

    def due_sources(self, names: Sequence[str], now: datetime) -> list[str]:
        """Configured sources whose next poll has come (never polled ones first)."""
        with self._connection() as conn:
            found = conn.execute(
                """
                SELECT name FROM sources
                WHERE name = ANY(%s::text[]) AND disabled IS NULL
                  AND (next_poll IS NULL OR next_poll <= %s)
                ORDER BY next_poll IS NOT NULL, next_poll, name
                """,
                (list(names), now),
            ).fetchall()
        return [r[0] for r in found]

    def feed_metas(self) -> dict[str, FeedMeta]:
        """What each source's feed said about itself when last parsed (for credits)."""
        with self._connection() as conn:
            found = conn.execute(f"SELECT {rows.FEED_COLUMNS} FROM sources").fetchall()
        return dict(rows.feed_from_row(r) for r in found)

    # -- entries ---------------------------------------------------------------------------

    def known_entries(self, source: str, ids: Sequence[str]) -> KnownEntries:
        """As `SqliteStore.known_entries`, in one statement (one round trip)."""
        if not ids:
            return KnownEntries()
        with self._connection() as conn:
            found = conn.execute(
                """
                SELECT entry_id, content_hash, published, updated FROM entries
                WHERE source = %(source)s AND entry_id = ANY(%(ids)s::text[])
                UNION ALL
                SELECT entry_id, NULL, NULL, NULL FROM tombstones
                WHERE source = %(source)s AND entry_id = ANY(%(ids)s::text[])
                """,
                {"source": source, "ids": list(ids)},
            ).fetchall()
        signatures = dict(rows.signature_from_row(r, _utc) for r in found if r[1] is not None)
        return KnownEntries(signatures, frozenset(r[0] for r in found if r[1] is None))

    def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int, *, by_source: bool = False
    ) -> list[StoredEntry]:
        """The newest entries of `sources` with `sort_date >= since`: only what can be published.

        PostgreSQL's planner, with its statistics, picks the date or the (source, sort_date)
        index itself: `by_source` changes nothing here.
        """
        with self._connection() as conn:
            found = conn.execute(
                f"""
                SELECT {rows.ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%s::text[]) AND sort_date >= %s
                ORDER BY sort_date DESC, source, entry_id
                LIMIT %s
                """,
                (list(sources), seconds(since), limit),
            ).fetchall()
        return [_entry(r) for r in found]

    def earlier_copies(
        self, sources: Iterable[str], keys: StoryKeys, before: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries placed before `before` with one of the story `keys` (link or title):
        at most `limit`, the first seen (they decide a story's first copy)."""
        if not keys.links and not keys.titles:
            return []
        with self._connection() as conn:
            found = conn.execute(
                f"""
                SELECT {rows.ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%s::text[]) AND sort_date < %s
                  AND (link_key = ANY(%s::text[]) OR title_key = ANY(%s::text[]))
                ORDER BY first_seen, sort_date, source, entry_id
                LIMIT %s
                """,
                (list(sources), seconds(before), sorted(keys.links), sorted(keys.titles), limit),
            ).fetchall()
        return [_entry(r) for r in found]

    def prune(self, before: datetime, now: datetime) -> int:
        """Retention: delete entries placed before `before`, leaving tombstones of their ids."""
        cutoff = seconds(before)
        with self._transaction() as conn:
            # Their sources' entries change: publishing must not take them as unchanged.
            conn.execute(
                "UPDATE sources SET entries_version = entries_version + 1 WHERE name IN "
                "(SELECT DISTINCT source FROM entries WHERE sort_date < %s)",
                (cutoff,),
            )
            conn.execute(
                """
                INSERT INTO tombstones (source, entry_id, last_seen, sort_date, link_key,
                    title_key, stored_in)
                SELECT source, entry_id, %s, sort_date, link_key, title_key,
                    pg_current_xact_id()
                FROM entries WHERE sort_date < %s
                ON CONFLICT (source, entry_id) DO UPDATE SET last_seen = excluded.last_seen,
                    sort_date = excluded.sort_date, link_key = excluded.link_key,
                    title_key = excluded.title_key, stored_in = excluded.stored_in
                """,
                (seconds(now), cutoff),
            )
            deleted = conn.execute("DELETE FROM entries WHERE sort_date < %s", (cutoff,)).rowcount
            # `before` is now minus the retention period: the same span for tombstones.
            conn.execute("DELETE FROM tombstones WHERE last_seen < %s", (cutoff,))
        return deleted

    # -- archives: what changed, and one day's entries --------------------------------------

    def entry_marks(self, sources: Iterable[str], since: str | None, limit: int) -> EntryMarks:
        """As `SqliteStore.entry_marks`. The token is a snapshot (`pg_current_snapshot()`),
        taken first; what changed since a token is what its snapshot did not see: exact
        however transactions interleave and commit (a sequence or a clock would miss a
        transaction that began before a publish and committed after it)."""
        with self._connection() as conn:
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            assert row is not None
            token = str(row[0])
            if since is None:
                where = "source = ANY(%(sources)s::text[])"
            elif _SNAPSHOT.fullmatch(since):
                where = (
                    "stored_in >= pg_snapshot_xmin(%(since)s::pg_snapshot)"
                    " AND NOT pg_visible_in_snapshot(stored_in, %(since)s::pg_snapshot)"
                    " AND source = ANY(%(sources)s::text[])"
                )
            else:  # not a token of this store's: everything may have changed
                return EntryMarks(token, complete=False)
            sql = f"SELECT {rows.MARK_COLUMNS} FROM entries WHERE {where}"
            if since is not None:  # and the entries retention deleted since (tombstones)
                sql += (
                    f" UNION ALL SELECT {rows.MARK_COLUMNS} FROM tombstones"
                    f" WHERE {where} AND sort_date IS NOT NULL"
                )
            found = conn.execute(
                sql + " LIMIT %(limit)s",
                {"sources": list(sources), "since": since, "limit": limit + 1},
            ).fetchall()
        marks = tuple(rows.mark_from_row(r, _utc) for r in found[:limit])
        return EntryMarks(token, marks, complete=len(found) <= limit)

    def story_dates(self, sources: Iterable[str], keys: StoryKeys, limit: int) -> list[datetime]:
        """As `SqliteStore.story_dates`."""
        if not keys.links and not keys.titles:
            return []
        with self._connection() as conn:
            found = conn.execute(
                """
                SELECT sort_date FROM entries
                WHERE source = ANY(%s::text[])
                  AND (link_key = ANY(%s::text[]) OR title_key = ANY(%s::text[]))
                LIMIT %s
                """,
                (list(sources), sorted(keys.links), sorted(keys.titles), limit),
            ).fetchall()
        return [r[0].astimezone(UTC) for r in found]

    def entries_between(
        self,
        sources: Iterable[str],
        start: datetime,
        end: datetime,
        limit: int,
        *,
        by_source: bool = False,
    ) -> list[StoredEntry]:
        """As `SqliteStore.entries_between`; PostgreSQL's planner picks the index itself:
        `by_source` changes nothing here."""
        with self._connection() as conn:
            found = conn.execute(
                f"""
                SELECT {rows.ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%s::text[]) AND sort_date >= %s AND sort_date < %s
                ORDER BY sort_date, source, entry_id
                LIMIT %s
                """,
                (list(sources), seconds(start), seconds(end), limit),
            ).fetchall()
        return [_entry(r) for r in found]

    def copies_outside(
        self, sources: Iterable[str], start: datetime, end: datetime, limit: int
    ) -> list[StoredEntry]:
        """As `SqliteStore.copies_outside`."""
        inside = """
            SELECT {key} FROM entries
            WHERE source = ANY(%(sources)s::text[]) AND sort_date >= %(start)s
              AND sort_date < %(end)s AND {key} IS NOT NULL
        """
        with self._connection() as conn:
            found = conn.execute(
                f"""
                SELECT {rows.ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%(sources)s::text[])
                  AND (sort_date < %(start)s OR sort_date >= %(end)s)
                  AND (link_key IN ({inside.format(key="link_key")})
                       OR title_key IN ({inside.format(key="title_key")}))
                ORDER BY first_seen, sort_date, source, entry_id
                LIMIT %(limit)s
                """,
                {
                    "sources": list(sources),
                    "start": seconds(start),
                    "end": seconds(end),
                    "limit": limit,
                },
            ).fetchall()
        return [_entry(r) for r in found]

    def oldest_entry(self, sources: Iterable[str]) -> datetime | None:
        """As `SqliteStore.oldest_entry`."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT sort_date FROM entries WHERE source = ANY(%s::text[])"
                " ORDER BY sort_date LIMIT 1",
                (list(sources),),
            ).fetchone()
        return None if found is None else found[0].astimezone(UTC)

    def latest_before(self, sources: Iterable[str], before: datetime) -> datetime | None:
        """As `SqliteStore.latest_before`."""
        with self._connection() as conn:
            found = conn.execute(
                "SELECT sort_date FROM entries WHERE source = ANY(%s::text[]) AND sort_date < %s"
                " ORDER BY sort_date DESC LIMIT 1",
                (list(sources), seconds(before)),
            ).fetchone()
        return None if found is None else found[0].astimezone(UTC)

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
        """Claim for `owner`, until `now + lease`, the sources due by `due_by` (default `now`)
        that nobody else holds.

        Rows another daemon is claiming this instant are skipped, not waited for
        (`SKIP LOCKED`); one it has just claimed no longer qualifies when re-checked.

        The names travel as one newline-separated string (source names never hold one, see
        `config.SOURCE_NAME`): psycopg builds an array parameter element by element in
        Python, ~3 ms per 1,000 names, and a daemon sends every name it knows each claim.
        Never prepared, so the split is planned as a constant (a hashed `= ANY`).
        """
        if any("\n" in name for name in names):
            raise ValueError("a source name cannot contain a newline")
        with self._connection() as conn:
            found = conn.execute(
                """
                WITH due AS (
                    SELECT name FROM sources
                    WHERE name = ANY(string_to_array(%(names)s, E'\\n')) AND disabled IS NULL
                      AND (next_poll IS NULL OR next_poll <= %(due)s)
                      AND (claimed_until IS NULL OR claimed_until <= %(now)s)
                    ORDER BY next_poll IS NOT NULL, next_poll, name
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ), claimed AS (
                    UPDATE sources SET claimed_by = %(owner)s, claimed_until = %(until)s
                    FROM due WHERE sources.name = due.name
                    RETURNING sources.name, sources.next_poll
                )
                SELECT name FROM claimed ORDER BY next_poll IS NOT NULL, next_poll, name
                """,
                {
                    "names": "\n".join(names),
                    "now": now,
                    "due": due_by if due_by is not None else now,
                    "limit": limit,
                    "owner": owner,
                    "until": now + lease,
                },
                prepare=False,
            ).fetchall()
        return [r[0] for r in found]

    @contextmanager
    def publish_lock(self) -> Iterator[None]:
        """Held while publishing: one publisher at a time among all daemons of this database.

        A session advisory lock on a pooled connection kept for the duration; if the
        holder dies, PostgreSQL drops the lock with its connection.
        """
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_PUBLISH_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_PUBLISH_LOCK,))

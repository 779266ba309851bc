"""The shared store: PostgreSQL, for several daemons polling one source list.

It implements `aggregator.store.StoreAPI` with the semantics of the SQLite `SqliteStore`; one
body of contract tests (tests/test_store_contract.py) runs against both. Besides
`aggregator.store` it is the only module that speaks SQL.

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
- The schema's version is the highest row of `schema_migrations`; migrations run in one
  transaction under an advisory lock, so daemons starting together migrate once.

It must not hold a transaction open across a network fetch or any other slow work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from aggregator.errors import StorageError
from aggregator.policy import ServerHints, is_overdue_schedule, next_poll
from aggregator.settings import SourceConfig
from aggregator.store.records import SourceState, StoreResult
from aggregator.store.rows import state_from_row
from aggregator.text import story_keys
from aggregator.timeline import CLOCK_SKEW, order_date
from aggregator.types import ParsedEntry, ParsedFeed, SourceCredit, StoredEntry, Validators

Connection = psycopg.Connection[TupleRow]

_MIGRATIONS: tuple[str, ...] = (
    # 1: the schema as SQLite has it at its version 7: sources with fetch state and claims,
    # entries keyed by (source, entry_id) with story keys, tombstones of pruned entries.
    """
    CREATE TABLE sources (
        name          text COLLATE "C" PRIMARY KEY,
        url           text NOT NULL,
        title         text,
        site_url      text,
        feed_id       text,
        etag          text,
        last_modified text,
        last_polled   timestamptz,
        last_success  timestamptz,
        last_outcome  text,
        last_error    text,
        failures      integer NOT NULL DEFAULT 0,
        added         timestamptz NOT NULL,
        next_poll     timestamptz,
        retry_after   timestamptz,
        moved_to      text,
        disabled      text,
        body_hash     text,
        lifetime      double precision,
        claimed_by    text,
        claimed_until timestamptz
    );
    CREATE INDEX sources_by_next_poll ON sources (next_poll);
    CREATE TABLE entries (
        source       text COLLATE "C" NOT NULL,
        entry_id     text COLLATE "C" NOT NULL,
        title        text NOT NULL,
        link         text,
        summary_html text NOT NULL,
        teaser       text NOT NULL,
        author       text,
        categories   text[] NOT NULL,
        published    timestamptz,
        updated      timestamptz,
        first_seen   timestamptz NOT NULL,
        sort_date    timestamptz NOT NULL,
        content_hash text NOT NULL,
        link_key     text,
        title_key    text,
        PRIMARY KEY (source, entry_id)
    );
    CREATE INDEX entries_by_date ON entries (sort_date DESC);
    CREATE INDEX entries_by_link_key ON entries (link_key);
    CREATE INDEX entries_by_title_key ON entries (title_key);
    CREATE TABLE tombstones (
        source    text COLLATE "C" NOT NULL,
        entry_id  text COLLATE "C" NOT NULL,
        last_seen timestamptz NOT NULL,
        PRIMARY KEY (source, entry_id)
    );
    CREATE INDEX tombstones_by_last_seen ON tombstones (last_seen);
    """,
    # 2: as SQLite's 8: the files last published, which every daemon copies and serves.
    """
    CREATE TABLE published (
        name        text COLLATE "C" PRIMARY KEY,
        fingerprint text NOT NULL,
        data        bytea NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Advisory lock keys, per database: bigints spelling "aggr-mig" and "aggr-pub"; the int4
# namespace "aggr" pairs with a hash of a source's name to serialize writes of its entries.
_MIGRATE_LOCK = int.from_bytes(b"aggr-mig", "big")
_PUBLISH_LOCK = int.from_bytes(b"aggr-pub", "big")
_SOURCE_LOCKS = int.from_bytes(b"aggr", "big")
PING_SECONDS = 3.0  # how long a health check waits for a pooled connection


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _required_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _seconds(value: datetime | None) -> datetime | None:
    """An entry date as the SQLite store keeps it: UTC, cut to the whole second."""
    return None if value is None else value.astimezone(UTC).replace(microsecond=0)


def describe(url: str) -> str:
    """A connection URL or conninfo fit for a message: the password left out."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unreadable PostgreSQL URL"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def _without_password(message: str, url: str) -> str:
    """An error text with the URL's password blotted out, should libpq ever quote it."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return message.replace(str(password), "***") if password else message


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
        categories=tuple(r[7]),
        published=_utc(r[8]),
        updated=_utc(r[9]),
        first_seen=_required_utc(r[10]),
        sort_date=_required_utc(r[11]),
    )


_STATE_COLUMNS = """
    SELECT name, url, title, site_url, etag, last_modified, last_polled, last_success,
           last_outcome, last_error, failures,
           (SELECT count(*) FROM entries WHERE entries.source = sources.name), next_poll,
           retry_after, moved_to, disabled, body_hash, lifetime
    FROM sources
"""


class PgStore:
    """A pool of connections to one database; open with `PgStore.open(url)`, end with `close()`.

    Thread-safe: each call borrows a pooled connection, so callers in several threads
    (`remote`, see `store.adapter.AsyncStore`) wait on the server at the same time.
    """

    remote = True

    def __init__(self, pool: ConnectionPool[Connection], where: str = "PostgreSQL") -> None:
        self._pool = pool
        self._where = where  # for messages: the URL without its password

    @classmethod
    def open(cls, url: str, *, max_connections: int = 4, timeout: float = 10.0) -> PgStore:
        """Connect to the database `url` names, migrate its schema, and keep a pool open.

        The pool holds one to `max_connections` connections; `publish_lock` keeps one of
        them while it is held, so there must be at least two.
        """
        where = describe(url)
        try:
            # One plain connection first: its error says why (refused, no such database,
            # authentication), where a pool would only time out.
            with psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout))) as c:
                _migrate(c)
        except psycopg.Error as e:
            reason = _without_password(str(e), url)
            # Not `from e`: a traceback would print the unscrubbed text.
            raise StorageError(f"cannot open the store at {where}: {reason}") from None
        pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, max_connections),
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            open=False,
            timeout=timeout,
            name="aggregator-store",
        )
        try:
            pool.open(wait=True, timeout=timeout)
        except psycopg.Error as e:
            pool.close()
            reason = _without_password(str(e), url)
            # Not `from e`: a traceback would print the unscrubbed text.
            raise StorageError(f"cannot open the store at {where}: {reason}") from None
        return cls(pool, where)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self, timeout: float | None = None) -> Iterator[Connection]:
        """A pooled connection (waiting at most `timeout` for one, default the pool's);
        psycopg's errors become StorageError."""
        try:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout as e:
            # The pool keeps trying to reconnect meanwhile; its own warnings are muted.
            raise StorageError(f"the database does not answer ({self._where}): {e}") from e
        except psycopg.Error as e:
            raise StorageError(f"the store failed: {e}") from e

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            return _schema_version(conn)

    def ping(self) -> None:
        """Raise StorageError unless the store answers (within PING_SECONDS: a health
        check must answer while the database is away)."""
        with self._connection(timeout=PING_SECONDS) as conn:
            conn.execute("SELECT 1 FROM sources LIMIT 1").fetchone()

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints and vacuums by itself."""

    # -- sources ---------------------------------------------------------------------------

    def sync_sources(self, sources: Iterable[SourceConfig], now: datetime) -> None:
        """As `SqliteStore.sync_sources`. Only new sources and changed URLs are written, in name
        order: `INSERT … ON CONFLICT DO UPDATE` locks a row even when it changes nothing, and
        a daemon syncing thousands of sources must not hold every row while the other
        daemons wait to record their polls (their leases would run out meanwhile)."""
        wanted = sorted(sources, key=lambda s: s.name)
        with self._transaction() as conn:
            known = dict(
                conn.execute(
                    "SELECT name, url FROM sources WHERE name = ANY(%s::text[])",
                    ([s.name for s in wanted],),
                ).fetchall()
            )
            for source in wanted:
                if known.get(source.name) == source.url:
                    continue
                conn.execute(
                    """
                    INSERT INTO sources (name, url, added) VALUES (%s, %s, %s)
                    ON CONFLICT (name) DO UPDATE SET
                        url = excluded.url, etag = NULL, last_modified = NULL,
                        failures = 0, next_poll = NULL, retry_after = NULL, moved_to = NULL,
                        disabled = NULL, body_hash = NULL, lifetime = NULL
                    WHERE sources.url <> excluded.url
                    """,
                    (source.name, source.url, _seconds(now)),
                )
            schedules = {
                row[0]: row[1:]
                for row in conn.execute(
                    """
                    SELECT name, last_polled, next_poll, failures, retry_after, lifetime
                    FROM sources WHERE name = ANY(%s::text[])
                    """,
                    ([s.name for s in wanted],),
                )
            }
            for source in wanted:
                last, scheduled, failures, wait, lifetime = schedules[source.name]
                if last and scheduled:
                    hints = ServerHints(
                        retry_after=_utc(wait),
                        lifetime=timedelta(seconds=lifetime) if lifetime else None,
                    )
                    last_polled, next_at = _required_utc(last), _required_utc(scheduled)
                    if is_overdue_schedule(next_at, last_polled, source.interval, failures, hints):
                        when = next_poll(source.name, source.interval, last_polled, failures, hints)
                        conn.execute(
                            "UPDATE sources SET next_poll = %s WHERE name = %s",
                            (when, source.name),
                        )

    def source_state(self, name: str) -> SourceState | None:
        with self._connection() as conn:
            row = conn.execute(_STATE_COLUMNS + " WHERE name = %s", (name,)).fetchone()
        return None if row is None else state_from_row(row, _utc)

    def source_states(self) -> list[SourceState]:
        """Every source the store knows, configured or not, by name."""
        with self._connection() as conn:
            rows = conn.execute(_STATE_COLUMNS + " ORDER BY name").fetchall()
        return [state_from_row(r, _utc) for r in rows]

    def due_sources(self, names: Sequence[str], now: datetime) -> list[str]:
        """Configured sources whose next poll has come (never polled ones first)."""
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT name FROM sources
                WHERE name = ANY(%s::text[]) AND disabled IS NULL
                  AND (next_poll IS NULL OR next_poll <= %s)
                ORDER BY next_poll IS NOT NULL, next_poll, name
                """,
                (list(names), now),
            ).fetchall()
        return [r[0] for r in rows]

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
        """As `SqliteStore.record_success`; the poll is over, so its claim ends too."""
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE sources SET etag = %s, last_modified = %s, last_polled = %s,
                    last_success = %s, last_outcome = %s, last_error = NULL, failures = 0,
                    next_poll = %s, retry_after = NULL, moved_to = coalesce(%s, moved_to),
                    body_hash = coalesce(%s, body_hash), claimed_by = NULL, claimed_until = NULL
                WHERE name = %s AND url = coalesce(%s, url)
                """,
                (
                    validators.etag,
                    validators.last_modified,
                    _seconds(now),
                    _seconds(now),
                    outcome,
                    next_poll,
                    moved_to,
                    body_hash,
                    name,
                    url,
                ),
            )
            if feed is not None:
                lifetime = feed.lifetime.total_seconds() if feed.lifetime else None
                conn.execute(
                    """
                    UPDATE sources SET title = %s, site_url = %s, feed_id = %s, lifetime = %s
                    WHERE name = %s AND url = coalesce(%s, url)
                    """,
                    (feed.title, feed.link, feed.feed_id, lifetime, name, url),
                )
            else:
                conn.execute(
                    "UPDATE tombstones SET last_seen = %s WHERE source = %s",
                    (_seconds(now), name),
                )

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
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE sources SET last_polled = %s, last_outcome = 'failed', last_error = %s,
                    failures = failures + 1, next_poll = %s, retry_after = %s,
                    claimed_by = NULL, claimed_until = NULL
                WHERE name = %s AND url = coalesce(%s, url)
                """,
                (_seconds(now), error, next_poll, retry_after, name, url),
            )

    def forget_move(self, name: str) -> None:
        """Poll the configured URL again instead of where a permanent redirect led."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE sources SET moved_to = NULL, etag = NULL, last_modified = NULL "
                "WHERE name = %s",
                (name,),
            )

    def disable(self, name: str, reason: str, now: datetime, *, url: str | None = None) -> None:
        """Stop polling a source (410 Gone) until its URL in feeds.toml changes."""
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE sources SET disabled = %s, last_polled = %s, last_outcome = 'disabled',
                    last_error = %s, next_poll = NULL, claimed_by = NULL, claimed_until = NULL
                WHERE name = %s AND url = coalesce(%s, url)
                """,
                (reason, _seconds(now), reason, name, url),
            )

    def source_credits(self, sources: Sequence[SourceConfig]) -> dict[str, SourceCredit]:
        """How each configured source is credited: the operator's title, else the feed's own."""
        with self._connection() as conn:
            rows = conn.execute("SELECT name, title, site_url, feed_id FROM sources").fetchall()
        known = {row[0]: row[1:] for row in rows}
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

    def first_added(self) -> datetime | None:
        """When the first source was added: a stable date for a feed with nothing in it yet."""
        with self._connection() as conn:
            row = conn.execute("SELECT min(added) FROM sources").fetchone()
        return None if row is None else _utc(row[0])

    # -- entries ---------------------------------------------------------------------------

    def store_entries(
        self, source: str, entries: Sequence[ParsedEntry], now: datetime
    ) -> StoreResult:
        """Insert new entries and update changed ones; `first_seen` and `sort_date` never move."""
        if not entries:
            return StoreResult(0, 0)
        ids = [e.entry_id for e in entries]
        with self._transaction() as conn:
            # Two writers of one source's entries (a lease that ran out mid-poll) take turns.
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_SOURCE_LOCKS, source))
            known = {
                row[0]: (row[1], _utc(row[2]), _utc(row[3]))
                for row in conn.execute(
                    """
                    SELECT entry_id, content_hash, published, updated FROM entries
                    WHERE source = %s AND entry_id = ANY(%s::text[])
                    """,
                    (source, ids),
                )
            }
            buried = {
                row[0]
                for row in conn.execute(
                    """
                    SELECT entry_id FROM tombstones
                    WHERE source = %s AND entry_id = ANY(%s::text[])
                    """,
                    (source, ids),
                )
            }
            if buried:
                # Deleted by retention but still in the feed: not new; remember it is still there.
                conn.execute(
                    """
                    UPDATE tombstones SET last_seen = %s
                    WHERE source = %s AND entry_id = ANY(%s::text[])
                    """,
                    (_seconds(now), source, sorted(buried)),
                )
            new_rows: list[tuple[Any, ...]] = []
            changed_rows: list[tuple[Any, ...]] = []
            undated = 0
            for e in entries:
                if e.entry_id in buried:
                    continue
                # A future `updated` is the publisher's clock: no date at all until it has come.
                updated = None if e.updated and e.updated > now + CLOCK_SKEW else e.updated
                fields = (
                    e.title, e.link, e.summary_html, e.teaser, e.author, list(e.categories),
                    _seconds(e.published), _seconds(updated), e.content_hash,
                    e.story_link, e.story_title,
                )  # fmt: skip
                signature = (e.content_hash, _seconds(e.published), _seconds(updated))
                if e.entry_id not in known:
                    sort_date = order_date(e.published, updated, now)
                    if e.published is None and updated is None:
                        # Undated items seen together keep their document order, a second apart.
                        sort_date -= timedelta(seconds=undated)
                        undated += 1
                    new_rows.append(
                        (source, e.entry_id, *fields, _seconds(now), _seconds(sort_date))
                    )
                elif known[e.entry_id] != signature:
                    changed_rows.append((*fields, source, e.entry_id))
            with conn.cursor() as cursor:
                if new_rows:
                    cursor.executemany(
                        """
                        INSERT INTO entries (source, entry_id, title, link, summary_html,
                            teaser, author, categories, published, updated, content_hash,
                            link_key, title_key, first_seen, sort_date)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                        """,
                        new_rows,
                    )
                if changed_rows:
                    cursor.executemany(
                        """
                        UPDATE entries SET title = %s, link = %s, summary_html = %s,
                            teaser = %s, author = %s, categories = %s, published = %s,
                            updated = %s, content_hash = %s, link_key = %s, title_key = %s
                        WHERE source = %s AND entry_id = %s
                        """,
                        changed_rows,
                    )
        return StoreResult(new=len(new_rows), updated=len(changed_rows))

    def recent_entries(
        self, sources: Iterable[str], since: datetime, limit: int
    ) -> list[StoredEntry]:
        """The newest entries of `sources` with `sort_date >= since`: only what can be published."""
        with self._connection() as conn:
            rows = conn.execute(
                f"""
                SELECT {_ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%s::text[]) AND sort_date >= %s
                ORDER BY sort_date DESC, source, entry_id
                LIMIT %s
                """,
                (list(sources), _seconds(since), limit),
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def earlier_copies(
        self, sources: Iterable[str], of: Iterable[StoredEntry], before: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries placed before `before` that share a story key (link or title) with `of`:
        at most `limit`, the first seen (they decide a story's first copy)."""
        links, titles = set(), set()
        for entry in of:
            link, title = story_keys(entry.link, entry.title)
            if link:
                links.add(link)
            if title:
                titles.add(title)
        if not links and not titles:
            return []
        with self._connection() as conn:
            rows = conn.execute(
                f"""
                SELECT {_ENTRY_COLUMNS} FROM entries
                WHERE source = ANY(%s::text[]) AND sort_date < %s
                  AND (link_key = ANY(%s::text[]) OR title_key = ANY(%s::text[]))
                ORDER BY first_seen, sort_date, source, entry_id
                LIMIT %s
                """,
                (list(sources), _seconds(before), sorted(links), sorted(titles), limit),
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    def prune(self, before: datetime, now: datetime) -> int:
        """Retention: delete entries placed before `before`, leaving tombstones of their ids."""
        cutoff = _seconds(before)
        with self._transaction() as conn:
            conn.execute(
                """
                INSERT INTO tombstones (source, entry_id, last_seen)
                SELECT source, entry_id, %s FROM entries WHERE sort_date < %s
                ON CONFLICT (source, entry_id) DO UPDATE SET last_seen = excluded.last_seen
                """,
                (_seconds(now), cutoff),
            )
            deleted = conn.execute("DELETE FROM entries WHERE sort_date < %s", (cutoff,)).rowcount
            # `before` is now minus the retention period: the same span for tombstones.
            conn.execute("DELETE FROM tombstones WHERE last_seen < %s", (cutoff,))
        return deleted

    def count_entries(self, source: str | None = None) -> int:
        with self._connection() as conn:
            if source is None:
                row = conn.execute("SELECT count(*) FROM entries").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM entries WHERE source = %s", (source,)
                ).fetchone()
        assert row is not None  # count(*) always answers
        return int(row[0])

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
            rows = conn.execute(
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
        return [r[0] for r in rows]

    def release(self, name: str, owner: str) -> None:
        """Give back `owner`'s claim on a source (a claim since taken over is left alone)."""
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE sources SET claimed_by = NULL, claimed_until = NULL
                WHERE name = %s AND claimed_by = %s
                """,
                (name, owner),
            )

    def claim_holders(self, now: datetime) -> list[str]:
        """The owners holding a lease that has not run out at `now`, by name."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT claimed_by FROM sources WHERE claimed_until > %s ORDER BY 1",
                (now,),
            ).fetchall()
        return [r[0] for r in rows]

    def release_all(self, owner: str) -> int:
        """End every claim of `owner` (known dead); returns how many there were."""
        with self._transaction() as conn:
            released = conn.execute(
                "UPDATE sources SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s",
                (owner,),
            ).rowcount
        return int(released)

    # -- the published snapshot --------------------------------------------------------------

    def save_published(self, fingerprint: str, files: Mapping[str, bytes]) -> None:
        """Replace the stored snapshot of the published files with `files`, all at once."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM published")
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO published (name, fingerprint, data) VALUES (%s, %s, %s)",
                    [(name, fingerprint, data) for name, data in files.items()],
                )

    def published_fingerprint(self) -> str | None:
        """The fingerprint of the stored snapshot (of its render input), None before any."""
        with self._connection() as conn:
            row = conn.execute("SELECT fingerprint FROM published LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def load_published(self) -> tuple[str, dict[str, bytes]] | None:
        """The stored snapshot, read in one statement: (fingerprint, {name: bytes})."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT name, fingerprint, data FROM published ORDER BY name"
            ).fetchall()
        if not rows:
            return None
        return str(rows[0][1]), {str(name): bytes(data) for name, _, data in rows}

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


def _schema_version(conn: Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return 0 if row is None else int(row[0])


def _migrate(conn: Connection) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; refuse a newer one."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the store has schema version {version}, newer than this aggregator knows "
                f"({SCHEMA_VERSION}); upgrade aggregator"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute(_MIGRATIONS[number])
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number + 1,))

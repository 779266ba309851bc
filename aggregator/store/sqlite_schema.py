"""The SQLite store's schema: its migrations, in order, and how they are applied on open.

The version lives in `PRAGMA user_version`. Each migration runs in its own write
transaction, so stores opened at the same moment migrate once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

from aggregator.errors import StorageError
from aggregator.store.backfill import backfill_entry_text, needed
from aggregator.store.records import Backfills

MIGRATIONS: tuple[str, ...] = (
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
    # Rows stored before hold a cut teaser: `backfill_entry_text` recomputes them.
    """
    -- no schema change: the backfill rewrites the column
    """,
    # 10: WebSub subscriptions, one per source: what any daemon sharing the store needs to
    # answer a hub's verification or authenticate a push to the callback token.
    """
    CREATE TABLE websub_subscriptions (
        source        TEXT PRIMARY KEY,
        source_url    TEXT NOT NULL,
        hub           TEXT NOT NULL,
        topic         TEXT NOT NULL,
        token         TEXT NOT NULL UNIQUE,
        secret        TEXT NOT NULL,
        state         TEXT NOT NULL,
        requested     TEXT NOT NULL,
        lease_seconds INTEGER,
        lease_expires TEXT,
        last_error    TEXT
    );
    """,
    # 11: the built-in WebSub hub's subscribers. A delivery is due while `wanted` (bumped by
    # each publish that changed the topic) is ahead of `delivered`, once `next_attempt` has
    # come; a daemon delivering holds it (`claimed_by` until `claimed_until`).
    """
    CREATE TABLE hub_subscriptions (
        topic         TEXT NOT NULL,
        callback      TEXT NOT NULL,
        secret        TEXT,
        lease_end     TEXT NOT NULL,
        state         TEXT NOT NULL DEFAULT 'active',
        failures      INTEGER NOT NULL DEFAULT 0,
        next_attempt  TEXT,
        wanted        INTEGER NOT NULL DEFAULT 0,
        delivered     INTEGER NOT NULL DEFAULT 0,
        claimed_by    TEXT,
        claimed_until TEXT,
        created       TEXT NOT NULL,
        PRIMARY KEY (topic, callback)
    );
    CREATE INDEX hub_subscriptions_by_lease_end ON hub_subscriptions (lease_end);
    """,
    # 12: channels. The published snapshot holds one set of files per publication (the root,
    # each channel), each with its own fingerprint; `name` is the path under output/, and
    # rows from before are the root's. A channel reads its few sources' entries through
    # (source, sort_date), not by walking every source's by date. `entries_version` counts
    # the writes that changed a source's entries: an unchanged channel is not even read. The
    # fingerprints are read through an index, not from rows that hold the files' bytes.
    """
    ALTER TABLE published ADD COLUMN publication TEXT NOT NULL DEFAULT '';
    CREATE INDEX IF NOT EXISTS entries_by_source_date ON entries (source, sort_date);
    ALTER TABLE sources ADD COLUMN entries_version INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS published_by_publication ON published (publication, fingerprint);
    """,
    # 13: the items of the last document parsed (digests and entry ids, as JSON), so the
    # next parse reads only the new and changed ones (`parse.partial`). NULL: none kept.
    """
    ALTER TABLE sources ADD COLUMN items TEXT;
    """,
    # 14: archives (issue 14). `stored_in`: the write that last stored an entry (new or
    # changed), from a counter each write transaction bumps (`entry_writes`), so a publish
    # reads only what was stored since its last one (writes are serialized: the counter's
    # order is the commit order). A tombstone keeps its entry's place and story keys and
    # the write (the prune) that made it: retention's deletions are read back like any
    # other change. The published snapshot becomes one row per file with its digest (it was
    # the publication's fingerprint), written file by file: archives are thousands of
    # files, of which a publish changes a few. Each publication's fingerprint and state
    # (its main files' render input, its archive days) are a row of `publications`. The old
    # snapshot is emptied: the next publish stores it again.
    """
    ALTER TABLE entries ADD COLUMN stored_in INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tombstones ADD COLUMN sort_date TEXT;
    ALTER TABLE tombstones ADD COLUMN link_key TEXT;
    ALTER TABLE tombstones ADD COLUMN title_key TEXT;
    ALTER TABLE tombstones ADD COLUMN stored_in INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS entries_by_stored_in ON entries (stored_in);
    CREATE INDEX IF NOT EXISTS tombstones_by_stored_in ON tombstones (stored_in);
    CREATE TABLE IF NOT EXISTS entry_writes (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        counter INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO entry_writes (id, counter) VALUES (1, 0);
    DELETE FROM published;
    ALTER TABLE published RENAME COLUMN fingerprint TO digest;
    CREATE TABLE IF NOT EXISTS publications (
        name        TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state       TEXT NOT NULL
    );
    """,
    # 15: the story-key indexes carry each entry's place, so looking for a day's stories on
    # other days (`copies_outside`) tells an entry of that day from a copy in the index
    # alone. Entries are WITHOUT ROWID: a row read through an index is a search of the
    # primary key, and the day's every key found its own entry that way (60 ms a day of
    # 3,500 entries, not 25).
    """
    DROP INDEX IF EXISTS entries_by_link_key;
    DROP INDEX IF EXISTS entries_by_title_key;
    CREATE INDEX IF NOT EXISTS entries_by_link_key_date ON entries (link_key, sort_date);
    CREATE INDEX IF NOT EXISTS entries_by_title_key_date ON entries (title_key, sort_date);
    """,
    # 16: the items of the last document parsed (13) in a table of their own. Every claim
    # and every poll's record rewrites its source's row, and ~4 KB of items spread the rows
    # over a leaf page for every five sources and an overflow page each: claiming 200
    # sources and recording their 304s wrote 400 pages to the WAL, 23 now (`test_store`).
    # Read and written only when a body is parsed. The old column is emptied, not dropped:
    # a daemon of the version before, still running during an upgrade, reads and writes it
    # (and parses whole) instead of failing every poll.
    """
    CREATE TABLE IF NOT EXISTS source_items (
        name  TEXT PRIMARY KEY REFERENCES sources (name),
        items TEXT NOT NULL
    );
    INSERT INTO source_items (name, items) SELECT name, items FROM sources WHERE items IS NOT NULL;
    UPDATE sources SET items = NULL WHERE items IS NOT NULL;
    """,
    # 17: the due claim's order (`next_poll`, then `name`) read from the index: with only
    # `next_poll` in it, SQLite sorted every never-polled source by name for each claim
    # (20 ms a claim, on the event loop, with 50,000 sources just added).
    """
    CREATE INDEX IF NOT EXISTS sources_by_next_poll_name ON sources (next_poll, name);
    DROP INDEX IF EXISTS sources_by_next_poll;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> Iterator[str]:
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


def enable_wal(db: sqlite3.Connection, patience: float = 10.0) -> None:
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


def backfill_story_keys(db: sqlite3.Connection, backfills: Backfills | None) -> None:
    """Schema 6: compute the story keys of entries stored before they existed.

    The rule is the caller's (`text.story_keys`, handed in by `open_store`): the store keeps
    keys, it does not know how they are made.
    """
    rows = db.execute("SELECT source, entry_id, link, title FROM entries").fetchall()
    if not rows:
        return
    keys = needed(backfills).story_keys
    db.executemany(
        "UPDATE entries SET link_key = ?, title_key = ? WHERE source = ? AND entry_id = ?",
        [(*keys(link, title), source, entry_id) for source, entry_id, link, title in rows],
    )


def _execute_once(db: sqlite3.Connection, statement: str) -> None:
    """Run a migration's statement; adding a column that is there already does nothing.

    SQLite has no `ADD COLUMN IF NOT EXISTS`: a store whose recorded version was set back
    (by hand, or by a test faking an older store) must still migrate.
    """
    try:
        db.execute(statement)
    except sqlite3.OperationalError as e:
        if not ("ADD COLUMN" in statement.upper() and "duplicate column name" in str(e)):
            raise


def migrate(
    db: sqlite3.Connection,
    transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
    backfills: Backfills | None,
    migrations: tuple[str, ...] | None = None,
) -> None:
    """Bring the schema to the latest version (of `migrations`, default all); refuse a newer."""
    steps = MIGRATIONS if migrations is None else migrations
    latest = len(steps)
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the store has schema version {version}, newer than this aggregator knows "
            f"({SCHEMA_VERSION}); upgrade aggregator"
        )
    for number in range(version, latest):
        with transaction() as tx:
            # Another process may have migrated while we waited for the write lock.
            if int(tx.execute("PRAGMA user_version").fetchone()[0]) > number:
                continue
            for statement in statements(steps[number]):
                _execute_once(tx, statement)
            if number + 1 == 6:
                backfill_story_keys(tx, backfills)
            if number + 1 == 9:
                backfill_entry_text(tx.cursor(), "?", backfills)
            tx.execute(f"PRAGMA user_version = {number + 1}")

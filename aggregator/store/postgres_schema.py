"""The PostgreSQL store's schema: its migrations, applied in one transaction under an
advisory lock, so daemons starting together migrate once; and how a URL is shown.

The schema's version is the highest row of `schema_migrations`.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from aggregator.errors import StorageError
from aggregator.store.backfill import backfill_entry_text
from aggregator.store.records import Backfills

Connection = psycopg.Connection[TupleRow]

MIGRATIONS: tuple[str, ...] = (
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
    # 3: as SQLite's 9: `teaser` holds the entry's text uncut, publishing cuts it; rows
    # stored before hold a cut teaser, which `backfill_entry_text` recomputes.
    """
    COMMENT ON COLUMN entries.teaser IS 'the plain text, uncut: publishing cuts the teaser'
    """,
    # 4: as SQLite's 10: WebSub subscriptions, one per source.
    """
    CREATE TABLE websub_subscriptions (
        source        text COLLATE "C" PRIMARY KEY,
        source_url    text NOT NULL,
        hub           text NOT NULL,
        topic         text NOT NULL,
        token         text COLLATE "C" NOT NULL UNIQUE,
        secret        text NOT NULL,
        state         text NOT NULL,
        requested     timestamptz NOT NULL,
        lease_seconds bigint,
        lease_expires timestamptz,
        last_error    text
    );
    """,
    # 5: as SQLite's 11: the built-in WebSub hub's subscribers and their deliveries.
    """
    CREATE TABLE hub_subscriptions (
        topic         text COLLATE "C" NOT NULL,
        callback      text COLLATE "C" NOT NULL,
        secret        text,
        lease_end     timestamptz NOT NULL,
        state         text NOT NULL DEFAULT 'active',
        failures      integer NOT NULL DEFAULT 0,
        next_attempt  timestamptz,
        wanted        bigint NOT NULL DEFAULT 0,
        delivered     bigint NOT NULL DEFAULT 0,
        claimed_by    text,
        claimed_until timestamptz,
        created       timestamptz NOT NULL,
        PRIMARY KEY (topic, callback)
    );
    CREATE INDEX hub_subscriptions_by_lease_end ON hub_subscriptions (lease_end);
    """,
    # 6: as SQLite's 12: one set of files per publication (the root, each channel), each with
    # its own fingerprint, `name` the path under output/ (rows from before are the root's);
    # a channel's few sources read through (source, sort_date); `entries_version` counts the
    # writes that changed a source's entries.
    """
    ALTER TABLE published ADD COLUMN IF NOT EXISTS publication text COLLATE "C" NOT NULL
        DEFAULT '';
    CREATE INDEX IF NOT EXISTS entries_by_source_date ON entries (source, sort_date DESC);
    ALTER TABLE sources ADD COLUMN IF NOT EXISTS entries_version bigint NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS published_by_publication ON published (publication, fingerprint);
    """,
    # 7: as SQLite's 13: the items of the last document parsed, for a partial parse next.
    """
    ALTER TABLE sources ADD COLUMN items text
    """,
    # 8: as SQLite's 14: archives. `stored_in`: the transaction that last stored an entry
    # (`pg_current_xact_id()`), so a publish reads what committed since the snapshot it
    # last took (`pg_visible_in_snapshot`), however transactions interleave. A tombstone
    # keeps its entry's place and story keys and the transaction that made it. The
    # published snapshot one row per file with its digest; each publication's fingerprint
    # and state in `publications`.
    """
    ALTER TABLE entries ADD COLUMN IF NOT EXISTS stored_in xid8 NOT NULL DEFAULT '0';
    ALTER TABLE tombstones ADD COLUMN IF NOT EXISTS sort_date timestamptz;
    ALTER TABLE tombstones ADD COLUMN IF NOT EXISTS link_key text;
    ALTER TABLE tombstones ADD COLUMN IF NOT EXISTS title_key text;
    ALTER TABLE tombstones ADD COLUMN IF NOT EXISTS stored_in xid8 NOT NULL DEFAULT '0';
    CREATE INDEX IF NOT EXISTS entries_by_stored_in ON entries (stored_in);
    CREATE INDEX IF NOT EXISTS tombstones_by_stored_in ON tombstones (stored_in);
    DELETE FROM published;
    ALTER TABLE published RENAME COLUMN fingerprint TO digest;
    CREATE TABLE IF NOT EXISTS publications (
        name        text COLLATE "C" PRIMARY KEY,
        fingerprint text NOT NULL,
        state       text NOT NULL
    );
    """,
    # 9: as SQLite's 16: the items of the last document parsed in a table of their own,
    # out of the row every claim and every poll's record rewrites; the old column emptied,
    # for daemons of the version before still running during an upgrade.
    """
    CREATE TABLE IF NOT EXISTS source_items (
        name  text COLLATE "C" PRIMARY KEY REFERENCES sources (name),
        items text NOT NULL
    );
    INSERT INTO source_items (name, items) SELECT name, items FROM sources WHERE items IS NOT NULL;
    UPDATE sources SET items = NULL WHERE items IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
_MIGRATE_LOCK = int.from_bytes(b"aggr-mig", "big")  # an advisory lock key: "aggr-mig"


def describe(url: str) -> str:
    """A connection URL or conninfo fit for a message: the password left out."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unreadable PostgreSQL URL"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def without_password(message: str, url: str) -> str:
    """An error text with the URL's password blotted out, should libpq ever quote it."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    return message.replace(str(password), "***") if password else message


def schema_version(conn: Connection) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: Connection, backfills: Backfills | None = None) -> None:
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
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the store has schema version {version}, newer than this aggregator knows "
                f"({SCHEMA_VERSION}); upgrade aggregator"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[number])
            if number + 1 == 3:
                with conn.cursor() as cursor:
                    backfill_entry_text(cursor, "%s", backfills)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number + 1,))

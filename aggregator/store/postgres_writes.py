"""What a poll writes into the PostgreSQL store's entries, in the caller's transaction.

Rows only: what to write was decided by `aggregator.update`."""

from __future__ import annotations

from datetime import UTC, datetime

from aggregator.store import rows
from aggregator.store.postgres_schema import Connection
from aggregator.store.records import EntryWrites


def seconds(value: datetime | None) -> datetime | None:
    """An entry date as the SQLite store keeps it: UTC, cut to the whole second."""
    return None if value is None else value.astimezone(UTC).replace(microsecond=0)


# `stored_in`: this transaction's id, which `PgStore.entry_marks` compares with a snapshot.
_INSERT_ENTRY = f"""
    INSERT INTO entries (source, entry_id, {", ".join(rows.WRITTEN_COLUMNS)},
        first_seen, sort_date, stored_in)
    VALUES (%s, %s, {", ".join("%s" for _ in rows.WRITTEN_COLUMNS)}, %s, %s,
        pg_current_xact_id())
    {rows.upsert_clause("IS DISTINCT FROM")}
"""
_UPDATE_ENTRY = f"""
    UPDATE entries SET {", ".join(f"{c} = %s" for c in rows.WRITTEN_COLUMNS)},
        stored_in = pg_current_xact_id()
    WHERE source = %s AND entry_id = %s
"""


def upsert_entries(conn: Connection, source: str, writes: EntryWrites) -> None:
    """Insert new entries (one another writer inserted meanwhile takes this write's content,
    but its `first_seen` and `sort_date` never move), update changed ones, touch buried ones."""
    if writes.still_buried:
        conn.execute(
            """
            UPDATE tombstones SET last_seen = %s
            WHERE source = %s AND entry_id = ANY(%s::text[])
            """,
            (seconds(writes.seen), source, list(writes.still_buried)),
        )
    with conn.cursor() as cursor:
        if writes.new:
            cursor.executemany(
                _INSERT_ENTRY,
                [
                    # first_seen to the microsecond: see the SQLite store's `_insert_entries`.
                    (source, w.entry.entry_id, *rows.entry_values(w, seconds, list), writes.seen,
                     seconds(w.sort_date))
                    for w in writes.new
                ],
            )  # fmt: skip
        if writes.changed:
            cursor.executemany(
                _UPDATE_ENTRY,
                [
                    (*rows.entry_values(w, seconds, list), source, w.entry.entry_id)
                    for w in writes.changed
                ],
            )

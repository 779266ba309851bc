"""Backfills written once for both back ends: rows an older version stored, recomputed
with the rule `open_store` hands in (`records.Backfills`), in batches in key order.

Written against a DB-API cursor (`sqlite3.Cursor`, `psycopg.Cursor`) and the back end's
parameter placeholder, so the loop is the same SQL in both.
"""

from __future__ import annotations

from typing import Any

from aggregator.errors import StorageError
from aggregator.store.records import Backfills

# Rows read and rewritten at a time by a backfill: summaries can be 512 KiB each.
BACKFILL_BATCH = 500

_SELECT = (
    "SELECT source, entry_id, summary_html FROM entries WHERE (source, entry_id) > (?, ?)"
    " ORDER BY source, entry_id LIMIT ?"
)
_UPDATE = "UPDATE entries SET teaser = ? WHERE source = ? AND entry_id = ?"


def needed(backfills: Backfills | None) -> Backfills:
    """The rules, which a store with rows to upgrade cannot do without."""
    if backfills is None:
        raise StorageError("upgrading this store needs its backfill rules: open it with open_store")
    return backfills


def backfill_entry_text(cursor: Any, param: str, backfills: Backfills | None) -> None:
    """The uncut text of entries stored with a teaser cut at parse time (SQLite's schema 9,
    PostgreSQL's 3), made again from the stored summary. `param`: `?` or `%s`."""
    select, update = _SELECT.replace("?", param), _UPDATE.replace("?", param)
    after = ("", "")
    while True:
        cursor.execute(select, (*after, BACKFILL_BATCH))
        rows = cursor.fetchall()
        if not rows:
            return
        text = needed(backfills).entry_text
        cursor.executemany(update, [(text(html), source, entry) for source, entry, html in rows])
        after = (rows[-1][0], rows[-1][1])

"""The statements both back ends write alike, written once: claims given back, the
published snapshot, the first source's date.

A back end supplies its parameter placeholder, how it holds a schedule time, and two
primitives: `_query` (one read) and `_apply` (statements run in one write transaction).
The statements here are written with `?`, which `_sql` turns into the back end's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar

from aggregator.store import rows
from aggregator.store.records import EntryWrites, PollRecord, PublishedChange, PublishedFile

Steps = Sequence[tuple[str, Sequence[Sequence[Any]]]]
# File names per `load_published` query: well under SQLite's 32,766 parameters.
_NAMES_PER_QUERY = 500


class SharedStatements:
    """The part of `StoreAPI` whose SQL is the same in every back end."""

    _param: ClassVar[str] = "?"

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _apply(self, steps: Steps) -> list[int]:
        """Run each statement over its parameter rows, all in one transaction; rowcounts."""
        raise NotImplementedError

    def _schedule_time(self, value: datetime) -> Any:
        """A schedule time (next poll, lease) as this database holds it."""
        raise NotImplementedError

    def _read_time(self, value: Any) -> datetime | None:
        """A time as this database returns it, as an aware UTC datetime."""
        raise NotImplementedError

    def _entry_time(self, value: datetime | None) -> Any:
        """An entry date (or a poll's moment) as this database holds it: to the second."""
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[Any]:
        """One write transaction, yielding what `_execute` and `_write_entries` write on."""
        raise NotImplementedError

    def _write_entries(self, tx: Any, source: str, writes: EntryWrites) -> None:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text.replace("?", self._param)

    def _execute(self, tx: Any, sql: str, params: Sequence[Any]) -> None:
        tx.execute(self._sql(sql), params)

    # -- a poll's record -------------------------------------------------------------------

    def record_poll(self, record: PollRecord) -> None:
        """Write how a poll ended, and what its feed changed, in one transaction.

        Writing `last_polled` ends the source's claim. A success saves its validators even
        when the body turns out unchanged.
        """
        with self._transaction() as tx:
            if record.entries is not None:
                self._write_entries(tx, record.name, record.entries)
            if record.succeeded:
                self._record_success(tx, record)
            else:
                self._record_failure(tx, record)

    def write_entries(self, source: str, writes: EntryWrites) -> None:
        """Insert new entries, update changed ones, touch buried ones; no poll recorded."""
        if writes.writes_anything:
            with self._transaction() as tx:
                self._write_entries(tx, source, writes)

    def _record_success(self, tx: Any, r: PollRecord) -> None:
        """A 200 or 304; `moved_to`: a chain of permanent redirects ended there."""
        at = self._entry_time(r.at)
        self._execute(
            tx,
            """
            UPDATE sources SET etag = ?, last_modified = ?, last_polled = ?, last_success = ?,
                last_outcome = ?, last_error = NULL, failures = 0, next_poll = ?,
                retry_after = NULL, moved_to = coalesce(?, moved_to),
                body_hash = coalesce(?, body_hash), claimed_by = NULL, claimed_until = NULL
            WHERE name = ? AND url = coalesce(?, url)
            """,
            (r.validators.etag, r.validators.last_modified, at, at, str(r.outcome),
             self._maybe_schedule_time(r.next_poll), r.moved_to, r.body_hash, r.name, r.url),
        )  # fmt: skip
        if r.feed is not None:
            self._execute(
                tx,
                """
                UPDATE sources SET title = ?, site_url = ?, feed_id = ?, lifetime = ?
                WHERE name = ? AND url = coalesce(?, url)
                """,
                (r.feed.title, r.feed.site_url, r.feed.feed_id, rows.lifetime_seconds(r.feed),
                 r.name, r.url),
            )  # fmt: skip
        if r.keep_tombstones:
            self._execute(tx, "UPDATE tombstones SET last_seen = ? WHERE source = ?", (at, r.name))

    def _record_failure(self, tx: Any, r: PollRecord) -> None:
        """A failure, or a source disabled (410 Gone) until its URL in feeds.toml changes."""
        if r.forget_move:
            self._execute(
                tx,
                "UPDATE sources SET moved_to = NULL, etag = NULL, last_modified = NULL "
                "WHERE name = ?",
                (r.name,),
            )
        if r.outcome == "disabled":
            self._execute(
                tx,
                """
                UPDATE sources SET disabled = ?, last_polled = ?, last_outcome = 'disabled',
                    last_error = ?, next_poll = NULL, claimed_by = NULL, claimed_until = NULL
                WHERE name = ? AND url = coalesce(?, url)
                """,
                (r.error, self._entry_time(r.at), r.error, r.name, r.url),
            )
            return
        self._execute(
            tx,
            """
            UPDATE sources SET last_polled = ?, last_outcome = 'failed', last_error = ?,
                failures = failures + 1, next_poll = ?, retry_after = ?,
                claimed_by = NULL, claimed_until = NULL
            WHERE name = ? AND url = coalesce(?, url)
            """,
            (self._entry_time(r.at), r.error, self._maybe_schedule_time(r.next_poll),
             self._maybe_schedule_time(r.retry_after), r.name, r.url),
        )  # fmt: skip

    def _maybe_schedule_time(self, value: datetime | None) -> Any:
        return None if value is None else self._schedule_time(value)

    # -- claims ----------------------------------------------------------------------------

    def release(self, name: str, owner: str) -> None:
        """Give back `owner`'s claim on a source (a claim since taken over is left alone)."""
        self._apply(
            [
                (
                    self._sql(
                        "UPDATE sources SET claimed_by = NULL, claimed_until = NULL "
                        "WHERE name = ? AND claimed_by = ?"
                    ),
                    [(name, owner)],
                )
            ]
        )

    def claim_holders(self, now: datetime) -> list[str]:
        """The owners holding a lease that has not run out at `now`, by name."""
        found = self._query(
            self._sql("SELECT DISTINCT claimed_by FROM sources WHERE claimed_until > ? ORDER BY 1"),
            (self._schedule_time(now),),
        )
        return [r[0] for r in found]

    def release_all(self, owner: str) -> int:
        """End every claim of `owner` (known dead); returns how many there were."""
        sql = "UPDATE sources SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?"
        return self._apply([(self._sql(sql), [(owner,)])])[0]

    # -- the published snapshot ------------------------------------------------------------

    def save_published(self, change: PublishedChange) -> None:
        """Write the changed files, remove the removed ones, set the snapshot's fingerprint
        and the publications' states: all in one transaction, so a follower never copies a
        fingerprint without its files."""
        upsert = (
            "INSERT INTO published (name, digest, data) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, data = excluded.data"
        )
        self._apply(
            [
                (self._sql(upsert), [(f.name, f.digest, f.data) for f in change.files]),
                (
                    self._sql("DELETE FROM published WHERE name = ?"),
                    [(name,) for name in sorted(change.removed)],
                ),
                (
                    self._sql(
                        "INSERT INTO published_head (id, fingerprint) VALUES (1, ?) "
                        "ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint"
                    ),
                    [(change.fingerprint,)],
                ),
                (
                    self._sql(
                        "INSERT INTO publications (name, state) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET state = excluded.state"
                    ),
                    sorted(change.states.items()),
                ),
            ]
        )

    def published_fingerprint(self) -> str | None:
        """The fingerprint of the stored snapshot, None before any."""
        found = self._query("SELECT fingerprint FROM published_head")
        return str(found[0][0]) if found else None

    def published_digests(self) -> dict[str, str]:
        """Every stored file's name and digest: what a follower compares with its copy."""
        found = self._query("SELECT name, digest FROM published")
        return {str(name): str(digest) for name, digest in found}

    def load_published(self, names: Iterable[str]) -> list[PublishedFile]:
        """The stored files of these names (those that are stored), by name."""
        wanted = sorted(set(names))
        found: list[PublishedFile] = []
        for start in range(0, len(wanted), _NAMES_PER_QUERY):
            chunk = wanted[start : start + _NAMES_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            found += [
                PublishedFile(str(name), str(digest), bytes(data))
                for name, digest, data in self._query(
                    self._sql(f"SELECT name, digest, data FROM published WHERE name IN ({marks})"),
                    chunk,
                )
            ]
        return sorted(found, key=lambda f: f.name)

    def publication_state(self, name: str) -> str | None:
        """What publication `name` (its directory under output/, "" for the root) last
        saved of its state, None before its first publish."""
        found = self._query(self._sql("SELECT state FROM publications WHERE name = ?"), (name,))
        return str(found[0][0]) if found else None

    def first_added(self) -> datetime | None:
        """When the first source was added: a stable date for a feed with nothing in it yet."""
        found = self._query("SELECT min(added) FROM sources")
        return self._read_time(found[0][0]) if found else None

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
from aggregator.store.records import (
    EntryWrites,
    PollRecord,
    PublishedChange,
    PublishedFile,
    Subscription,
)
from aggregator.types import ItemMemory

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

    def _unanswered_transaction(self) -> AbstractContextManager[Any]:
        """`_transaction`, for statements whose answers nobody reads: a database that can
        send them all before it waits (PostgreSQL's pipeline mode) makes it one round trip."""
        return self._transaction()

    def _write_entries(self, tx: Any, source: str, writes: EntryWrites) -> None:
        raise NotImplementedError

    # A configured source written: a new one inserted; a changed URL drops the old one's fetch
    # state and its claim (a poll of the old URL under way is not recorded: `PollRecord.url`),
    # so the new one is due at once, not when that lease runs out. One statement, both stores.
    _UPSERT_SOURCE = """
        INSERT INTO sources (name, url, added) VALUES (?, ?, ?)
        ON CONFLICT (name) DO UPDATE SET
            url = excluded.url, etag = NULL, last_modified = NULL,
            failures = 0, next_poll = NULL, retry_after = NULL, moved_to = NULL,
            disabled = NULL, body_hash = NULL, lifetime = NULL,
            claimed_by = NULL, claimed_until = NULL
        WHERE sources.url != excluded.url
    """

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
        self.record_polls((record,))

    def record_polls(self, records: Sequence[PollRecord]) -> None:
        """`record_poll` for each of `records`, in one transaction (a tick's 304s, written
        together: one commit instead of one each)."""
        with self._unanswered_transaction() as tx:
            for record in records:
                if record.entries is not None:
                    self._write_entries(tx, record.name, record.entries)
                    self._entries_changed(tx, record.name, record.entries)
                if record.succeeded:
                    self._record_success(tx, record)
                else:
                    self._record_failure(tx, record)

    def write_entries(self, source: str, writes: EntryWrites) -> None:
        """Insert new entries, update changed ones, touch buried ones; no poll recorded."""
        if writes.writes_anything:
            with self._unanswered_transaction() as tx:
                self._write_entries(tx, source, writes)
                self._entries_changed(tx, source, writes)

    def _entries_changed(self, tx: Any, source: str, writes: EntryWrites) -> None:
        """Count a write of new or changed entries in the source's `entries_version`, in the
        writing transaction: publishing skips a publication none of whose sources' entries
        changed since it last published."""
        if writes.new or writes.changed:
            sql = "UPDATE sources SET entries_version = entries_version + 1 WHERE name = ?"
            self._execute(tx, sql, (source,))

    def entry_versions(self) -> dict[str, int]:
        """Each source's `entries_version`: how many writes changed its entries so far."""
        found = self._query("SELECT name, entries_version FROM sources")
        return {str(name): int(version) for name, version in found}

    def disabled_sources(self) -> set[str]:
        """The names of the sources disabled (HTTP 410 Gone), without reading every state:
        the daemon's gauge after each reload (50,000 full states took 0.46 s on the loop)."""
        found = self._query("SELECT name FROM sources WHERE disabled IS NOT NULL")
        return {str(row[0]) for row in found}

    def sources_placed_between(self, since: datetime, before: datetime) -> set[str]:
        """The sources with an entry placed (`sort_date`) in [since, before)."""
        found = self._query(
            self._sql("SELECT DISTINCT source FROM entries WHERE sort_date >= ? AND sort_date < ?"),
            (self._entry_time(since), self._entry_time(before)),
        )
        return {str(row[0]) for row in found}

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
            self._remember_items(tx, r)
        if r.keep_tombstones:
            self._execute(tx, "UPDATE tombstones SET last_seen = ? WHERE source = ?", (at, r.name))

    def _remember_items(self, tx: Any, r: PollRecord) -> None:
        """The items of the document a poll parsed (`PollRecord.items`; None forgets them),
        for the source its record was written to (as `_record_success`: its URL unchanged).

        In a table of their own: a source's row is rewritten by every claim and every
        poll's record, and ~4 KB of items in it spread the rows over a page or more each."""
        if r.items is None:
            self._execute(tx, "DELETE FROM source_items WHERE name = ?", (r.name,))
            return
        self._execute(
            tx,
            """
            INSERT INTO source_items (name, items)
            SELECT name, ? FROM sources WHERE name = ? AND url = coalesce(?, url)
            ON CONFLICT (name) DO UPDATE SET items = excluded.items
            """,
            (rows.items_text(r.items), r.name, r.url),
        )

    def remembered_items(self, name: str) -> ItemMemory | None:
        """The items of the source's last document parsed, as its poll left them."""
        found = self._query(self._sql("SELECT items FROM source_items WHERE name = ?"), (name,))
        return rows.items_from_text(found[0][0]) if found else None

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
        """Write the changed files, remove the removed ones and the dropped publications'
        files, set the publications' heads: all in one transaction, so a follower never
        copies a fingerprint without its files."""
        upsert = (
            "INSERT INTO published (name, publication, digest, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET publication = excluded.publication, "
            "digest = excluded.digest, data = excluded.data"
        )
        head = (
            "INSERT INTO publications (name, fingerprint, state) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, "
            "state = excluded.state"
        )
        dropped = [(name,) for name in sorted(change.dropped)]
        self._apply(
            [
                (self._sql("DELETE FROM published WHERE publication = ?"), dropped),
                (self._sql("DELETE FROM publications WHERE name = ?"), dropped),
                (
                    self._sql(upsert),
                    [(f.name, f.publication, f.digest, f.data) for f in change.files],
                ),
                (
                    self._sql("DELETE FROM published WHERE name = ?"),
                    [(name,) for name in sorted(change.removed)],
                ),
                (
                    self._sql(head),
                    [(n, h.fingerprint, h.state) for n, h in sorted(change.heads.items())],
                ),
            ]
        )

    def published_fingerprints(self) -> dict[str, str]:
        """Each stored publication's fingerprint, by its directory ("" for the root)."""
        found = self._query("SELECT name, fingerprint FROM publications")
        return {str(name): str(fingerprint) for name, fingerprint in found}

    def published_digests(self, publication: str) -> dict[str, str]:
        """Every stored file of `publication`, name and digest: what a follower compares
        with its copy."""
        found = self._query(
            self._sql("SELECT name, digest FROM published WHERE publication = ?"), (publication,)
        )
        return {str(name): str(digest) for name, digest in found}

    def load_published(self, names: Iterable[str]) -> list[PublishedFile]:
        """The stored files of these names (those that are stored), by name."""
        wanted = sorted(set(names))
        found: list[PublishedFile] = []
        for start in range(0, len(wanted), _NAMES_PER_QUERY):
            chunk = wanted[start : start + _NAMES_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            sql = f"SELECT name, digest, data, publication FROM published WHERE name IN ({marks})"
            found += [
                PublishedFile(str(name), str(digest), bytes(data), str(publication))
                for name, digest, data, publication in self._query(self._sql(sql), chunk)
            ]
        return sorted(found, key=lambda f: f.name)

    def publication_state(self, publication: str) -> str | None:
        """What `publication` (its directory under output/, "" for the root) last saved of
        its state, None before its first publish."""
        found = self._query(
            self._sql("SELECT state FROM publications WHERE name = ?"), (publication,)
        )
        return str(found[0][0]) if found else None

    def first_added(self) -> datetime | None:
        """When the first source was added: a stable date for a feed with nothing in it yet."""
        found = self._query("SELECT min(added) FROM sources")
        return self._read_time(found[0][0]) if found else None

    # -- WebSub subscriptions --------------------------------------------------------------

    def subscription(self, source: str) -> Subscription | None:
        """The source's WebSub subscription, if it has one."""
        return self._subscription_where("source", source)

    def subscription_by_token(self, token: str) -> Subscription | None:
        """The subscription whose callback path ends in `token`, if any."""
        return self._subscription_where("token", token)

    def _subscription_where(self, column: str, value: str) -> Subscription | None:
        """The subscription whose `column` (a unique one: source, token) is `value`."""
        found = self._query(
            self._sql(
                f"SELECT {rows.SUBSCRIPTION_COLUMNS} FROM websub_subscriptions WHERE {column} = ?"
            ),
            (value,),
        )
        return rows.subscription_from_row(found[0], self._read_time) if found else None

    def subscriptions(self) -> list[Subscription]:
        """Every stored subscription, by source."""
        found = self._query(
            f"SELECT {rows.SUBSCRIPTION_COLUMNS} FROM websub_subscriptions ORDER BY source"
        )
        return [rows.subscription_from_row(r, self._read_time) for r in found]

    def save_subscription(self, sub: Subscription, was: Subscription | None) -> bool:
        """Store `sub` if the source's row is still `was` (its token, state and request
        time; None: no row), else nothing; whether it was stored. Two daemons deciding on
        one subscription at once: one of them writes."""
        values = rows.subscription_values(sub, self._schedule_time)
        if was is None:
            marks = ", ".join("?" for _ in values)
            sql = (
                f"INSERT INTO websub_subscriptions ({rows.SUBSCRIPTION_COLUMNS}) "
                f"VALUES ({marks}) ON CONFLICT DO NOTHING"
            )
            return self._apply([(self._sql(sql), [values])])[0] == 1
        columns = [c.strip() for c in rows.SUBSCRIPTION_COLUMNS.split(",")]
        sql = (
            "UPDATE websub_subscriptions SET "
            + ", ".join(f"{c} = ?" for c in columns)
            + " WHERE source = ? AND token = ? AND state = ? AND requested = ?"
        )
        requested = self._schedule_time(was.requested)
        params = (*values, was.source, was.token, str(was.state), requested)
        return self._apply([(self._sql(sql), [params])])[0] == 1

    def delete_subscription(self, source: str, token: str) -> bool:
        """Forget the source's subscription if its token is still `token`; whether it did."""
        sql = "DELETE FROM websub_subscriptions WHERE source = ? AND token = ?"
        return self._apply([(self._sql(sql), [(source, token)])])[0] == 1

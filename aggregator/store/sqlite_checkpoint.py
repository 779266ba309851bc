"""WAL checkpoints made by a thread of their own, not by the connection that commits.

SQLite copies its write-ahead log back into the database (a checkpoint: the pages written,
and two fsyncs) in whichever connection's commit takes the log past `wal_autocheckpoint`
pages. The store's connection commits on the event loop, so every checkpoint stalled every
fetch and every reader's request for as long as the disk took: ~10 ms per 1,000 pages on
this machine's disk, four of them in a cycle of 1,000 polls, and far longer on a slow or
busy disk. Here a thread with a connection of its own makes them (`PASSIVE`: it never waits
for, nor blocks, a writer or a reader), and the committing connection's own automatic
checkpoint stays, at `BACKSTOP_PAGES`, for a log the thread cannot keep short (it failed,
or a reader held the log).

When: after every `CHANGES_PER_CHECKPOINT` rows changed through the store's connection
(its `total_changes`). SQLite tells no one how many pages a commit wrote; rows are what the
store can count, and a poll's rows come to about two pages each here (500 rows ≈ the 1,000
pages SQLite's default waits for). A store that only reads never starts the thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("aggregator")

CHANGES_PER_CHECKPOINT = 500
# The committing connection's `wal_autocheckpoint`: four times SQLite's default of 1,000
# pages (16 MB of log at 4 KB a page), reached only if the thread falls behind.
BACKSTOP_PAGES = 4000


class Checkpointer:
    """Checkpoints of the database at `path`, asked for by `committed` and made by a thread
    started on the first ask; `close()` ends it (waiting for a checkpoint under way)."""

    def __init__(self, path: Path, *, every: int = CHANGES_PER_CHECKPOINT) -> None:
        self._path = path.absolute()  # the same file, should the process change directory
        self._every = every
        self._asked_at = 0  # the store's `total_changes` when a checkpoint was last asked for
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # a store used from two threads starts one thread
        self.made = 0  # checkpoints made (tests read it)

    def committed(self, total_changes: int) -> None:
        """The store's connection committed, `total_changes` rows changed since it opened:
        wake the thread when enough changed since the last ask. Called from the committing
        thread; it costs a subtraction unless a checkpoint is due."""
        if total_changes - self._asked_at >= self._every:
            self._asked_at = total_changes
            self.request()

    def request(self) -> None:
        """Have the thread checkpoint as soon as it can (starting it if need be)."""
        with self._starting:
            if self._closing:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite checkpoints", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """End the thread, after the checkpoint it is making, if any. The store closes its
        own connection after this, as the last one, which checkpoints what is left."""
        with self._starting:
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as e:
            log.warning("cannot open %s for checkpoints: %s", self._path, e)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                self._checkpoint(db)
        finally:
            db.close()  # never the last connection: the store's closes after this one

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as e:  # the backstop checkpoints instead; the next ask retries
            log.warning("checkpoint of %s failed: %s", self._path, e)
            return
        self.made += 1

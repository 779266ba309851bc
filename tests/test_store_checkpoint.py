"""WAL checkpoints of the SQLite store are made by a thread of their own
(`store.sqlite_checkpoint`), never by the connection that commits on the event loop."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.poll import sync_sources
from aggregator.store.sqlite import SqliteStore
from aggregator.store.sqlite_checkpoint import (
    BACKSTOP_PAGES,
    CHANGES_PER_CHECKPOINT,
    Checkpointer,
)
from tests.storedata import NOW, source


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(db_path)
    yield s
    s.close()


def _sources_in_file_alone(db_path: Path, tmp_path: Path) -> int:
    """The sources the database file holds without its write-ahead log: what checkpoints
    have folded into it."""
    alone = tmp_path / "alone.sqlite3"
    shutil.copyfile(db_path, alone)
    db = sqlite3.connect(alone)
    try:
        return int(db.execute("SELECT count(*) FROM sources").fetchone()[0])
    except sqlite3.OperationalError:  # not even the schema folded in yet
        return 0
    finally:
        db.close()


def _thread_of(store: SqliteStore) -> threading.Thread | None:
    assert store._checkpoints is not None
    return store._checkpoints._thread


def _wait_for(made: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not made():
        assert time.monotonic() < deadline, "no checkpoint within 10 s"
        time.sleep(0.01)


def test_the_committing_connection_leaves_checkpoints_to_the_thread(store: SqliteStore) -> None:
    """Its own automatic checkpoint waits for four times SQLite's default: a backstop."""
    pages = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert pages == BACKSTOP_PAGES == 4000


def test_changed_rows_are_folded_into_the_file_by_the_thread(
    store: SqliteStore, db_path: Path, tmp_path: Path
) -> None:
    """600 sources: a few dozen pages, far below the backstop, so only the thread (asked
    after 500 changed rows) can have folded them into the database file."""
    sync_sources(store, [source(f"s{n:03}") for n in range(CHANGES_PER_CHECKPOINT + 100)], NOW)
    checkpoints = store._checkpoints
    assert checkpoints is not None
    _wait_for(lambda: checkpoints.made >= 1)
    assert _sources_in_file_alone(db_path, tmp_path) == CHANGES_PER_CHECKPOINT + 100


def test_fewer_changes_ask_for_no_checkpoint(
    store: SqliteStore, db_path: Path, tmp_path: Path
) -> None:
    """A store that only reads, or writes little (`status`, a few polls), starts no thread."""
    sync_sources(store, [source(f"s{n:03}") for n in range(10)], NOW)
    assert store.poll_states(["s000"])
    checkpoints = store._checkpoints
    assert checkpoints is not None and checkpoints.made == 0
    assert _thread_of(store) is None
    assert _sources_in_file_alone(db_path, tmp_path) == 0


def test_housekeeping_checkpoint_is_made_by_the_thread(
    store: SqliteStore, db_path: Path, tmp_path: Path
) -> None:
    """The daemon's hourly `checkpoint()` asks the thread: the loop never waits for it."""
    sync_sources(store, [source(f"s{n:03}") for n in range(10)], NOW)
    store.checkpoint()
    checkpoints = store._checkpoints
    assert checkpoints is not None
    _wait_for(lambda: checkpoints.made >= 1)
    assert _sources_in_file_alone(db_path, tmp_path) == 10


def test_closing_ends_the_thread_and_folds_the_rest(db_path: Path, tmp_path: Path) -> None:
    store = SqliteStore.open(db_path)
    sync_sources(store, [source(f"s{n:03}") for n in range(CHANGES_PER_CHECKPOINT + 1)], NOW)
    thread = _thread_of(store)
    assert thread is not None
    sync_sources(store, [source(f"t{n:03}") for n in range(7)], NOW)  # after the thread's
    store.close()
    assert not thread.is_alive()
    # The store's connection closed last: SQLite folded the log in and removed it.
    assert not Path(f"{db_path}-wal").exists()
    assert _sources_in_file_alone(db_path, tmp_path) == CHANGES_PER_CHECKPOINT + 8


def test_a_checkpoint_that_cannot_be_made_is_logged_and_nothing_else_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The thread cannot open the database (gone, unreadable): a warning; asking again and
    closing still return."""
    checkpoints = Checkpointer(tmp_path / "missing" / "store.sqlite3")
    with caplog.at_level(logging.WARNING, logger="aggregator"):
        checkpoints.committed(CHANGES_PER_CHECKPOINT)
        thread = checkpoints._thread
        assert thread is not None
        _wait_for(lambda: not thread.is_alive())
        checkpoints.committed(2 * CHANGES_PER_CHECKPOINT)
        checkpoints.close()
    assert "cannot open" in caplog.text and "for checkpoints" in caplog.text
    assert checkpoints.made == 0

"""`AsyncStore`: the store as coroutines. SQLite's calls are made on the loop's own thread;
a remote store's in a worker thread, which a cancelled caller still waits for, and whose
outcome, if nobody waits any more, is taken without a complaint."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest

from aggregator.errors import StorageError
from aggregator.store.adapter import AsyncStore
from aggregator.store.api import StoreAPI
from aggregator.store.sqlite import SqliteStore
from tests.storedata import NOW, source


def test_sqlite_calls_are_made_on_the_loop(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "s.db")
    threads: list[threading.Thread] = []

    def where(s: StoreAPI) -> None:
        threads.append(threading.current_thread())

    async def scenario() -> list[str]:
        adapter = AsyncStore(store)
        await adapter.sync_sources([source("a")], NOW)
        await adapter.run(where)
        states = await adapter.source_states()
        return [s.name for s in states]

    try:
        assert asyncio.run(scenario()) == ["a"]
    finally:
        store.close()
    assert threads == [threading.main_thread()]


class _Remote:
    """A store whose one call (`ping`) waits for the test, in whatever thread makes it."""

    remote = True

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go_on = threading.Event()
        self.ended = threading.Event()
        self.thread: threading.Thread | None = None

    def ping(self) -> None:
        self.thread = threading.current_thread()
        self.entered.set()
        self.go_on.wait(30)
        self.ended.set()
        raise StorageError("the database does not answer")


def test_a_cancelled_caller_waits_for_a_remote_call_to_end() -> None:
    remote = _Remote()
    adapter = AsyncStore(remote)  # type: ignore[arg-type]

    async def scenario() -> None:
        call = asyncio.create_task(adapter.ping())
        assert await asyncio.to_thread(remote.entered.wait, 30)
        call.cancel()
        await asyncio.sleep(0)
        assert not call.done()  # still waiting for the call under way
        remote.go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert remote.ended.is_set()

    asyncio.run(scenario())
    assert remote.thread is not threading.main_thread()


def test_a_call_abandoned_by_a_second_cancel_has_its_outcome_taken(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = _Remote()
    adapter = AsyncStore(remote)  # type: ignore[arg-type]

    async def scenario() -> None:
        call = asyncio.create_task(adapter.ping())
        assert await asyncio.to_thread(remote.entered.wait, 30)
        call.cancel()
        await asyncio.sleep(0)
        call.cancel()  # a stop that cannot wait longer
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not remote.ended.is_set()
        remote.go_on.set()
        await asyncio.to_thread(remote.ended.wait, 30)

    asyncio.run(scenario())
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]

"""What only the PostgreSQL store does: its connection errors, its locks' life, `open_store`.

Everything the two stores share is in test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import aggregator.daemon as daemon_module
from aggregator.config import load_config
from aggregator.daemon import Daemon, DaemonOptions
from aggregator.errors import StorageError
from aggregator.poll import sync_sources
from aggregator.store import is_store_url, open_store, postgres_schema, rows
from aggregator.store.adapter import AsyncStore
from aggregator.store.postgres import _PUBLISH_LOCK, PgStore, describe
from aggregator.store.sqlite import SqliteStore
from tests.pgserver import PgServer
from tests.storedata import NOW, failed, remembered, source


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PgStore]:
    s = PgStore.open(pg_url)
    try:
        yield s
    finally:
        s.close()


def test_open_store_picks_the_implementation_by_its_target(pg_url: str, tmp_path: Path) -> None:
    assert is_store_url(pg_url)
    assert is_store_url("postgres://db.example/aggregator")
    assert not is_store_url(tmp_path / "postgresql:" / "x.sqlite3")
    assert not is_store_url(str(tmp_path / "x.sqlite3"))
    pg = open_store(pg_url)
    sqlite = open_store(tmp_path / "x.sqlite3")
    try:
        assert isinstance(pg, PgStore)
        assert isinstance(sqlite, SqliteStore)
    finally:
        pg.close()
        sqlite.close()


def test_no_server_is_a_storage_error_naming_where_without_the_password(tmp_path: Path) -> None:
    nowhere = f"postgresql://aggregator:s3cret@/aggregator?host={tmp_path}"
    with pytest.raises(StorageError, match=f"cannot open the store at .*host={tmp_path}") as e:
        PgStore.open(nowhere, timeout=2)
    assert "s3cret" not in str(e.value)
    assert "s3cret" not in describe(nowhere)


def test_a_missing_database_is_a_storage_error(pg_server: PgServer) -> None:
    with pytest.raises(StorageError, match='database "no_such_database" does not exist'):
        PgStore.open(pg_server.url("no_such_database"), timeout=2)


def test_the_schema_is_recorded_version_by_version(pg_store: PgStore, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, pg_store.schema_version + 1))


def test_a_dead_publishers_lock_is_freed_with_its_connection(
    pg_store: PgStore, pg_url: str
) -> None:
    holder = psycopg.connect(pg_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (_PUBLISH_LOCK,))
    inside = threading.Event()

    def publish() -> None:
        with pg_store.publish_lock():
            inside.set()

    waiter = threading.Thread(target=publish)
    waiter.start()
    assert not inside.wait(0.5)  # the lock is held
    holder.close()  # the holder dies without unlocking
    assert inside.wait(10)
    waiter.join(10)


def test_one_store_serves_many_threads(pg_store: PgStore) -> None:
    """The pool hands each thread a connection; no thread sees another's transaction."""
    names = [f"s{n}" for n in range(8)]
    sync_sources(pg_store, [source(n) for n in names], NOW)
    errors: list[BaseException] = []

    def poll(name: str) -> None:
        try:
            for n in range(10):
                failed(pg_store, name, f"try {n}", NOW + timedelta(minutes=n))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=poll, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert {s.name: s.failures for s in pg_store.source_states()} == dict.fromkeys(names, 10)


def test_a_failed_pipelined_record_keeps_nothing_and_the_pool_goes_on(pg_store: PgStore) -> None:
    """A poll's record goes out pipelined (BEGIN, the statements, COMMIT in one round trip):
    a statement the server refuses, or an error raised while the statements are being
    sent, is a StorageError or that error, nothing of the transaction stays, and the
    connection goes back to the pool usable. The pool has a single connection here, so
    each next call gets the one that failed."""
    sync_sources(pg_store, [source("a")], NOW)
    pg_store._pool.resize(1, 1)
    refused = "UPDATE sources SET failures = failures + 1 WHERE name = %s"
    refusing = pytest.raises(StorageError, match="division by zero")
    with refusing, pg_store._unanswered_transaction() as conn:
        conn.execute(refused, ("a",))
        conn.execute("SELECT 1 / 0")
        conn.execute(refused, ("a",))
    with pytest.raises(RuntimeError, match="ours"), pg_store._unanswered_transaction() as conn:
        conn.execute(refused, ("a",))
        raise RuntimeError("ours")
    state = pg_store.source_state("a")
    assert state is not None and state.failures == 0
    failed(pg_store, "a", "HTTP 500", NOW)  # a record through the same connection
    state = pg_store.source_state("a")
    assert state is not None and state.failures == 1 and state.last_error == "HTTP 500"


def test_store_work_waits_off_the_event_loop(pg_store: PgStore, pg_url: str) -> None:
    """`AsyncStore` makes a PostgreSQL call in a thread: while it waits for the server, the
    loop goes on (here: a ticker; in the daemon, fetches and readers' requests)."""
    holder = psycopg.connect(pg_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (_PUBLISH_LOCK,))
    # Whatever happens below, the lock goes after a second: a failure must not hang.
    threading.Timer(1.0, holder.close).start()

    def publish() -> str:
        with pg_store.publish_lock():
            return "published"

    async def scenario() -> tuple[int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        result = await AsyncStore(pg_store).run(
            lambda _: publish()
        )  # waits about a second for the lock
        ticking.cancel()
        return ticks, result

    ticks, result = asyncio.run(scenario())
    assert result == "published"
    assert ticks >= 20  # a blocked loop would not have ticked at all while it waited


def test_a_cancelled_caller_waits_for_the_store_call_to_end(pg_store: PgStore, pg_url: str) -> None:
    """Cancelling a poll must not leave its write running unseen, racing what comes next."""
    holder = psycopg.connect(pg_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (_PUBLISH_LOCK,))
    threading.Timer(0.5, holder.close).start()
    ended = threading.Event()

    def publish() -> None:
        with pg_store.publish_lock():
            ended.set()

    async def scenario() -> None:
        call = asyncio.create_task(AsyncStore(pg_store).run(lambda _: publish()))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert ended.is_set()  # the cancel took effect only once the call had ended

    asyncio.run(scenario())


def test_claims_send_thousands_of_names_and_reject_a_newline(pg_store: PgStore) -> None:
    names = [f"feed-{n:05d}" for n in range(5000)]
    sync_sources(pg_store, [source(n) for n in names[::2]], NOW)  # half are in the store
    claimed = pg_store.claim_due(names, NOW, "one", timedelta(minutes=5))
    assert claimed == names[::2]
    with pytest.raises(ValueError, match="newline"):
        pg_store.claim_due(["a\nb"], NOW, "two", timedelta(minutes=5))


def test_a_failed_state_read_after_a_claim_leaves_nothing_held(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon claims, then reads the claimed sources' states in a second call: when that
    read fails, the claimed sources are still polled at once (each reads its own state),
    not held unpolled for a lease (120 s by default)."""
    failures: list[list[str]] = []

    class FailingStateReads(PgStore):
        def poll_states(self, names: Any) -> Any:
            if not failures:
                failures.append(list(names))
                raise StorageError("the database does not answer (test)")
            return super().poll_states(names)

    monkeypatch.setattr(daemon_module, "open_store", lambda t: FailingStateReads.open(pg_url))
    (tmp_path / "a.xml").write_text("<rss version='2.0'><channel/></rss>", encoding="utf-8")
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nname = "a"\nurl = "a.xml"\n', encoding="utf-8")
    daemon = Daemon(config, load_config(config), options=DaemonOptions(serve=False))

    def polled() -> bool:
        with closing(PgStore.open(pg_url)) as store:
            state = store.source_state("a")
            return state is not None and state.last_polled is not None

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            for _ in range(100):
                if await asyncio.to_thread(polled):
                    break
                await asyncio.sleep(0.1)
        finally:
            daemon.stop()
            await asyncio.wait_for(running, 20)

    asyncio.run(scenario())
    assert failures == [["a"]]
    assert polled()


def test_a_stop_during_a_claim_gives_the_claimed_sources_back(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's claim waits for the database in a thread; a stop that comes meanwhile
    must give back what the claim got (no poll starts), not leave it held for a lease."""
    claiming = threading.Event()

    class SlowClaims(PgStore):
        def claim_due(self, *args: Any, **kwargs: Any) -> list[str]:
            claimed = super().claim_due(*args, **kwargs)
            claiming.set()
            time.sleep(0.5)  # the answer is still on its way when the stop comes
            return claimed

    monkeypatch.setattr(daemon_module, "open_store", lambda target: SlowClaims.open(pg_url))
    (tmp_path / "a.xml").write_text("<rss version='2.0'><channel/></rss>", encoding="utf-8")
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nname = "a"\nurl = "a.xml"\n', encoding="utf-8")
    daemon = Daemon(config, load_config(config), options=DaemonOptions(serve=False))

    async def scenario() -> None:
        running = asyncio.create_task(daemon.run())
        assert await asyncio.to_thread(claiming.wait, 20)
        daemon.stop()
        await asyncio.wait_for(running, 20)

    asyncio.run(scenario())
    with closing(PgStore.open(pg_url)) as store:
        assert store.claim_holders(datetime.now(UTC)) == []
        state = store.source_state("a")
        assert state is not None and state.last_polled is None  # claimed, never polled


def test_upgrading_moves_the_remembered_items_out_of_the_sources_rows(pg_url: str) -> None:
    """A store at schema 8 kept the items of a source's last parse in the source's row;
    from 9 they are rows of `source_items`: still remembered, and the rows hold them no
    more (the column stays, for a daemon of the version before during an upgrade)."""
    memory = remembered(1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        for number, migration in enumerate(postgres_schema.MIGRATIONS[:8], start=1):
            conn.execute(migration)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        conn.execute(
            "INSERT INTO sources (name, url, added, items)"
            " VALUES (%s, %s, %s, %s), (%s, %s, %s, NULL)",
            ("a", "https://a.example/f", NOW, rows.items_text(memory),
             "b", "https://b.example/f", NOW),
        )  # fmt: skip
    with closing(PgStore.open(pg_url)) as upgraded:
        assert upgraded.schema_version == postgres_schema.SCHEMA_VERSION
        assert upgraded.remembered_items("a") == memory
        assert upgraded.remembered_items("b") is None
        states = upgraded.poll_states(["a", "b"])
        assert states["a"].remembers and not states["b"].remembers
    with psycopg.connect(pg_url) as conn:
        left = conn.execute("SELECT count(*) FROM sources WHERE items IS NOT NULL").fetchone()
        # What a daemon of schema 8 reads and writes of them still runs.
        conn.execute("UPDATE sources SET items = %s WHERE name = 'b'", ("[]",))
        conn.execute("SELECT items IS NOT NULL FROM sources WHERE name = 'b'").fetchone()
    assert left == (0,)

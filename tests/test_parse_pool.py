"""The parser pool on real worker processes: a worker that dies is replaced, its feed retried."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing import forkserver
from pathlib import Path

import pytest

import aggregator.parse.pool as pool_module
from aggregator.errors import ParseError, ParseTimeout
from aggregator.parse.pool import ParsePool
from aggregator.processes import fork_server_context
from aggregator.types import ParsedFeed
from tests import hostile
from tests.conftest import ROOT
from tests.feedfactory import Item, rss2

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
# Big enough that parsing it takes a while, so a worker can be killed in the middle of it.
BIG = rss2(
    "Big",
    "https://big.example.org/",
    [
        Item(f"खबर {n}", f"https://big.example.org/{n}", f"g{n}", NOW - timedelta(minutes=n))
        for n in range(4000)
    ],
)
HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}


async def _kill_workers_while_busy(pool: ParsePool, task: asyncio.Task[ParsedFeed]) -> int:
    """SIGKILL the pool's workers once they exist and the parse is under way."""
    for _ in range(500):
        executor = pool._executor
        processes = dict(executor._processes) if executor is not None else {}
        if processes:
            await asyncio.sleep(0.2)  # the worker has the body and is parsing it
            if task.done():
                return 0
            for pid in processes:
                os.kill(pid, signal.SIGKILL)
            return len(processes)
        await asyncio.sleep(0.01)
    return 0


def test_a_worker_killed_mid_parse_is_replaced_and_the_feed_parsed_again() -> None:
    pool = ParsePool(workers=1)

    async def go() -> tuple[ParsedFeed, int]:
        task = asyncio.create_task(pool.parse(BIG, HEADERS, "https://big.example.org/feed"))
        killed = await _kill_workers_while_busy(pool, task)
        return await task, killed

    try:
        feed, killed = asyncio.run(go())
    finally:
        pool.close()
    assert killed == 1
    assert len(feed.entries) == 4000


def test_a_feed_that_kills_its_worker_twice_fails_alone() -> None:
    pool = ParsePool(workers=1)

    async def go() -> None:
        task = asyncio.create_task(pool.parse(BIG, HEADERS, "https://big.example.org/feed"))
        assert await _kill_workers_while_busy(pool, task) == 1
        first = pool._executor
        for _ in range(500):  # the retry, on a new pool
            if pool._executor is not None and pool._executor is not first:
                break
            await asyncio.sleep(0.01)
        assert await _kill_workers_while_busy(pool, task) == 1
        with pytest.raises(ParseError, match="parser process died"):
            await task
        # The pool itself is fine afterwards.
        small = rss2(
            "S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)]
        )
        assert len((await pool.parse(small, HEADERS, "https://s.example.org/")).entries) == 1

    try:
        asyncio.run(go())
    finally:
        pool.close()


def _session_members(session: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):  # noqa: PTH208
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":  # its session; not a zombie
                members.append(int(name))
    return members


def test_kill_9_of_the_parent_takes_the_fork_server_and_workers_with_it(tmp_path: Path) -> None:
    """No parser process outlives `aggregator once` killed with SIGKILL mid-parse."""
    feed = tmp_path / "big.xml"
    feed.write_bytes(BIG)
    config = tmp_path / "feeds.toml"
    config.write_text(f'[[feeds]]\nname = "big"\nurl = "{feed.as_uri()}"\n', encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_session_members(process.pid)) < 3:  # itself, the fork server, a worker
            assert time.monotonic() < deadline, "no parser processes appeared"
            assert process.poll() is None, "it finished before it could be killed"
            time.sleep(0.02)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while left := _session_members(process.pid):
            assert time.monotonic() < deadline, f"orphaned parser processes: {left}"
            time.sleep(0.05)
    finally:
        for pid in _session_members(process.pid):
            os.kill(pid, signal.SIGKILL)


# -- the time budget -------------------------------------------------------------------------

SLOW = hostile.slow_to_parse()  # several seconds of feedparser's own work (tests/hostile.py)


def _pids(pool: ParsePool) -> set[int]:
    executor = pool._executor
    return set(executor._processes) if executor is not None else set()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def _wait_for_workers(pool: ParsePool) -> set[int]:
    for _ in range(500):
        if pids := _pids(pool):
            return pids
        await asyncio.sleep(0.01)
    raise AssertionError("no workers")


def test_a_parse_over_budget_fails_with_the_reason_and_its_worker_is_killed() -> None:
    pool = ParsePool(workers=1)

    async def go() -> set[int]:
        task = asyncio.create_task(pool.parse(SLOW, HEADERS, "https://slow.example.org/", budget=1))
        workers = await _wait_for_workers(pool)
        with pytest.raises(ParseTimeout, match=r"^parse took longer than 1 s$"):
            await task
        # The pool is fine afterwards.
        small = rss2(
            "S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)]
        )
        assert len((await pool.parse(small, HEADERS, "https://s.example.org/")).entries) == 1
        return workers

    try:
        workers = asyncio.run(go())
    finally:
        pool.close()
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)]


def test_feeds_in_flight_on_a_pool_killed_for_another_are_parsed_again_uncounted() -> None:
    """LONG is in flight on two pools killed for other feeds' budgets: still parsed, since
    neither death was its doing (two deaths of its own would fail it). (LONG, not BIG: on
    an idle machine BIG's parse, about a second, ended before the first kill.)"""
    pool = ParsePool(workers=2)
    long = rss2(
        "Long",
        "https://big.example.org/",
        [
            Item(f"खबर {n}", f"https://big.example.org/{n}", f"g{n}", NOW - timedelta(minutes=n))
            for n in range(10_000)
        ],
    )

    async def go() -> ParsedFeed:
        big = asyncio.create_task(pool.parse(long, HEADERS, "https://big.example.org/", budget=60))
        for _ in range(2):
            await _wait_for_workers(pool)
            await asyncio.sleep(0.3)  # BIG is on this pool's other worker
            assert not big.done()
            with pytest.raises(ParseTimeout):
                await pool.parse(SLOW, HEADERS, "https://slow.example.org/", budget=0.5)
        return await big

    try:
        feed = asyncio.run(go())
    finally:
        pool.close()
    assert len(feed.entries) == 10_000


def test_stalled_seconds_counts_only_while_work_is_in_flight() -> None:
    pool = ParsePool(workers=1)

    async def go() -> tuple[float, float]:
        assert pool.stalled_seconds() == 0.0
        task = asyncio.create_task(pool.parse(SLOW, HEADERS, "https://slow.example.org/", budget=2))
        await _wait_for_workers(pool)
        await asyncio.sleep(1.0)
        during = pool.stalled_seconds()
        with pytest.raises(ParseTimeout):
            await task
        return during, pool.stalled_seconds()

    try:
        during, after = asyncio.run(go())
    finally:
        pool.close()
    assert during >= 1.0
    assert after == 0.0


def test_idle_workers_exit_and_the_next_feed_is_parsed_on_new_ones() -> None:
    """Workers given nothing for the pool's idle time exit: a daemon between polls holds
    no parser but the fork server. Feeds that keep coming keep their workers, a parse in
    flight keeps its worker however long it takes, and the next feed after the idle spell
    is parsed on a new one."""
    small = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])
    pool = ParsePool(workers=1, idle_seconds=1.0)
    slower_than_idle = hostile.slow_to_parse(hostile.SLOW_ELEMENTS // 2)

    async def go() -> tuple[set[int], set[int], set[int], bool]:
        await pool.parse(small, HEADERS, "https://s.example.org/")
        first = _pids(pool)
        for _ in range(8):  # a feed every 0.2 s: never idle for 1 s
            await asyncio.sleep(0.2)
            await pool.parse(small, HEADERS, "https://s.example.org/")
        kept = _pids(pool)
        # ~2 s of parsing, twice the idle time: busy, not idle
        await pool.parse(slower_than_idle, HEADERS, "https://slow.example.org/", budget=60)
        await pool.parse(small, HEADERS, "https://s.example.org/")
        kept |= _pids(pool)
        await asyncio.sleep(2.0)
        retired = pool._executor is None
        await pool.parse(small, HEADERS, "https://s.example.org/")
        return first, kept, _pids(pool), retired

    try:
        first, kept, later, retired = asyncio.run(go())
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first and kept == first
        assert not [pid for pid in first if _alive(pid)]  # exited, not merely forgotten
        assert retired
        assert later and not later & first
    finally:
        pool.close()


def test_close_with_kill_ends_a_runaway_parse_and_the_fork_server() -> None:
    pool = ParsePool(workers=1)

    async def go() -> set[int]:
        task = asyncio.create_task(
            pool.parse(SLOW, HEADERS, "https://slow.example.org/", budget=60)
        )
        workers = await _wait_for_workers(pool)
        await asyncio.sleep(0.3)
        server = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        pool.close(kill=True)
        with pytest.raises(ParseError):
            await task
        return {*workers, server}

    parsers = asyncio.run(go())
    time.sleep(0.5)
    assert not [pid for pid in parsers if _alive(pid)]


def _loaded(names: list[str]) -> list[str]:
    """Which of `names` the calling process has imported (run in a pool worker)."""
    return [name for name in names if name in sys.modules]


def test_workers_are_born_with_what_a_first_parse_loads() -> None:
    """The fork server parses two samples when it starts (`parse.preload.warm_up`): what a
    first parse imports lazily (expat's SAX driver) is in every worker before its first
    feed, rather than loaded again by each new worker (one every few hundred feeds)."""
    pool = ParsePool(workers=1)
    try:
        lazy = ["xml.sax.expatreader", "pyexpat"]
        assert pool._pool().submit(_loaded, lazy).result(timeout=60) == lazy
    finally:
        pool.close()


def test_workers_are_replaced_without_ever_leaving_feeds_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers are replaced every few feeds here (`_TASKS_PER_WORKER` = 4) while feeds
    come in bursts: none waits for a worker that is never started. With the executor's
    own `max_tasks_per_child`, Python 3.11 skipped replacements (CPython gh-115634) and
    small feeds failed at their budget, stuck behind a pool with no worker."""
    monkeypatch.setattr(pool_module, "_TASKS_PER_WORKER", 4)
    small = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])
    pool = ParsePool(workers=1)
    seen: set[int] = set()

    async def go() -> None:
        for burst in range(60):
            parses = [
                pool.parse(small, HEADERS, "https://s.example.org/", budget=2)
                for _ in range(1 + burst % 5)
            ]
            for feed in await asyncio.gather(*parses):
                assert len(feed.entries) == 1
            seen.update(_pids(pool))
            await asyncio.sleep((0, 0.001, 0.02)[burst % 3])

    try:
        asyncio.run(go())
    finally:
        pool.close()
    assert len(seen) > 20  # replaced all along (each worker had 4 feeds)


def test_an_executor_is_not_retired_under_a_feed_waiting_for_its_first_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feed given a new executor waits for its first worker; an executor due for renewal
    meanwhile (every feed here) is retired only once that feed is handed to it. Retired
    under it, the feed's hand-over was refused as if its worker had died: twice, and the
    feed failed ("the parser process died on this feed"), as one did in CI."""
    monkeypatch.setattr(pool_module, "_TASKS_PER_WORKER", 1)
    spawn = pool_module._spawn_first_worker

    def slow_spawn(*args: object) -> None:
        time.sleep(0.2)  # a loaded machine: the fork takes a while
        spawn(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pool_module, "_spawn_first_worker", slow_spawn)
    small = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])
    pool = ParsePool(workers=1)

    async def go() -> list[ParsedFeed]:
        async def later(delay: float) -> ParsedFeed:
            await asyncio.sleep(delay)
            return await pool.parse(small, HEADERS, "https://s.example.org/", budget=10)

        return await asyncio.gather(*(later(n * 0.05) for n in range(4)))

    try:
        feeds = asyncio.run(go())
    finally:
        pool.close()
    assert [len(feed.entries) for feed in feeds] == [1, 1, 1, 1]


def test_a_parse_over_budget_on_a_retired_executor_has_its_worker_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A feed still parsing on an executor retired for a new one (every feed here) and
    over its budget fails, and its worker is killed, as on the current executor: a shut
    down executor no longer lists its workers, so the pool keeps them."""
    monkeypatch.setattr(pool_module, "_TASKS_PER_WORKER", 1)
    small = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])
    pool = ParsePool(workers=1)

    async def go() -> set[int]:
        slower = hostile.slow_to_parse(hostile.SLOW_ELEMENTS * 4)  # well past the wait below
        parsing = pool.parse(slower, HEADERS, "https://slow.example.org/", budget=1)
        slow = asyncio.create_task(parsing)
        workers = await _wait_for_workers(pool)
        await pool.parse(small, HEADERS, "https://s.example.org/")  # on a new executor
        with pytest.raises(ParseTimeout):
            await slow
        return workers

    try:
        workers = asyncio.run(go())
        deadline = time.monotonic() + 2
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        pool.close(kill=True)


def test_the_event_loop_goes_on_while_the_parser_starts() -> None:
    """A process's first parse waits for the fork server to start and load the parser
    (~0.1 s here): the event loop goes on meanwhile (other polls, the ticker here) rather
    than freezing for it inside the executor's `submit`."""
    pool_module._stop_fork_server()  # a fresh fork server, as at a daemon's or `once`'s start
    small = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])
    pool = ParsePool(workers=1)

    async def go() -> tuple[float, float]:
        gaps: list[float] = []
        parsed = asyncio.Event()

        async def tick() -> None:
            last = time.perf_counter()
            while not parsed.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.01)  # ticking
        started = time.perf_counter()
        feed = await pool.parse(small, HEADERS, "https://s.example.org/")
        took = time.perf_counter() - started
        parsed.set()
        await ticker
        assert len(feed.entries) == 1
        return max(gaps), took

    try:
        longest, took = asyncio.run(go())
    finally:
        pool.close()
    assert longest < took / 2, (longest, took)


def _fork_server_pid() -> int | None:
    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


SMALL = rss2("S", "https://s.example.org/", [Item("One", "https://s.example.org/1", "1", NOW)])


def test_a_parse_cancelled_while_the_first_worker_starts_leaves_the_others_waiting() -> None:
    """Three feeds wait for a new pool's first worker and one of them is cancelled (its
    source removed by a reload, say): the other two are parsed. The wait they shared was
    cancelled for all of them, and they ended as if cancelled too."""
    pool_module._stop_fork_server()
    pool = ParsePool(workers=1)

    async def go() -> list[ParsedFeed | BaseException]:
        parses = [
            asyncio.create_task(pool.parse(SMALL, HEADERS, "https://s.example.org/"))
            for _ in range(3)
        ]
        await asyncio.sleep(0.02)  # all three waiting for the fork server
        parses[0].cancel()
        return await asyncio.gather(*parses, return_exceptions=True)

    try:
        first, *others = asyncio.run(go())
    finally:
        pool.close()
    assert isinstance(first, asyncio.CancelledError)
    assert all(isinstance(o, ParsedFeed) and len(o.entries) == 1 for o in others), others


def test_a_fork_server_that_never_answers_fails_the_parse_at_its_budget() -> None:
    """A fork server stopped while it loads the parser (SIGSTOP, a frozen cgroup) gives no
    worker: the feed fails at its budget, the stall shows in `stalled_seconds` meanwhile
    (the health check's), and the next feed gets a new fork server."""
    pool_module._stop_fork_server()
    pool = ParsePool(workers=1)
    fork_server_context()
    forkserver.ensure_running()
    stuck = _fork_server_pid()
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)

    async def go() -> tuple[BaseException | ParsedFeed, float]:
        parsing = asyncio.create_task(
            pool.parse(SMALL, HEADERS, "https://s.example.org/", budget=1)
        )
        await asyncio.sleep(0.6)
        stalled = pool.stalled_seconds()
        (outcome,) = await asyncio.gather(parsing, return_exceptions=True)
        return outcome, stalled

    try:
        outcome, stalled = asyncio.run(go())
        assert isinstance(outcome, ParseTimeout), outcome
        assert stalled >= 0.5
        assert _fork_server_pid() != stuck
        feed = asyncio.run(pool.parse(SMALL, HEADERS, "https://s.example.org/"))
        assert len(feed.entries) == 1
    finally:
        pool.close()
        with contextlib.suppress(OSError):
            os.kill(stuck, signal.SIGKILL)


def test_idleness_while_a_first_worker_is_stuck_neither_freezes_the_loop_nor_a_stop() -> None:
    """A parse waiting for a new executor's first worker, the fork server stuck, is
    cancelled (its source removed on reload): the pool is idle, but the spawning thread
    holds the executor's lock, and retiring it then (`shutdown`) waited for that lock on
    the event loop, frozen until the fork server moved again. `close(kill=True)` ends the
    fork server before the workers, or it waited for that lock too."""
    pool_module._stop_fork_server()
    pool = ParsePool(workers=1, idle_seconds=0.2)
    fork_server_context()
    forkserver.ensure_running()
    stuck = _fork_server_pid()
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)
    released = threading.Timer(6, os.kill, (stuck, signal.SIGCONT))  # a bound to the test
    released.start()
    gaps: list[float] = []

    async def go() -> float:
        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticker = asyncio.create_task(tick())
        parsing = asyncio.create_task(pool.parse(SMALL, HEADERS, "https://s.example.org/"))
        await asyncio.sleep(0.3)
        parsing.cancel()
        await asyncio.sleep(1.5)  # idle several times over
        ticker.cancel()
        started = time.monotonic()
        pool.close(kill=True)
        return time.monotonic() - started

    try:
        stop = asyncio.run(go())
        assert max(gaps) < 1.0  # 6 s (the SIGCONT) when the idle check froze the loop
        assert stop < 1.0
    finally:
        released.cancel()
        pool.close(kill=True)
        with contextlib.suppress(OSError):
            os.kill(stuck, signal.SIGKILL)


def test_no_thread_to_start_the_first_worker_on_and_the_feed_is_parsed_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting a thread can fail (the process's thread limit): the worker is then spawned
    by the parse itself, as before, rather than every feed waiting for it forever."""
    refused: list[bool] = []
    start = threading.Thread.start

    def no_thread_for_the_first_worker(self: threading.Thread) -> None:
        if getattr(self, "_target", None) is pool_module._spawn_first_worker:
            refused.append(True)
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", no_thread_for_the_first_worker)
    pool = ParsePool(workers=1)

    async def go() -> list[ParsedFeed]:
        parses = [pool.parse(SMALL, HEADERS, "https://s.example.org/", budget=5) for _ in range(3)]
        return list(await asyncio.wait_for(asyncio.gather(*parses), 30))

    try:
        feeds = asyncio.run(go())
    finally:
        pool.close()
    assert refused
    assert all(len(f.entries) == 1 for f in feeds)


def test_feeds_cancelled_while_queued_leave_no_error_in_the_pool_s_thread() -> None:
    """CPython 3.11's process pool, its workers killed, sets the exception of every feed
    still queued in it, and one whose parse was cancelled meanwhile (a stop, a source
    removed) raised InvalidStateError in the pool's manager thread: a traceback in the
    daemon's log and the pool's clean-up left undone (CI failed on it once). A parse's
    cancel is not passed on to the executor's future."""
    pool = ParsePool(workers=1)

    async def go() -> None:
        tasks = [
            asyncio.create_task(
                pool.parse(SLOW, HEADERS, f"https://slow{n}.example.org/", budget=60)
            )
            for n in range(4)
        ]
        await _wait_for_workers(pool)
        for _ in range(500):  # one parsing, one handed to the worker, one still queued
            executor = pool._executor
            items = executor._pending_work_items.values() if executor is not None else []
            if any(not item.future.running() for item in items):
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()  # a stop: the polls are cancelled, then the pool killed
        await asyncio.sleep(0)  # the cancels reach the parses
        for pid in _pids(pool):  # as `close(kill=True)` does, without its shutdown's race
            os.kill(pid, signal.SIGKILL)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # the manager thread sees its workers die
        pool.close(kill=True)

    raised: list[type[BaseException]] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: raised.append(args.exc_type)
    try:
        asyncio.run(go())
    finally:
        threading.excepthook = hook
    assert raised == []

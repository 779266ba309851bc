"""The long-running daemon: schedule polls, publish, serve, reload feeds.toml, stop cleanly.

Everything runs in one asyncio loop: an APScheduler (3.x) tick claims the sources whose
stored `next_poll` has come (`claim_due`: with a shared PostgreSQL store, each due source
goes to exactly one daemon) and polls them through one shared, bounded `Fetcher`; a
debounced publish follows any poll that stored something (in a worker thread, under the
store's publish lock), and every few seconds the files another daemon sharing the store
published are copied into `output/`; uvicorn serves `output/`; and
watchfiles (or SIGHUP) triggers a reload. A source is never polled twice at once (the
in-flight set), and a restart resumes from the stored schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchfiles import awatch

from aggregator.config import load_config
from aggregator.cycle import apply_retention
from aggregator.errors import AggregatorError, ConfigError, StorageError
from aggregator.fetch import Fetcher
from aggregator.metrics import Metrics
from aggregator.output import remove_stale_temp_files
from aggregator.poll import (
    PARSERS,
    Clock,
    SourceReport,
    claim_owner,
    in_store,
    is_dead_here,
    poll_source,
    record_crash,
    record_failed_poll,
    sync_sources,
    utc_now,
)
from aggregator.publish import follow_published, publish_timeline
from aggregator.server import (
    EmbeddedServer,
    PublishedFiles,
    create_app,
    embedded_server,
    listen_socket,
    raise_open_file_limit,
)
from aggregator.settings import Config, SourceConfig
from aggregator.store import SourceState, StoreAPI, open_store
from aggregator.store.records import PollOutcome
from aggregator.watchdog import (
    BLOCK_SECONDS,
    LoopWatch,
    StoreFileWatch,
    Watchdog,
    stalled_parsers_problem,
)

log = logging.getLogger("aggregator")

STOP_GRACE_SECONDS = 5.0
# After a publish that took s seconds, the next one starts no sooner than PUBLISH_PACE × s
# after it ended: publishing takes at most a fifth of the daemon's time, however large the
# timeline, even while thousands of sources bring new items at once (a first start, a
# big store). A quick publish (the usual: milliseconds) leaves the debounce in charge.
PUBLISH_PACE = 4.0
PUBLISH_RETRY_SECONDS = 10.0  # after a publish the store made fail
# A publish (bounded reads: milliseconds to a few seconds) still running after this long is
# stuck: /healthz says so, since the published files are going stale meanwhile.
PUBLISH_STUCK_SECONDS = 60.0

T = TypeVar("T")


async def in_daemon_thread(name: str, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a thread of its own that never delays the process's exit.

    Not `asyncio.to_thread`: the default executor's threads are joined at exit (by
    `asyncio.run` and by the interpreter), so one stuck in a publish would keep a stopped
    daemon alive. A daemon thread ends with the process; what it was writing is safe, each
    file being replaced atomically and each store write being one transaction.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(setter: Callable[[Any], None], value: Any) -> None:
        if not outcome.done():  # the caller may have been cancelled meanwhile
            setter(value)

    def run() -> None:
        try:
            result = work(*args)
        except BaseException as e:  # whatever happens, the awaiting task hears of it
            setter: Callable[[Any], None] = outcome.set_exception
            value: Any = e
        else:
            setter, value = outcome.set_result, result
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, setter, value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await outcome


# A parse killed at its budget ends within moments; the pool may take this long to be rebuilt.
PARSER_SLACK = 10.0


class _NotCancellations(logging.Filter):
    """APScheduler logs a job it cancelled at shutdown (a tick, housekeeping under way) as
    "Error running job" with a traceback: a stop is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


_SCHEDULER_LOG = logging.getLogger("apscheduler.executors.default")
_SCHEDULER_LOG.addFilter(_NotCancellations())


class Trouble:
    """An error that repeats every few seconds while it lasts (the database away): logged
    when it starts or changes, and once more when it is over, not at every repetition."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.current: str | None = None
        self.since: float | None = None  # time.monotonic() when it started failing

    def failed(self, error: Exception, *, bug: bool = False) -> None:
        """Log `error` unless it is the one already reported; a `bug` with its traceback."""
        if str(error) != self.current:
            log.error("%s failed: %s", self.what, error, exc_info=error if bug else None)
        self.current = str(error)
        if self.since is None:
            self.since = time.monotonic()

    def worked(self) -> None:
        if self.current is not None:
            log.info("%s works again", self.what)
        self.current = None
        self.since = None


@dataclass
class DaemonOptions:
    tick_seconds: float = 1.0
    publish_debounce_seconds: float = 1.0
    housekeeping_seconds: float = 600.0
    follow_seconds: float = 5.0  # how often to look for files another daemon published
    serve: bool = True
    loop_block_seconds: float = BLOCK_SECONDS  # a loop this late makes /healthz say 503


class Daemon:
    """Owns the store, the scheduler, the fetcher, the server and the current configuration."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        options: DaemonOptions | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self._started = config  # [server] and [store] stay as they were at start
        self.options = options or DaemonOptions()
        self.clock = clock
        self.metrics = Metrics()
        self.store: StoreAPI = open_store(config.store.target)
        # Publishing runs in a worker thread (its lock may wait for another daemon), on a
        # store of its own: an SQLite connection must not be shared with the loop's thread
        # in the middle of a transaction.
        self._publisher: StoreAPI = open_store(config.store.target)
        self._publishing = asyncio.Lock()  # one publish or copy at a time in this daemon
        self._publishes: set[asyncio.Task[None]] = set()  # awaited, never cancelled, at stop
        self._last_publish_done = False  # stopping: nothing more to publish
        self._next_publish = 0.0  # loop time before which no publish starts (PUBLISH_PACE)
        self._publish_since: float | None = None  # time.monotonic() a publish's thread began
        self.files = PublishedFiles(config.publish.output_dir)
        self._fetcher = self._new_fetcher(config)
        self.owner = claim_owner()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._claiming = asyncio.Lock()
        self._unsynced = False  # a reload changed the sources; the next claim syncs the store
        self._claim_trouble = Trouble("claiming due sources")
        self._follow_trouble = Trouble("copying the published files")
        self._publish_trouble = Trouble("publishing")
        self._claims: set[asyncio.Task[None]] = set()  # awaited, never cancelled, at stop
        self._publish_handle: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._background: set[asyncio.Task[None]] = set()
        self._reloading: asyncio.Task[None] | None = None  # loading feeds.toml in a thread
        self._reload_wanted = False  # asked for again while loading: load once more after
        self._record_problem: str | None = None  # a poll's record the store refused
        self.watchdog = Watchdog(
            LoopWatch(block=self.options.loop_block_seconds, on_lag=self.metrics.loop_lag.set),
            [self._publish_problem, self._stuck_publish_problem, self._poll_record_problem],
        )
        if not self.store.remote:  # SQLite: a file that can vanish under us
            self.watchdog.probes.insert(1, StoreFileWatch(config.store.path).problem)
        self.watchdog.probes.append(self._parser_problem)

    @staticmethod
    def _new_fetcher(config: Config) -> Fetcher:
        return Fetcher(
            timeout=config.poll.timeout.total_seconds(),
            concurrency=config.poll.concurrency,
            per_host=config.poll.per_host,
            max_bytes=config.poll.max_bytes,
            user_agent=config.poll.user_agent,
        )

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> str | None:
        """None while the scheduler runs, the watchdog sees no problem and the store
        answers; else why not."""
        if not self._scheduler.running:
            return "the scheduler is not running"
        if (problem := self.watchdog.problem()) is not None:
            return problem
        try:
            await in_store(self.store, self.store.ping)
        except AggregatorError as e:
            return str(e)
        return None

    def _publish_problem(self) -> str | None:
        """Publishing has failed through two retries: the outputs are going stale. (One
        retry's wait alone would flap: it ends about when that retry does.)"""
        since, error = self._publish_trouble.since, self._publish_trouble.current
        failing = 0.0 if since is None else time.monotonic() - since
        if failing <= 2 * PUBLISH_RETRY_SECONDS:
            return None
        return f"publishing has failed for {failing:.0f} s: {error}"

    def _stuck_publish_problem(self) -> str | None:
        """A publish or copy has been running far longer than one takes: nothing new reaches
        the published files meanwhile."""
        since = self._publish_since
        running = 0.0 if since is None else time.monotonic() - since
        if running <= PUBLISH_STUCK_SECONDS:
            return None
        return f"a publish has been running for {running:.0f} s"

    def _parser_problem(self) -> str | None:
        """The parser pool finished nothing for longer than its budget allows: a parse over
        budget is killed, and a queued one waits through at most one other (twice the
        budget), so a longer stall means the kill itself failed."""
        budget = self.config.poll.parse_timeout.total_seconds()
        return stalled_parsers_problem(PARSERS.stalled_seconds(), 2 * budget + PARSER_SLACK)

    def _poll_record_problem(self) -> str | None:
        """The store refused a poll's record, and no later poll's record was written."""
        return self._record_problem

    # -- polling ---------------------------------------------------------------------------

    def _sources(self) -> dict[str, SourceConfig]:
        return {s.name: s for s in self.config.sources}

    async def tick(self) -> None:
        """The scheduler's job: `_claim_soon`."""
        self._claim_soon()

    def _claim_soon(self) -> None:
        """Start claiming due sources and polling them, unless the last claim is still
        under way (waiting for a database that is away): claims never pile up, and the
        scheduler never waits for one."""
        if not self._claiming.locked():
            self._claim()

    def _claim(self) -> asyncio.Task[None]:
        """Start a claim (`_claim_and_poll`); the task is kept so that a stop can await it."""
        task = asyncio.create_task(self._claim_and_poll(), name="claim")
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)
        return task

    async def _claim_and_poll(self) -> None:
        """Claim due sources until twice `concurrency` are in flight, and poll them.

        Claiming no more than that keeps the rest for other daemons sharing the store, and
        bounds a claim's wait for a free fetch slot (`config.default_lease` relies on it).
        A source being polled here is never claimed again meanwhile: never twice at once.
        One claim at a time, so each counts the polls the one before it started.
        """
        async with self._claiming:
            if self._stopping.is_set():
                return
            try:
                if self._unsynced:
                    await self._sync_store()
                room = 2 * self.config.poll.concurrency - len(self._inflight)
                if room <= 0:
                    return
                idle = [s.name for s in self.config.sources if s.name not in self._inflight]
                claimed = await in_store(
                    self.store, self.store.claim_due, idle, self.clock(), self.owner,
                    self.config.poll.lease, limit=room,
                )  # fmt: skip
            except AggregatorError as e:  # the store is away: each tick tries again
                self._claim_trouble.failed(e)
                return
            except Exception:  # a bug; the next tick claims again
                log.exception("claiming due sources failed")
                return
            self._claim_trouble.worked()
            # The configuration may have been reloaded, or a stop begun, during the claim;
            # every poll starts before the next await, so no reload comes in between.
            sources = {} if self._stopping.is_set() else self._sources()
            unwanted = []
            for name in claimed:
                if name in sources:
                    task = asyncio.create_task(self._poll(sources[name]), name=f"poll:{name}")
                    self._inflight[name] = task
                    task.add_done_callback(functools.partial(self._finished, name))
                else:
                    unwanted.append(name)
            for name in unwanted:
                try:
                    await in_store(self.store, self.store.release, name, self.owner)
                except AggregatorError as e:  # the lease runs out by itself
                    log.error("%s: could not give the claim back: %s", name, e)

    async def _sync_store(self) -> None:
        """At start and after a reload: the sources table in line with the configuration
        (new sources, changed URLs), and the disabled-source gauge with the store. After a
        reload the next claim makes it, so a reload never waits for the database."""
        self._unsynced = False
        try:
            await in_store(self.store, sync_sources, self.store, self.config.sources, self.clock())
            states = await in_store(self.store, self.store.source_states)
        except BaseException:
            self._unsynced = True  # the next claim tries again
            raise
        self._sync_disabled_metrics(states)

    def _finished(self, name: str, _: asyncio.Task[None]) -> None:
        self._inflight.pop(name, None)
        if len(self._inflight) == self.config.poll.concurrency:
            # Half the claims are done: claim more now rather than at the next tick, so a
            # daemon with thousands of due sources keeps its fetch slots busy.
            self._claim()

    async def _poll(self, source: SourceConfig) -> None:
        try:
            report = await poll_source(source, self._fetcher, self.store, self.config, self.clock)
        except asyncio.CancelledError:
            # Recording a poll ends its claim; a cancelled one (a stop, a source removed)
            # records nothing, so give the claim back for another daemon to take at once.
            try:
                await in_store(self.store, self.store.release, source.name, self.owner)
            except AggregatorError as e:  # the lease runs out by itself
                log.error("%s: could not give the claim back: %s", source.name, e)
            raise
        except StorageError as e:
            # The store failed (its database restarting, a full disk, a row it refused)
            # before the poll was recorded. Recorded as a failure if the store lets it: the
            # claim ends and the source backs off (an error only this source's data causes
            # must not have it polled every tick); if not, the claim runs out with its
            # lease. Its items may be stored already: publish all the same.
            message = f"the poll could not be recorded: {e}"
            log.error("%s: %s", source.name, message)
            self._record_problem = f"{source.name}: {message}"
            with contextlib.suppress(AggregatorError):
                await in_store(
                    self.store, record_failed_poll, source, self.store, message, self.clock()
                )
            self.metrics.record_poll(source.name, "failed", 0, self.clock())
            self.request_publish()
            return
        except Exception as e:  # a bug; it must not stop the daemon, nor be retried every tick
            log.exception("%s: unexpected error", source.name)
            message = await in_store(self.store, record_crash, source, self.store, e, self.clock())
            report = SourceReport(source.name, PollOutcome.FAILED, error=message)
        else:
            self._record_problem = None  # the store took this poll's record
        self.metrics.record_poll(source.name, report.outcome, report.new, self.clock())
        if report.new or report.updated:
            self.request_publish()

    # -- publishing ------------------------------------------------------------------------

    def request_publish(self) -> None:
        """Publish soon; a burst of requests produces one publish."""
        if self._publish_handle is None and not self._last_publish_done:
            loop = asyncio.get_running_loop()
            wait = max(self.options.publish_debounce_seconds, self._next_publish - loop.time())
            self._publish_handle = loop.call_later(wait, self._start_publish)

    def _start_publish(self) -> None:
        loop = asyncio.get_running_loop()
        early = self._next_publish - loop.time()
        if self._publishing.locked() or early > 0:
            # Asked for during a publish (or a copy), or before the pace allows: once that
            # one has ended and set the pace, look again.
            wait = max(early, self.options.publish_debounce_seconds)
            self._publish_handle = loop.call_later(wait, self._start_publish)
            return
        self._publish_handle = None
        task = asyncio.create_task(self._publish(), name="publish")
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    async def _publish(self) -> None:
        """Publish off the loop: waiting for another daemon's publish lock, or rendering a
        big timeline, must not stall polling and serving."""
        async with self._publishing:
            try:
                report = await self._off_loop(
                    "publish", publish_timeline, self.config, self._publisher, self.clock()
                )
            except Exception as e:
                # The store away, or a bug: the daemon keeps polling and serving the last
                # good files, tries again a little later, and /healthz says so meanwhile.
                self._publish_trouble.failed(e, bug=not isinstance(e, AggregatorError))
                self._next_publish = asyncio.get_running_loop().time() + PUBLISH_RETRY_SECONDS
                self.request_publish()
                return
        self._publish_trouble.worked()
        self._next_publish = asyncio.get_running_loop().time() + PUBLISH_PACE * report.seconds
        self.metrics.published(self.clock())
        self.metrics.publishes.inc()
        self.metrics.publish_seconds.observe(report.seconds)

    async def _off_loop(self, name: str, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a daemon thread, timed for `_stuck_publish_problem`."""
        self._publish_since = time.monotonic()
        try:
            return await in_daemon_thread(name, work, *args)
        finally:
            self._publish_since = None

    async def _follow_soon(self) -> None:
        """The scheduler's job: start a copy unless one, or a publish, is under way (waiting,
        perhaps, for a database that is away). The scheduler itself never waits."""
        if not self._publishing.locked():
            task = asyncio.create_task(self._follow(), name="follow")
            self._publishes.add(task)
            task.add_done_callback(self._publishes.discard)

    async def _follow(self) -> None:
        """Serve what another daemon sharing the store published: copy its snapshot here."""
        async with self._publishing:
            try:
                written = await self._off_loop(
                    "follow", follow_published, self.config.publish.output_dir, self._publisher
                )
            except AggregatorError as e:
                self._follow_trouble.failed(e)
                return
            except Exception:  # a bug; the next round tries again
                log.exception("copying the published files failed")
                return
            self._follow_trouble.worked()
        if any(written.values()):
            changed = ", ".join(name for name, changed in written.items() if changed)
            log.info("copied the files another daemon published (%s)", changed)

    async def _housekeeping(self) -> None:
        """Keep the WAL small, and re-publish so items past `max_age` leave the feeds even
        when nothing new arrives (an unchanged result rewrites nothing)."""
        try:
            await in_store(self.store, apply_retention, self.config, self.store, self.clock())
            await in_store(self.store, self.store.checkpoint)
        except AggregatorError as e:  # the store is away; the next round tries again
            log.error("housekeeping failed: %s", e)
        self.request_publish()

    # -- configuration ---------------------------------------------------------------------

    def request_reload(self) -> None:
        """Reload in the background (SIGHUP, the file watcher), never on the loop itself.

        Loading probes every filter pattern (a quarter second for each that backtracks) and
        validates every source: seconds for a large or hostile file, which on the loop
        stalled polls, `/healthz` and the watchdog (a false 503). A request made while a
        load is under way coalesces into one more load once it ends, so the last edit wins
        and edits in a burst cost two loads, not one each.
        """
        if self._stopping.is_set():
            return  # a stop is under way: its store and tasks are closing
        self._reload_wanted = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload_while_wanted())
            self._background.add(self._reloading)
            self._reloading.add_done_callback(self._background.discard)

    async def _reload_while_wanted(self) -> None:
        while self._reload_wanted:
            self._reload_wanted = False
            try:
                await self.reload_in_thread()
            except Exception:  # a bug in reloading must not end later reloads
                log.exception("configuration reload failed")

    async def reload_in_thread(self) -> bool:
        """`reload`, with the file read, parsed and probed in a worker thread; applied here."""
        # A daemon thread: probing a file of many backtracking patterns takes seconds, and a
        # stop must not wait for it (the default executor's threads are joined at exit).
        new = await in_daemon_thread("reload", self._load_for_reload)
        return new is not None and self._apply_config(new)

    def reload(self) -> bool:
        """Re-read feeds.toml; apply it if valid, else keep the last good one. True if applied.

        Blocks while loading: on the loop, use `request_reload` or `reload_in_thread`.
        """
        new = self._load_for_reload()
        return new is not None and self._apply_config(new)

    def _load_for_reload(self) -> Config | None:
        """The configuration now in feeds.toml, or None (logged) when it cannot be used.

        Thread-safe: it touches nothing of the daemon's but its path."""
        try:
            return load_config(self.config_path, display_name=str(self.config_path))
        except ConfigError as e:
            for problem in (e, *e.others):
                log.error("configuration not reloaded: %s", problem)
            return None
        except Exception:
            log.exception("configuration not reloaded: %s could not be read", self.config_path)
            return None

    def _apply_config(self, new: Config) -> bool:
        """Make `new` (valid) the running configuration; True."""
        old, self.config = self.config, new
        if new == old:
            return True
        if (new.server, new.store) != (self._started.server, self._started.store):
            if (new.server, new.store) != (old.server, old.store):
                log.warning("[server] and [store] changes take effect when the daemon restarts")
            self.config = Config(
                new.path,
                new.site,
                new.poll,
                new.publish,
                self._started.store,
                self._started.server,
                new.sources,
            )
        if new.poll != old.poll:
            self._retire(self._fetcher)
            self._fetcher = self._new_fetcher(new)
        self.files.root = new.publish.output_dir.resolve()
        self._unsynced = True  # the store learns the new sources at the next claim, made now
        added = {s.name for s in new.sources} - {s.name for s in old.sources}
        removed = {s.name for s in old.sources} - {s.name for s in new.sources}
        for name in removed:
            self.metrics.forget_source(name)
            if task := self._inflight.get(name):
                task.cancel()
        self.metrics.sources.set(len(new.sources))
        log.info(
            "configuration reloaded: %d sources (%d added, %d removed)",
            len(new.sources),
            len(added),
            len(removed),
        )
        self._claim_soon()  # it syncs the store; new sources are polled at once
        self.request_publish()
        return True

    def _sync_disabled_metrics(self, states: list[SourceState]) -> None:
        """The disabled-source gauge from the store: right after a restart or a url change."""
        configured = {s.name for s in self.config.sources}
        for state in states:
            if state.name in configured and state.disabled:
                self.metrics.disabled.labels(source=state.name).set(1)
            else:
                self.metrics.forget_disabled(state.name)

    def _retire(self, fetcher: Fetcher) -> None:
        """Close an old fetcher once the polls still using it are done."""
        running = list(self._inflight.values())

        async def close() -> None:
            await asyncio.gather(*running, return_exceptions=True)
            await fetcher.__aexit__(None, None, None)

        self._spawn(close())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_config(self) -> None:
        """Reload on every change of feeds.toml.

        Watches the directory, not the file: editors save by writing a new file and renaming
        it over the old one, which would silently end a watch on the old file's inode.
        """
        target = self.config_path.resolve()

        def is_config(_: object, path: str) -> bool:
            return Path(path) == target

        async for _ in awatch(
            target.parent,
            watch_filter=is_config,
            stop_event=self._stopping,
            debounce=200,
            recursive=False,
        ):
            if target.exists():
                self.request_reload()

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run until stop() or SIGTERM/SIGINT; returns once everything is closed."""
        if self.options.serve:
            raise_open_file_limit(self.config.server.max_connections)
        listener = (
            listen_socket(self.config.server.host, self.config.server.port)
            if self.options.serve
            else None
        )  # first: a taken port ends the start-up before anything else happens
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        remove_stale_temp_files(self.config.publish.output_dir)
        self._spawn(self.watchdog.run())
        await self._sync_store()
        for owner in self.store.claim_holders(self.clock()):
            if is_dead_here(owner):
                released = self.store.release_all(owner)
                log.info("took back %d claims of %s, a process that died", released, owner)
        self.metrics.sources.set(len(self.config.sources))
        await self._publish()  # the outputs reflect the current configuration from the start
        self._scheduler.start()
        self._scheduler.add_job(
            self.tick, "interval", seconds=self.options.tick_seconds, id="tick",
            max_instances=1, coalesce=True,
        )  # fmt: skip
        self._scheduler.add_job(
            self._housekeeping, "interval", seconds=self.options.housekeeping_seconds,
            id="housekeeping", max_instances=1, coalesce=True,
        )  # fmt: skip
        self._scheduler.add_job(
            self._follow_soon, "interval", seconds=self.options.follow_seconds, id="follow",
            max_instances=1, coalesce=True,
        )  # fmt: skip
        await self.tick()
        server = self._start_server(listener) if listener is not None else None
        self._spawn(self._watch_config())
        log.info("daemon started: %d sources", len(self.config.sources))
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(server)

    def _start_server(self, listener: socket.socket) -> tuple[EmbeddedServer, asyncio.Task[None]]:
        app = create_app(
            self.files.root, files=self.files, health=self.health, metrics=self.metrics.render
        )
        settings = self.config.server
        server = embedded_server(
            app,
            settings.host,
            settings.port,
            request_timeout=settings.request_timeout.total_seconds(),
            max_connections=settings.max_connections,
        )
        task = asyncio.create_task(server.serve(sockets=[listener]), name="server")
        return server, task

    async def _shutdown(self, server: tuple[EmbeddedServer, asyncio.Task[None]] | None) -> None:
        log.info("stopping")
        self._scheduler.shutdown(wait=False)
        # A claim under way ends by giving back what it got (it sees the stop).
        await asyncio.gather(*self._claims, return_exceptions=True)
        polls = list(self._inflight.values())
        for task in polls:
            task.cancel()
        if polls:
            # A poll waiting for a database that is away may outlast the grace: go on
            # without it (its claim runs out with its lease).
            await asyncio.wait(polls, timeout=STOP_GRACE_SECONDS)
        # A parse under way (a runaway one, even) must not keep the process alive past the
        # stop: its worker is killed, not waited for. The polls that wanted it are gone.
        PARSERS.close(kill=True)
        self._last_publish_done = True
        # Publishing gets STOP_GRACE_SECONDS in all: the last publish and any under way.
        publishing_ends = asyncio.get_running_loop().time() + STOP_GRACE_SECONDS
        if self._publish_handle is not None:
            # What was stored is published before the store closes.
            self._publish_handle.cancel()
            self._publish_handle = None
            last = asyncio.create_task(self._publish(), name="publish")
            self._publishes.add(last)
            last.add_done_callback(self._publishes.discard)
            await asyncio.wait([last], timeout=STOP_GRACE_SECONDS)
        if server is not None:
            instance, task = server
            instance.should_exit = True
            try:
                await asyncio.wait_for(task, timeout=STOP_GRACE_SECONDS)
            except TimeoutError:
                instance.force_exit = True
                task.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._fetcher.__aexit__(None, None, None)
        # A publish or copy still running in its thread keeps the lock until it is done: wait
        # for it until the grace is over, then stop without it. Its thread is a daemon
        # thread, which ends with the process; the store it uses stays open till then (it
        # cannot be closed under a thread using it).
        left = max(0.0, publishing_ends - asyncio.get_running_loop().time())
        stuck = (await asyncio.wait(self._publishes, timeout=left))[1] if self._publishes else ()
        if stuck:
            log.error(
                "a publish is still running after %.0f s; stopping without it",
                STOP_GRACE_SECONDS,
            )
            for task in stuck:
                task.cancel()
        else:
            self._publisher.close()
        self.store.close()
        log.info("stopped")

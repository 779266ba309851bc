"""The long-running daemon: schedule polls, publish, serve, reload feeds.toml, stop cleanly.

Everything runs in one asyncio loop, split along its loops:
- `polling`: an APScheduler (3.x) tick claims the sources whose stored `next_poll` has
  come (`claim_due`: with a shared PostgreSQL store, each due source goes to exactly one
  daemon) and polls them through the one poll path (`poll.poll_claimed`, as `once` does),
  one shared bounded `Fetcher` and the daemon's parser pool. A source is never polled
  twice at once (the in-flight set), and a restart resumes from the stored schedule.
- `publishing`: a debounced publish follows any poll that stored something (in a thread,
  under the store's publish lock), and every few seconds the files another daemon sharing
  the store published are copied into `output/`.
- `reload`: watchfiles (or SIGHUP) loads feeds.toml off the loop; `Daemon` applies it.
- `health`: what `/healthz` answers; uvicorn serves `output/`.
- `hub`: the built-in WebSub hub (`aggregator.hub`): `/websub`, and after each publish of
  this daemon the changed feeds delivered to their subscribers, in tasks of its own.
This module owns their lifecycle: start, run, stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator.announce import PollTally, start_line, start_log, summary_line
from aggregator.cycle import apply_retention
from aggregator.daemon import health
from aggregator.daemon.polling import Polling
from aggregator.daemon.publishing import Publishing
from aggregator.daemon.reload import Reloader, effective_config
from aggregator.daemon.subscribing import Hooks, Subscriber
from aggregator.daemon.threads import loop_first
from aggregator.errors import AggregatorError
from aggregator.heap import freeze_startup, thaw
from aggregator.hub.service import Hub
from aggregator.metrics import Metrics
from aggregator.output import remove_stale_temp_files
from aggregator.poll import Clock, claim_owner, utc_now
from aggregator.server import (
    EmbeddedServer,
    PublishedFiles,
    create_app,
    embedded_server,
    listen_socket,
    raise_open_file_limit,
)
from aggregator.settings import Config, Listen
from aggregator.store import open_store
from aggregator.store.adapter import AsyncStore
from aggregator.watchdog import BLOCK_SECONDS, LoopWatch, StoreFileWatch, Watchdog

__all__ = ["Daemon", "DaemonOptions"]

log = logging.getLogger("aggregator")

STOP_GRACE_SECONDS = 5.0


class _NotCancellations(logging.Filter):
    """APScheduler logs a job it cancelled at shutdown (a tick, housekeeping under way) as
    "Error running job" with a traceback: a stop is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


logging.getLogger("apscheduler.executors.default").addFilter(_NotCancellations())


@dataclass
class DaemonOptions:
    tick_seconds: float = 1.0
    publish_debounce_seconds: float = 1.0
    housekeeping_seconds: float = 600.0
    follow_seconds: float = 5.0  # how often to look for files another daemon published
    serve: bool = True
    loop_block_seconds: float = BLOCK_SECONDS  # a loop this late makes /healthz say 503
    # `--host`/`--port`: over `[server]`, at start and at each reload
    listen: Listen = field(default_factory=Listen)


class Daemon:
    """Owns the store, the scheduler, the loops, the server and the current configuration."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        options: DaemonOptions | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.options = options or DaemonOptions()
        self.config = config = self.options.listen.applied(config)
        self._started = config  # [server] and [store] stay as they were at start
        self.clock = clock
        self.metrics = Metrics()
        self.store = AsyncStore(open_store(config.store.target))
        self.files = PublishedFiles(config.publish.output_dir)
        self._stopping = asyncio.Event()
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._background: set[asyncio.Task[None]] = set()
        self.hub = Hub(
            self.store,
            config=self._current,
            files=self.files,
            metrics=self.metrics,
            clock=clock,
            owner=claim_owner(),
        )
        self.publishing = Publishing(
            config.store.target,
            config=self._current,
            metrics=self.metrics,
            clock=clock,
            debounce=self.options.publish_debounce_seconds,
            on_published=self.hub.published,
        )
        self.hub.deliveries.catch_up = self.publishing.catch_up  # see `hub.deliver`
        self.polling = Polling(
            self.store,
            config=self._current,
            metrics=self.metrics,
            clock=clock,
            stopping=self._stopping,
            on_stored=self.publishing.request,
            spawn=self._spawn,
        )
        self.subscriber = Subscriber(
            self.store,
            config=self._current,
            metrics=self.metrics,
            clock=clock,
            hooks=Hooks(
                poller=self.polling.poller,
                claim_soon=self.polling.claim_soon,
                on_stored=self.publishing.request,
                spawn=self._spawn,
            ),
        )
        self.polling.after_poll = self.subscriber.after_poll
        self.reloader = Reloader(
            config_path,
            apply=self._apply_config,
            stopping=self._stopping,
            spawn=self._spawn,
            templates=lambda: self.config.publish.theme.path,
        )
        self.watchdog = Watchdog(
            LoopWatch(block=self.options.loop_block_seconds, on_lag=self.metrics.loop_lag.set),
            [
                self.publishing.failing_problem,
                self.publishing.stuck_problem,
                self.polling.record_problem,
            ],
        )
        if not self.store.remote:  # SQLite: a file that can vanish under us
            self.watchdog.probes.insert(1, StoreFileWatch(config.store.path).problem)
        self.watchdog.probes.append(self.polling.parser_problem)

    def _current(self) -> Config:
        return self.config

    async def health(self) -> str | None:
        """What `/healthz` says: None, or why the daemon is unhealthy."""
        return await health.health(self._scheduler.running, self.watchdog, self.store)

    def request_publish(self) -> None:
        self.publishing.request()

    def request_reload(self) -> None:
        self.reloader.request()

    def reload(self) -> bool:
        """Re-read feeds.toml and apply it if valid (blocking: see `Reloader.reload`)."""
        return self.reloader.reload()

    def _apply_config(self, new: Config) -> bool:
        """Make `new` (valid) the running configuration; True."""
        old = self.config
        new = self.options.listen.applied(new)
        if new == old:
            return True
        fixed = (new.server, new.store)
        if fixed not in ((old.server, old.store), (self._started.server, self._started.store)):
            log.warning("[server] and [store] changes take effect when the daemon restarts")
        self.config = new = effective_config(new, self._started)
        self.files.root = new.publish.output_dir.resolve()
        for name in {s.name for s in old.sources} - {s.name for s in new.sources}:
            self.metrics.forget_source(name)
        self.metrics.sources.set(len(new.sources))
        added = {s.name for s in new.sources} - {s.name for s in old.sources}
        removed = {s.name for s in old.sources} - {s.name for s in new.sources}
        log.info(
            "configuration reloaded: %d sources (%d added, %d removed), %d channels%s",
            len(new.sources),
            len(added),
            len(removed),
            len(new.channels),
            _channel_changes(old, new),
        )
        self.polling.reconfigured(old, new)  # it syncs the store; new sources polled at once
        self._spawn(self.subscriber.reconcile())  # removed sources, changed URLs: unsubscribe
        self.publishing.request()
        return True

    async def _housekeeping(self) -> None:
        """Keep the WAL small, and re-publish so items past `max_age` leave the feeds even
        when nothing new arrives (an unchanged result rewrites nothing)."""
        config = self.config
        try:
            await self.store.run(lambda s: apply_retention(config, s, self.clock()))
            await self.store.checkpoint()
        except AggregatorError as e:  # the store is away; the next round tries again
            log.error("housekeeping failed: %s", e)
        self.publishing.request()

    async def _summarize(self) -> None:
        """Log what polling did since the last summary, and when the next poll is due: a
        daemon that logs nothing for hours is otherwise indistinguishable from a hung one."""
        tally, self.polling.tally = self.polling.tally, PollTally()
        configured = {s.name for s in self.config.sources}
        try:
            states = await self.store.source_states()
        except AggregatorError as e:  # the store is away: say what is known
            log.info("%s; next poll unknown (%s)", summary_line(tally, None, self.clock()), e)
            return
        due = [
            s.next_poll
            for s in states
            if s.name in configured and not s.disabled and s.next_poll is not None
        ]
        log.info("%s", summary_line(tally, min(due, default=None), self.clock()))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A background task, cancelled at the stop."""
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Run until stop() or SIGTERM/SIGINT; returns once everything is closed."""
        with loop_first():  # the loop's store calls are not kept waiting by a publish
            await self._run()

    async def _run(self) -> None:
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
        await self.polling.sync_store()
        await self.polling.take_back_dead_claims()
        self._spawn(self.subscriber.reconcile())
        self.metrics.sources.set(len(self.config.sources))
        await self.publishing.publish()  # the outputs reflect the configuration from the start
        freeze_startup(collect=True)  # what start-up made (the renderer's imports included)
        self.hub.start()
        self._schedule()
        await self.polling.tick()
        server = self._start_server(listener) if listener is not None else None
        self._spawn(self.reloader.watch())
        if server is not None:
            start_log.info("%s", start_line(self.config))
        else:
            log.info("daemon started: %d sources", len(self.config.sources))
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(server)

    def _schedule(self) -> None:
        """Start the scheduler with its jobs: the tick, housekeeping, copying, the summary."""
        self._scheduler.start()
        jobs = (
            (self.polling.tick, self.options.tick_seconds, "tick"),
            (self._housekeeping, self.options.housekeeping_seconds, "housekeeping"),
            (self.publishing.follow_soon, self.options.follow_seconds, "follow"),
            (self._summarize, self._started.server.summary_interval.total_seconds(), "summary"),
            (self.subscriber.refresh_soon, self.options.follow_seconds, "websub"),
        )
        for job, seconds, name in jobs:
            self._scheduler.add_job(
                job, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True
            )

    def _start_server(self, listener: socket.socket) -> tuple[EmbeddedServer, asyncio.Task[None]]:
        app = create_app(
            self.files.root,
            files=self.files,
            health=self.health,
            metrics=self.metrics.render,
            links=self.hub.link_header,
            routes=[self.hub.route(), *self.subscriber.routes()],
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
        await self.polling.stop(STOP_GRACE_SECONDS)
        # Publishing gets STOP_GRACE_SECONDS in all: the last publish and any under way.
        publishing_ends = await self.publishing.publish_last(STOP_GRACE_SECONDS)
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
        await self.hub.close()
        await self.polling.close()
        await self.subscriber.close()
        await self.publishing.close(publishing_ends, STOP_GRACE_SECONDS)
        self.store.close()
        thaw()
        log.info("stopped")


def _channel_changes(old: Config, new: Config) -> str:
    """ " (added news; removed sport)": which channels a reload adds and removes, if any."""
    before, after = [c.name for c in old.channels], [c.name for c in new.channels]
    parts = [
        f"{verb} {', '.join(names)}"
        for verb, names in (
            ("added", [n for n in after if n not in before]),
            ("removed", [n for n in before if n not in after]),
        )
        if names
    ]
    return f" ({'; '.join(parts)})" if parts else ""

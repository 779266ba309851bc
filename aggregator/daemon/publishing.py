"""The daemon's publishing loop: debounced and paced publishes, copies of what another
daemon published, and the probes that say when either goes wrong.

Publishing runs off the loop, in a daemon thread (`threads.in_daemon_thread`): waiting for
another daemon's publish lock, or rendering a big timeline, must not stall polling and
serving, and a publish stuck at a stop must not keep the process alive.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from aggregator.daemon.health import Trouble
from aggregator.daemon.memory import release_free_memory
from aggregator.daemon.threads import in_daemon_thread
from aggregator.errors import AggregatorError
from aggregator.metrics import Metrics
from aggregator.poll import Clock
from aggregator.publish import PublishReport, publish_timeline
from aggregator.settings import Config
from aggregator.snapshot import copied_files, follow_published
from aggregator.store import StoreAPI, open_store

log = logging.getLogger("aggregator")

T = TypeVar("T")

# After a publish that took s seconds, the next one starts no sooner than PUBLISH_PACE × s
# after it ended: publishing takes at most a fifth of the daemon's time, however large the
# timeline, even while thousands of sources bring new items at once (a first start, a
# big store). A quick publish (the usual: milliseconds) leaves the debounce in charge.
PUBLISH_PACE = 4.0
PUBLISH_RETRY_SECONDS = 10.0  # after a publish the store made fail
# A publish this long, or one that rendered archive days, gives its memory back after it
# (`memory.release_free_memory`); a quick one (milliseconds) leaves little to give.
HEAVY_PUBLISH_SECONDS = 0.2
# A publish (bounded reads: milliseconds to a few seconds) still running after this long is
# stuck: /healthz says so, since the published files are going stale meanwhile.
PUBLISH_STUCK_SECONDS = 60.0


def _publish_and_release(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """A publish; then, after a heavy one (archive days rendered, or long), the memory it
    held (rendered documents, days' items) given back to the system: the daemon's size
    stays that of its steady state between them."""
    try:
        report = publish_timeline(config, store, now)
    except BaseException:
        release_free_memory()
        raise
    if report.archive_days or report.seconds >= HEAVY_PUBLISH_SECONDS:
        release_free_memory()
    return report


class Publishing:
    """One publish or copy at a time; a burst of requests makes one publish.

    It reads the store through a store object of its own, opened from the same target:
    its work runs in a thread, and an SQLite connection must not be shared with the loop's
    thread in the middle of a transaction (PostgreSQL's pool would allow it; one rule for
    both keeps the store choice out of this module). That store is closed at the end of a
    stop only if no publish is still running on it.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        config: Callable[[], Config],
        metrics: Metrics,
        clock: Clock,
        debounce: float,
        on_published: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self._store = open_store(target)
        # Told the files each publish of this daemon rewrote (never a copy's): the WebSub
        # hub delivers what changed, from the one daemon that published it.
        self._on_published = on_published
        self._config = config  # the running configuration, which a reload replaces
        self._metrics = metrics
        self._clock = clock
        self._debounce = debounce
        self._lock = asyncio.Lock()  # one publish or copy at a time in this daemon
        self.running: set[asyncio.Task[None]] = set()  # awaited, never cancelled, at stop
        self.pending: asyncio.TimerHandle | None = None  # the publish asked for, not begun
        self._done = False  # stopping: nothing more to publish
        self._next = 0.0  # loop time before which no publish starts (PUBLISH_PACE)
        self._since: float | None = None  # time.monotonic() a publish's thread began
        self._trouble = Trouble("publishing")
        self._follow_trouble = Trouble("copying the published files")

    # -- probes ----------------------------------------------------------------------------

    def failing_problem(self) -> str | None:
        """Publishing has failed through two retries: the outputs are going stale. (One
        retry's wait alone would flap: it ends about when that retry does.)"""
        failing = self._trouble.seconds()
        if failing <= 2 * PUBLISH_RETRY_SECONDS:
            return None
        return f"publishing has failed for {failing:.0f} s: {self._trouble.current}"

    def stuck_problem(self) -> str | None:
        """A publish or copy has been running far longer than one takes: nothing new reaches
        the published files meanwhile."""
        running = 0.0 if self._since is None else time.monotonic() - self._since
        if running <= PUBLISH_STUCK_SECONDS:
            return None
        return f"a publish has been running for {running:.0f} s"

    # -- publishing ------------------------------------------------------------------------

    def request(self) -> None:
        """Publish soon; a burst of requests produces one publish."""
        if self.pending is None and not self._done:
            loop = asyncio.get_running_loop()
            wait = max(self._debounce, self._next - loop.time())
            self.pending = loop.call_later(wait, self.start)

    def start(self) -> None:
        """Begin the publish asked for, unless one (or a copy) is under way or the pace
        forbids it yet: then look again once it has ended and set the pace."""
        loop = asyncio.get_running_loop()
        early = self._next - loop.time()
        if self._lock.locked() or early > 0:
            wait = max(early, self._debounce)
            self.pending = loop.call_later(wait, self.start)
            return
        self.pending = None
        self._keep(self.publish(), "publish")

    def _keep(self, work: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(work, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def publish(self) -> None:
        """Publish now (after any publish or copy under way)."""
        async with self._lock:
            config = self._config()
            try:
                report = await self._off_loop(
                    "publish", _publish_and_release, config, self._store, self._clock()
                )
            except Exception as e:
                # The store away, or a bug: the daemon keeps polling and serving the last
                # good files, tries again a little later, and /healthz says so meanwhile.
                self._trouble.failed(e, bug=not isinstance(e, AggregatorError))
                self._next = asyncio.get_running_loop().time() + PUBLISH_RETRY_SECONDS
                self.request()
                return
        self._trouble.worked()
        self._next = asyncio.get_running_loop().time() + PUBLISH_PACE * report.seconds
        self._metrics.published(self._clock())
        self._metrics.publishes.inc()
        self._metrics.publish_seconds.observe(report.seconds)
        if self._on_published is not None and report.changed:
            self._on_published(report.changed)
        if report.unfinished:
            # Archive days left for the next publish (one publish's work is bounded): it
            # comes at the pace, so they cost at most a fifth of the daemon's time.
            self.request()

    async def _off_loop(self, name: str, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a daemon thread, timed for `stuck_problem`."""
        self._since = time.monotonic()
        try:
            return await in_daemon_thread(name, work, *args)
        finally:
            self._since = None

    # -- copying what another daemon published ---------------------------------------------

    async def follow_soon(self) -> None:
        """The scheduler's job: start a copy unless one, or a publish, is under way (waiting,
        perhaps, for a database that is away). The scheduler itself never waits."""
        if not self._lock.locked():
            self._keep(self._follow(), "follow")

    async def catch_up(self) -> bool:
        """Bring output/ up to the store's snapshot now, after any publish or copy under
        way (the hub's deliveries: see `hub.deliver`); False if the copy failed (it says
        why). The copy is this object's, awaited at its stop like any other: a caller
        cancelled leaves it running. None is begun once stopping (False): a copy then
        would hold the stop for as long as it takes, and what is owed is delivered by the
        next start or another daemon."""
        if self._done:
            return False
        copied: bool = await asyncio.shield(self._keep(self._follow(), "follow"))
        return copied

    async def _follow(self) -> bool:
        """Serve what another daemon sharing the store published: copy its snapshot here
        (False if that failed)."""
        async with self._lock:
            output_dir = self._config().publish.output_dir
            try:
                written = await self._off_loop("follow", follow_published, output_dir, self._store)
            except AggregatorError as e:
                self._follow_trouble.failed(e)
                return False
            except Exception:  # a bug; the next round tries again
                log.exception("copying the published files failed")
                return False
            self._follow_trouble.worked()
        if any(written.values()):
            log.info("copied the files another daemon published (%s)", copied_files(written))
        return True

    # -- stopping --------------------------------------------------------------------------

    async def publish_last(self, grace: float) -> float:
        """What was stored is published before the store closes: the publish asked for, if
        any, within `grace` seconds. Returns the loop time publishing's grace ends."""
        self._done = True
        ends = asyncio.get_running_loop().time() + grace
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
            await asyncio.wait([self._keep(self.publish(), "publish")], timeout=grace)
        return ends

    async def close(self, ends: float, grace: float) -> None:
        """Wait, until loop time `ends`, for a publish or copy still in its thread; then
        stop without it. Its thread is a daemon thread, which ends with the process; the
        store it uses stays open till then (it cannot be closed under a thread using it)."""
        left = max(0.0, ends - asyncio.get_running_loop().time())
        stuck = (await asyncio.wait(self.running, timeout=left))[1] if self.running else ()
        if stuck:
            log.error("a publish is still running after %.0f s; stopping without it", grace)
            for task in stuck:
                task.cancel()
        else:
            self._store.close()

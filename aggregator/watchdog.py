"""The daemon's watchdog: is the event loop waking on time, is the store file still ours,
and whatever else the daemon asks it (`probes`). `/healthz` reports the first problem.

A probe is a function returning why the daemon is unhealthy, or None; it is called on the
loop, so it must answer at once (no waiting on a database). The loop's lag is measured by a
task that sleeps and sees how late it wakes; a thread beside it sees a block while it lasts
and logs, once per block, what the loop's thread is doing. A block ends before `/healthz`
can answer (it is served by that loop), so a block is reported for `remember` seconds after.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("aggregator")

Probe = Callable[[], str | None]

BEAT_SECONDS = 0.5  # how often the loop task wakes (and the monitor thread looks)
BLOCK_SECONDS = 5.0  # a loop this late is blocked: every request and poll waits meanwhile
BLOCK_REMEMBER_SECONDS = 60.0  # /healthz reports a block for this long after it ended
CHECK_SECONDS = 2.0  # the probes also run this often, so that they log without /healthz


@dataclass(frozen=True)
class Block:
    """A time the loop did not wake for `seconds`; `where` it was (file:line in function)."""

    ended: float  # time.monotonic()
    seconds: float
    where: str


class LoopWatch:
    """Measures the event loop's lag; remembers the last block longer than `block`."""

    def __init__(
        self,
        *,
        block: float = BLOCK_SECONDS,
        remember: float = BLOCK_REMEMBER_SECONDS,
        beat: float = BEAT_SECONDS,
        on_lag: Callable[[float], None] | None = None,
    ) -> None:
        self.block = block
        self.remember = remember
        self.beat = beat
        self.lag = 0.0
        self.last_block: Block | None = None
        self._on_lag = on_lag
        self._last_beat = time.monotonic()
        self._where = ""  # what the monitor saw the loop's thread doing during this block
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()

    async def run(self) -> None:
        """Beat until cancelled, with the monitor thread beside."""
        self._loop_thread = threading.get_ident()
        self._last_beat = time.monotonic()
        self._stop.clear()
        monitor = threading.Thread(target=self._monitor, name="loop-watchdog", daemon=True)
        monitor.start()
        try:
            while True:
                started = time.monotonic()
                await asyncio.sleep(self.beat)
                self._beat(started)
        finally:
            self._stop.set()
            monitor.join(timeout=self.beat * 4)

    def _beat(self, started: float) -> None:
        now = time.monotonic()
        self.lag = max(0.0, now - started - self.beat)
        if self._on_lag is not None:
            self._on_lag(self.lag)
        if self.lag > self.block:
            where, self._where = self._where, ""
            self.last_block = Block(now, self.lag, where)
            log.warning("the event loop was blocked for %.1f s%s", self.lag, _in(where))
        self._last_beat = now

    def _monitor(self) -> None:
        """A thread: while the loop misses its beats for more than `block`, log once what
        its thread is doing (a stack, as faulthandler would show it)."""
        reported = 0.0  # the beat whose block was already logged
        while not self._stop.wait(self.beat):
            last = self._last_beat
            late = time.monotonic() - last
            if late <= self.block or last == reported:
                continue
            reported = last
            frame = sys._current_frames().get(self._loop_thread)
            stack = traceback.extract_stack(frame) if frame is not None else []
            if stack:
                self._where = f"{stack[-1].filename}:{stack[-1].lineno} in {stack[-1].name}"
            log.error(
                "the event loop has been blocked for %.1f s; its thread is at:\n%s",
                late,
                "".join(traceback.format_list(stack[-8:])).rstrip() or "(unknown)",
            )

    def problem(self) -> str | None:
        now = time.monotonic()
        late = now - self._last_beat
        if late > self.block:
            return f"the event loop has been blocked for {late:.1f} s{_in(self._where)}"
        if self.last_block is not None and now - self.last_block.ended < self.remember:
            ago = now - self.last_block.ended
            return (
                f"the event loop was blocked for {self.last_block.seconds:.1f} s, "
                f"{ago:.0f} s ago{_in(self.last_block.where)}"
            )
        return None


def _in(where: str) -> str:
    return f" (in {where})" if where else ""


class StoreFileWatch:
    """The SQLite file the store opened: still there, and still the same file (inode)?

    A deleted or replaced file goes unnoticed by the open connection, which writes on into
    the old inode: everything stored from then on is lost at the next restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity = self._stat()
        self._reported: str | None = None

    def _stat(self) -> tuple[int, int]:
        st = self.path.stat()
        return (st.st_dev, st.st_ino)

    def problem(self) -> str | None:
        try:
            reason = (
                None
                if self._stat() == self._identity
                else f"the store file {self.path} has been replaced by another file"
            )
        except FileNotFoundError:
            reason = f"the store file {self.path} has vanished"
        except OSError as e:
            reason = f"cannot check the store file {self.path}: {e.strerror or e}"
        if reason is not None:
            reason += "; what is stored now is lost at a restart: restore it, then restart"
        if reason != self._reported:
            if reason is not None:
                log.error("%s", reason)
            else:
                log.info("the store file %s is back", self.path)
        self._reported = reason
        return reason


class Watchdog:
    """The loop watch and the probes, asked in order; the first problem wins.

    To watch something more, append a probe: `daemon.watchdog.probes.append(fn)`.
    """

    def __init__(self, loop: LoopWatch, probes: list[Probe] | None = None) -> None:
        self.loop = loop
        self.probes: list[Probe] = [loop.problem, *(probes or [])]

    def problem(self) -> str | None:
        for probe in self.probes:
            try:
                reason = probe()
            except Exception as e:  # a bug in a probe is a reason, not a crash of /healthz
                log.exception("a health probe failed")
                reason = f"a health probe failed: {type(e).__name__}: {e}"
            if reason is not None:
                return reason
        return None

    async def run(self, check: float = CHECK_SECONDS) -> None:
        """Watch the loop, and run the probes now and then so that they log by themselves."""
        beating = asyncio.create_task(self.loop.run(), name="loop-watch")
        try:
            while True:
                await asyncio.sleep(check)
                self.problem()
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)


def stalled_parsers_problem(stalled_seconds: float, budget: float) -> str | None:
    """The parser pool's probe: work in flight and nothing finished for longer than a parse
    may take (`ParsePool.stalled_seconds()` against the parse budget)."""
    if stalled_seconds <= budget:
        return None
    return f"the parser pool has finished nothing for {stalled_seconds:.0f} s"

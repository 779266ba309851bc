"""The daemon's reload loop: watch feeds.toml (or wait for SIGHUP), load it off the loop,
and hand a valid configuration to the daemon to apply; a bad one keeps the last good one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from watchfiles import awatch

from aggregator.config import load_config
from aggregator.daemon.threads import in_daemon_thread
from aggregator.errors import ConfigError
from aggregator.settings import Config

log = logging.getLogger("aggregator")


def effective_config(new: Config, started: Config) -> Config:
    """`new` as the daemon can apply it: `[server]` and `[store]` stay as they were at
    start (a listening socket and an open store are not swapped under running work)."""
    if (new.server, new.store) == (started.server, started.store):
        return new
    return replace(new, store=started.store, server=started.server)


class Reloader:
    """Loads feeds.toml when asked, never on the loop; `apply` makes a valid one current."""

    def __init__(
        self,
        path: Path,
        *,
        apply: Callable[[Config], bool],
        stopping: asyncio.Event,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        templates: Callable[[], Path | None] = lambda: None,
    ) -> None:
        self.path = path
        self._apply = apply
        self._stopping = stopping
        self._spawn = spawn
        self._templates = templates  # the running theme's directory, watched too
        self._rewatch = asyncio.Event()  # the directory to watch changed
        self._way = _way_to(path)  # the symlinks and the file feeds.toml led to when watched
        self._loading: asyncio.Task[None] | None = None  # loading feeds.toml in a thread
        self._wanted = False  # asked for again while loading: load once more after
        self._refused = False  # the last load was refused: the next good one says so
        # The file as the running configuration was read from it (the daemon was built from
        # a load just before this): an edit made before the watch began is caught up with.
        self._read = _stamp(path)

    def request(self) -> None:
        """Reload in the background (SIGHUP, the file watcher), never on the loop itself.

        Loading probes every filter pattern (a quarter second for each that backtracks) and
        validates every source: seconds for a large or hostile file, which on the loop
        stalled polls, `/healthz` and the watchdog (a false 503). A request made while a
        load is under way coalesces into one more load once it ends, so the last edit wins
        and edits in a burst cost two loads, not one each.
        """
        if self._stopping.is_set():
            return  # a stop is under way: its store and tasks are closing
        self._wanted = True
        if self._loading is None or self._loading.done():
            self._loading = self._spawn(self._reload_while_wanted())

    async def _reload_while_wanted(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                await self.reload_in_thread()
            except Exception:  # a bug in reloading must not end later reloads
                log.exception("configuration reload failed")

    async def reload_in_thread(self) -> bool:
        """`reload`, with the file read, parsed and probed in a worker thread; applied here."""
        # A daemon thread: probing a file of many backtracking patterns takes seconds, and a
        # stop must not wait for it (the default executor's threads are joined at exit).
        new = await in_daemon_thread("reload", self.load)
        watched = self._templates()
        applied = new is not None and self._apply(new)
        if self._templates() != watched or _way_to(self.path) != self._way:
            self._rewatch.set()
        return applied

    def reload(self) -> bool:
        """Re-read feeds.toml; apply it if valid, else keep the last good one. True if applied.

        Blocks while loading: on the loop, use `request` or `reload_in_thread`.
        """
        new = self.load()
        return new is not None and self._apply(new)

    def load(self) -> Config | None:
        """The configuration now in feeds.toml, or None (logged) when it cannot be used.

        Thread-safe: it touches nothing of the daemon's but its path (and whether the last
        load was refused, which only loads touch, one at a time)."""
        self._read = _stamp(self.path)
        try:
            config = load_config(self.path, display_name=str(self.path))
        except ConfigError as e:
            for problem in (e, *e.others):
                log.error("configuration not reloaded: %s", problem)
        except Exception:
            log.exception("configuration not reloaded: %s could not be read", self.path)
        else:
            self._recovered()
            for warning in config.warnings:
                log.warning("configuration: %s", warning)
            return config
        self._refused = True
        return None

    def _recovered(self) -> None:
        """After a refused load, say that this one is good, even when it is the very
        configuration running (a reverted edit, which applies nothing and so logs nothing
        else): the log's last word on feeds.toml must not stay the error.

        A warning, as the error was: at the default level the operator saw the error, and
        must see it end.
        """
        if self._refused:
            self._refused = False
            log.warning("configuration OK again: %s loads without errors", self.path)

    async def watch(self) -> None:
        """Reload on every change of feeds.toml, or of a template of the running theme,
        until the stop.

        Watches the directories, not the files: editors save by writing a new file and
        renaming it over the old one, which would silently end a watch on the old file's
        inode. A reload that moves `[publish] templates` starts a new watch.
        """
        while not self._stopping.is_set():
            self._rewatch.clear()
            ending = asyncio.Event()  # the stop, or a new directory to watch
            relay = asyncio.ensure_future(_first_of(self._stopping, self._rewatch, ending))
            try:
                await self._watch_until(ending)
            finally:
                relay.cancel()

    async def _watch_until(self, ending: asyncio.Event) -> None:
        # feeds.toml may be reached through symlinks that a deploy swaps (`ln -sfn v2.toml tmp
        # && mv -T tmp feeds.toml`; a release directory `current`; Kubernetes' `..data`):
        # each one met on the way is watched, by name in its directory, beside the file it
        # leads to, and a reload that finds the way changed starts a new watch.
        self._way = _way_to(self.path)
        links, target = self._way
        templates = self._templates()
        directories = list(dict.fromkeys([target.parent, *(link.parent for link in links)]))
        if templates is not None and templates.is_dir() and templates not in directories:
            directories.append(templates)

        # A change made before this watch took hold (while the daemon started, or between two
        # watches) has no event: once the watch has had time to begin, compare the file.
        catch_up = asyncio.get_running_loop().call_later(_CATCH_UP_SECONDS, self._catch_up)

        def is_watched(_: object, name: str) -> bool:
            path = Path(name)
            return (
                path == target
                or path in links
                or (templates is not None and path.parent == templates and path.suffix == ".j2")
            )

        try:
            async for _ in awatch(
                *directories,
                watch_filter=is_watched,
                stop_event=ending,
                debounce=200,
                recursive=False,
            ):
                if self.path.exists():
                    self.request()
        finally:
            catch_up.cancel()

    def _catch_up(self) -> None:
        if _stamp(self.path) not in (self._read, None):
            self.request()


_CATCH_UP_SECONDS = 0.5
_MAX_LINKS = 40  # as the kernel's own limit on a path's symlinks


def _way_to(path: Path) -> tuple[tuple[Path, ...], Path]:
    """The symlinks met resolving `path`, each as its real directory and its name, in order,
    and the file it leads to. Where the way cannot be read (a link gone meanwhile), what
    was found so far."""
    links: list[Path] = []
    absolute = path.absolute()
    current = Path(absolute.anchor)
    pending = list(reversed(absolute.parts[1:]))  # the next part last
    try:
        while pending and len(links) < _MAX_LINKS:
            name = pending.pop()
            if name == "..":
                current = current.parent
            elif name not in ("", "."):
                step = current / name
                if not step.is_symlink():
                    current = step
                    continue
                links.append(step)
                target = step.readlink()
                if target.is_absolute():
                    current = Path(target.anchor)
                    pending.extend(reversed(target.parts[1:]))
                else:
                    pending.extend(reversed(target.parts))
    except OSError:
        pass
    return tuple(links), path.resolve()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which version of the file is at `path` (inode, mtime, size), None when none is."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


async def _first_of(stopping: asyncio.Event, rewatch: asyncio.Event, ending: asyncio.Event) -> None:
    """Set `ending` once `stopping` or `rewatch` is set."""
    waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(rewatch.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    ending.set()

"""A reload loads feeds.toml off the event loop: probing catastrophic filter patterns (a
quarter second each) or validating thousands of sources never stalls polls or /healthz.

Before: 25 sources each with `exclude = ["(\\w+\\s?)+$"]` held the loop 6.5 s on a SIGHUP,
and the watchdog answered 503 for a minute.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.daemon import Daemon, DaemonOptions
from tests.feedfactory import Item, rss2
from tests.feedserver import FeedServer
from tests.test_daemon import Daemon as DaemonProcess
from tests.test_daemon import _free_port, _items, _write_config, wait_for
from tests.test_daemon_inprocess import _config, _feed, _run_for

# The watchdog's own threshold is lower than its default, so a stall shows in /healthz too.
OPTIONS = DaemonOptions(
    tick_seconds=0.1, publish_debounce_seconds=0.2, serve=False, loop_block_seconds=1.0
)
CATASTROPHIC = 25


def _catastrophic_sources(config: Path) -> None:
    """Append CATASTROPHIC sources, each with a backtracking `exclude` to probe (each one
    written differently, so no cache of probes by pattern text could hide the cost)."""
    feed = (config.parent / "a.xml").read_bytes()
    tables = []
    for n in range(CATASTROPHIC):
        (config.parent / f"slow{n}.xml").write_bytes(feed)
        pattern = "(\\\\w+\\\\s?)+$|^x{" + str(n + 1) + "}"
        tables.append(
            f'[[feeds]]\nname = "slow{n}"\nurl = "slow{n}.xml"\nexclude = ["{pattern}"]\n'
        )
    config.write_text(config.read_text(encoding="utf-8") + "".join(tables), encoding="utf-8")


def test_a_reload_of_catastrophic_patterns_leaves_the_loop_free(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=OPTIONS)
    lags: list[float] = []
    health: list[str | None] = []

    async def during() -> None:
        _catastrophic_sources(config)  # the file watcher asks for a reload
        # Probing 25 patterns takes 25 × 0.25 s at least, several times that on a busy machine.
        deadline = time.monotonic() + 120
        while len(daemon.config.sources) == 1 and time.monotonic() < deadline:
            started = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - started - 0.05)
        health.append(await daemon.health())

    caplog.set_level(logging.WARNING, logger="aggregator")
    asyncio.run(_run_for(daemon, 0.1, during))
    assert len(daemon.config.sources) == 1 + CATASTROPHIC
    assert lags and max(lags) < 1.0, f"the loop was held {max(lags):.2f} s"
    assert health == [None]
    ignored = [r for r in caplog.records if "is ignored" in r.getMessage()]
    assert len(ignored) >= CATASTROPHIC  # the probe really ran: each pattern reported


def test_reloads_asked_for_while_one_loads_coalesce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=OPTIONS)
    loads: list[int] = []
    load = daemon.reloader.load

    def slow_load() -> object:
        loads.append(1)
        time.sleep(0.3)  # in the worker thread
        return load()

    monkeypatch.setattr(daemon.reloader, "load", slow_load)

    async def during() -> None:
        for _ in range(10):
            os.kill(os.getpid(), signal.SIGHUP)  # the loop's handler asks for a reload
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)

    asyncio.run(_run_for(daemon, 0.1, during))
    assert len(loads) == 2  # the one under way, then one for all the requests it missed


@pytest.mark.slow
def test_a_stop_during_a_long_reload_ends_within_ten_seconds(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Sixty backtracking patterns take ~15 s to probe; a stop meanwhile does not wait."""
    item = Item("Alpha one", "https://a.example/1", "a1", datetime(2025, 7, 13, tzinfo=UTC))
    feed_server.add("/a.xml", rss2("A", "https://a.example/", [item]))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    _write_config(config, port, [("a", feed_server.url("/a.xml"))])
    daemon = DaemonProcess(config, port).start()
    try:
        wait_for(lambda: daemon.get("/healthz").status_code == 200, 30, "the daemon started")
        patterns = ", ".join(f'"(x{n}|a+)+$"' for n in range(60))
        text = config.read_text(encoding="utf-8") + f"exclude = [{patterns}]\n"
        config.write_text(text, encoding="utf-8")
        wait_for(lambda: "filter pattern" in daemon.log_text(), 20, "the reload began")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def test_an_edit_made_before_the_watch_began_is_reloaded(tmp_path: Path) -> None:
    """feeds.toml edited while the daemon starts (after its configuration was read, before
    its file watch took hold) has no change event: it is caught up with all the same."""
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    daemon = Daemon(config, load_config(config), options=OPTIONS)
    (tmp_path / "b.xml").write_bytes((tmp_path / "a.xml").read_bytes())
    config.write_text(
        config.read_text(encoding="utf-8") + '[[feeds]]\nname = "b"\nurl = "b.xml"\n',
        encoding="utf-8",
    )

    async def during() -> None:
        deadline = time.monotonic() + 30
        while len(daemon.config.sources) == 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(_run_for(daemon, 0.1, during))
    assert [s.name for s in daemon.config.sources] == ["a", "b"]


def _swap(link: Path, to: Path) -> None:
    """`ln -sfn TO tmp && mv -T tmp LINK`: a symlink replaced in one rename."""
    (link.parent / "swap").symlink_to(to)
    (link.parent / "swap").replace(link)


@pytest.mark.parametrize("layout", ["link", "chain", "release-directory"])
def test_a_symlinked_config_swapped_atomically_is_followed(tmp_path: Path, layout: str) -> None:
    """feeds.toml reached through symlinks that a deploy swaps: the file itself (`ln -sfn
    v2.toml tmp && mv -T tmp feeds.toml`, as Kubernetes updates a ConfigMap), a link in a
    chain of two, or a release directory (`current -> releases/1`). Only the final file's
    directory was watched: the swap went unnoticed, and so did every later edit of the new
    file. Then the new file is edited, and that is followed too."""
    conf = tmp_path / "conf"
    (conf / "r1").mkdir(parents=True)
    (conf / "r2").mkdir()
    _feed(tmp_path, _items("a", 1))
    for name in ("b", "c"):
        (tmp_path / f"{name}.xml").write_bytes((tmp_path / "a.xml").read_bytes())
    head = f'[publish]\nmax_age = "3650d"\n[store]\npath = "{tmp_path}/state.sqlite3"\n'
    feed = '[[feeds]]\nname = "{0}"\nurl = "' + str(tmp_path) + '/{0}.xml"\n'
    v1, v2 = conf / "r1" / "feeds.toml", conf / "r2" / "feeds.toml"
    v1.write_text(head + feed.format("a"), encoding="utf-8")
    v2.write_text(head + feed.format("a") + feed.format("b"), encoding="utf-8")
    if layout == "link":
        config = tmp_path / "feeds.toml"
        config.symlink_to(Path("conf") / "r1" / "feeds.toml")
        swap = functools.partial(_swap, config, Path("conf") / "r2" / "feeds.toml")
    elif layout == "chain":
        (tmp_path / "etc").mkdir()
        config = tmp_path / "etc" / "feeds.toml"
        (conf / "current.toml").symlink_to(Path("r1") / "feeds.toml")
        config.symlink_to(Path("..") / "conf" / "current.toml")
        swap = functools.partial(_swap, conf / "current.toml", Path("r2") / "feeds.toml")
    else:
        (tmp_path / "current").symlink_to(Path("conf") / "r1")
        config = tmp_path / "current" / "feeds.toml"
        swap = functools.partial(_swap, tmp_path / "current", Path("conf") / "r2")
    daemon = Daemon(config, load_config(config), options=OPTIONS)

    async def sources_become(names: list[str]) -> None:
        deadline = time.monotonic() + 20
        while [s.name for s in daemon.config.sources] != names:
            assert time.monotonic() < deadline, [s.name for s in daemon.config.sources]
            await asyncio.sleep(0.05)

    async def during() -> None:
        await asyncio.sleep(1.0)  # the watch has begun
        swap()
        await sources_become(["a", "b"])
        await asyncio.sleep(1.0)  # the new watch has begun
        with v2.open("a", encoding="utf-8") as f:
            f.write(feed.format("c"))
        await sources_become(["a", "b", "c"])

    asyncio.run(_run_for(daemon, 0.1, during))

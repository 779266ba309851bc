"""`RenderWorkers`: `aggregator once`'s archive days rendered on worker processes."""

from __future__ import annotations

import functools
import os
import signal
import time
from datetime import date, timedelta

import pytest

from aggregator.archive import ArchiveDay
from aggregator.errors import ThemeError
from aggregator.render.workers import RenderWorkers
from aggregator.types import Timeline

START = date(2025, 7, 1)


def days(count: int) -> list[ArchiveDay]:
    return [ArchiveDay(START + timedelta(days=n), Timeline(), None, None) for n in range(count)]


def _where(day: ArchiveDay) -> tuple[int, date]:
    return os.getpid(), day.day


def _ctrl_c_ignored(day: ArchiveDay) -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _fails_first(day: ArchiveDay) -> int:
    if day.day == START:
        raise ThemeError("templates/day.html.j2", 7, "'item' is undefined")
    time.sleep(120)  # a runaway template, within its 20 s budget many times over
    return os.getpid()


def _dies_in_a_worker(parent: int, day: ArchiveDay) -> int:
    if os.getpid() != parent and day.day == START + timedelta(days=1):
        os.kill(os.getpid(), signal.SIGKILL)  # as an out-of-memory kill would
    return os.getpid()


def test_results_come_in_order_from_other_processes() -> None:
    workers = RenderWorkers(2, min_items=0)
    try:
        results = list(workers.map(_where, days(20)))
        assert all(workers.map(_ctrl_c_ignored, days(4)))  # Ctrl-C is this process's to handle
    finally:
        workers.close()
    assert [d for _, d in results] == [d.day for d in days(20)]
    assert os.getpid() not in {pid for pid, _ in results}


def test_too_little_to_render_is_rendered_here() -> None:
    workers = RenderWorkers(2)  # 20 empty days: no items, nothing worth starting workers for
    assert list(workers.map(_where, days(20))) == [(os.getpid(), d.day) for d in days(20)]
    assert list(workers.map(_where, iter(()))) == []
    assert workers._executor is None
    assert [pid for pid, _ in RenderWorkers(1, min_items=0).map(_where, days(2))] == [
        os.getpid()
    ] * 2


def test_a_render_error_is_raised_here_and_stops_the_other_renders_at_once() -> None:
    workers = RenderWorkers(2, min_items=0)
    started = time.monotonic()
    with pytest.raises(ThemeError) as raised:
        list(workers.map(_fails_first, days(6)))
    # Not after the other days' renders ran out (two minutes each, a worker at a time).
    assert time.monotonic() - started < 60
    assert (raised.value.file, raised.value.line) == ("templates/day.html.j2", 7)
    assert str(raised.value) == "templates/day.html.j2:7: 'item' is undefined"
    assert workers._executor is None  # stopped, its workers killed


def test_a_worker_that_dies_leaves_its_days_to_be_rendered_here() -> None:
    workers = RenderWorkers(2, min_items=0)
    try:
        pids = list(workers.map(functools.partial(_dies_in_a_worker, os.getpid()), days(6)))
    finally:
        workers.close()
    # Every day rendered, the one its worker died on here (those that were still under
    # way then, depending on timing, too).
    assert len(pids) == 6
    assert pids[1] == os.getpid()


def test_a_worker_dead_between_two_maps_leaves_the_next_to_be_rendered_here() -> None:
    workers = RenderWorkers(2, min_items=0)
    try:
        first = list(workers.map(_where, days(4)))
        assert workers._executor is not None
        worker = next(pid for pid, _ in first if pid != os.getpid())
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while workers._executor is not None and not workers._executor._broken:
            assert time.monotonic() < deadline, "the pool never saw its worker die"
            time.sleep(0.05)
        assert [pid for pid, _ in workers.map(_where, days(4))] == [os.getpid()] * 4
    finally:
        workers.close()

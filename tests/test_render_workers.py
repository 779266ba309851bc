"""`RenderWorkers`: `map` on worker processes, for `aggregator once`'s archive days."""

from __future__ import annotations

import os
from contextlib import closing

import pytest

from aggregator.errors import ThemeError
from aggregator.render.workers import RenderWorkers


def _pid_and_square(n: int) -> tuple[int, int]:
    return os.getpid(), n * n


def _fails(n: int) -> int:
    raise ThemeError("templates/day.html.j2", n, "'item' is undefined")


def test_results_come_in_order_from_other_processes() -> None:
    with closing(RenderWorkers(2)) as workers:
        results = list(workers.map(_pid_and_square, range(20)))
    assert [square for _, square in results] == [n * n for n in range(20)]
    assert os.getpid() not in {pid for pid, _ in results}


def test_nothing_to_render_starts_no_process() -> None:
    workers = RenderWorkers(2)
    assert list(workers.map(_pid_and_square, iter(()))) == []
    assert workers._executor is None
    workers.close()


def test_one_core_renders_here() -> None:
    with closing(RenderWorkers(1)) as workers:
        assert list(workers.map(_pid_and_square, [3])) == [(os.getpid(), 9)]
        assert workers._executor is None


def test_a_render_error_is_raised_here_as_it_was_raised_there() -> None:
    with closing(RenderWorkers(2)) as workers, pytest.raises(ThemeError) as raised:
        list(workers.map(_fails, [7]))
    assert (raised.value.file, raised.value.line) == ("templates/day.html.j2", 7)
    assert str(raised.value) == "templates/day.html.j2:7: 'item' is undefined"

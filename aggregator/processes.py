"""Worker processes of this process: how many, where they come from, that they die with it, and
how they are killed.

Parsing (`parse.pool`) and `aggregator once`'s archive renders (`render.workers`) run in
processes forked by multiprocessing's fork server, never forked from this process itself,
whose threads (the web server, the file watcher) a fork would copy in whatever state they
were in. There is one fork server per process; whichever pool starts it first starts it as
`fork_server_context` says.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import ForkServerContext
from typing import Any

_PR_SET_PDEATHSIG = 1
# The pid a fork server or worker expects as its parent: one reparented to a subreaper (not
# to pid 1) finds out its parent died before it asked to die with it.
_PARENT_PID = "AGGREGATOR_PARSER_PARENT"
# Imported by the fork server when it starts: the parser, and `die_with_parent` run there.
# (Not multiprocessing's default, `__main__`: that would load the whole CLI.)
PRELOAD = "aggregator.parse.preload"


def worker_count() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux; elsewhere nothing).

    Run in the fork server (it is imported there first, see `PRELOAD`) and in each worker:
    a daemon killed with SIGKILL runs no clean-up, and its fork server and workers would
    otherwise live on, orphaned, holding their memory.
    """
    if not sys.platform.startswith("linux"):
        return
    expected = os.environ.get(_PARENT_PID)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: orphans are then left to the caller
        return
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)  # the parent died before the request took effect (we were reparented)
    os.environ[_PARENT_PID] = str(os.getpid())  # what the processes this one starts check


def fork_server_context() -> ForkServerContext:
    """The fork server's context, for a pool about to start workers (with `die_with_parent`
    as their initializer): the fork server imports `PRELOAD` when it starts, so every
    worker is forked with the parser loaded, and the fork server dies with this process."""
    os.environ[_PARENT_PID] = str(os.getpid())  # see die_with_parent
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD])
    return context


def kill_workers(executor: ProcessPoolExecutor, processes: Mapping[int, Any] | None = None) -> None:
    """SIGKILL every worker of `executor` and let it go: its futures fail at once
    (`BrokenProcessPool`); a running task cannot be stopped otherwise, and waiting for it is
    what a time budget or a stop must not do.

    `processes`: its workers, for an executor already shut down (retired), which no longer
    lists them itself."""
    # `_processes` is the executor's own pid → process map; there is no public way to get it.
    processes = dict(getattr(executor, "_processes", None) or processes or {})
    for process in processes.values():
        with contextlib.suppress(OSError, ValueError):  # already gone, or already closed
            process.kill()
    # Not cancel_futures: a feed queued on a parser pool would then look cancelled (a stop)
    # to its poll, which records nothing; broken, it is retried on a new pool, uncounted.
    executor.shutdown(wait=False)

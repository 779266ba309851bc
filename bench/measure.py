"""Wall time, CPU time and peak memory of a command and every process it starts.

`os.wait4` alone sees one process; a tool that parses in a process pool would look nearly
free. So this process becomes a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): whatever
the command leaves behind (a fork server, its workers) is reparented here, waited for, and
its CPU time lands in `RUSAGE_CHILDREN`.

Memory is the peak, over samples every 200 ms, of the tree's summed PSS (proportional set
size: a page shared by a fork server and its workers counts once, split between them), and
never less than the main process's own peak RSS (VmHWM, which the kernel keeps exactly).
Summing RSS would count every shared page once per process. `ru_maxrss` is not used
either: after fork+exec it can report the parent's high-water mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Usage:
    wall: float
    cpu: float
    peak_mb: float


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _field_kb(path: str, name: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return 0


class Tree:
    """The processes of one session (a command and all it started), sampled cheaply.

    Reading every /proc/<pid>/stat of a busy machine takes tens of milliseconds, which a
    frequent sampler would steal from the command it measures (on 2 cores, a lot); so each
    pid is looked at once, and a sample reads only the session's own few: ~3 ms, and every
    200 ms, since reading a PSS makes the kernel walk the process's page tables.
    """

    def __init__(self, session: int) -> None:
        self.session = session
        self.members: set[int] = set()
        self._seen: set[int] = set()

    def _discover(self) -> None:
        for name in os.listdir("/proc"):  # noqa: PTH208  (names only, no Path per entry)
            if name.isdigit() and int(name) not in self._seen:
                self._seen.add(int(name))
                fields = stat_fields(int(name))
                if fields and int(fields[3]) == self.session:  # its session id (setsid)
                    self.members.add(int(name))

    def sample_kb(self) -> tuple[int, int]:
        """(summed PSS of the session's processes, the session leader's VmHWM), in kB."""
        self._discover()
        total = sum(_field_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in self.members)
        return total, _field_kb(f"/proc/{self.session}/status", "VmHWM:")

    def orphans(self) -> list[int]:
        """Members reparented to us when the command exited (a fork server, its workers)."""
        self._discover()
        me = os.getpid()
        return [pid for pid in self.members if (f := stat_fields(pid)) and int(f[1]) == me]


def run_measured(
    argv: list[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int = subprocess.DEVNULL,
    stderr: IO[bytes] | int = subprocess.DEVNULL,
) -> tuple[int, Usage]:
    """Run `argv` in a session of its own to completion: its exit code and its usage.

    CPU time includes the orphans it leaves (call `become_subreaper` first for that).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = 0
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True
    )
    stop = threading.Event()

    tree = Tree(process.pid)

    def sample() -> None:
        nonlocal peak_kb
        while True:
            peak_kb = max(peak_kb, *tree.sample_kb())
            if stop.wait(0.2):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, _ = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    deadline = time.monotonic() + 30
    stop.set()
    sampler.join()
    while left := tree.orphans():  # wait for them, so their CPU time is counted
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return process.returncode, Usage(wall, cpu, peak_kb / 1024)


def installed_environment() -> dict[str, str]:
    """This environment as an installed program sees it: compiled modules cached on disk.

    (Some sandboxes set PYTHONDONTWRITEBYTECODE, which makes every start compile every
    module again; no deployment runs like that, and it would tax each tool differently.)
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], cwd: Path) -> Usage:
    """Run `argv` to completion; raise SystemExit with its stderr when it fails."""
    with tempfile.TemporaryFile() as errors:
        code, usage = run_measured(argv, cwd, env=installed_environment(), stderr=errors)
        if code != 0:
            errors.seek(0)
            sys.stderr.write(errors.read().decode("utf-8", "replace")[-3000:])
            raise SystemExit(f"{' '.join(argv[:4])} … failed with status {code}")
    return usage

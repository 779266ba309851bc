"""Claim owners: unique per process, and judged dead only when they were ours and are gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from aggregator.poll import claim_owner, is_dead_here


def test_every_owner_is_unique_and_names_host_and_pid() -> None:
    first, second = claim_owner(), claim_owner()
    assert first != second
    assert first.startswith(f"{socket.gethostname()}:{os.getpid()}:")


def test_only_a_process_of_this_host_that_has_ended_is_dead() -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    assert is_dead_here(f"{host}:{ended.stdout.strip()}:abcd")
    assert not is_dead_here(claim_owner())  # ourselves
    assert not is_dead_here(f"{host}:1:abcd")  # init runs (as another user, perhaps)
    assert not is_dead_here(f"elsewhere.example:{ended.stdout.strip()}:abcd")
    assert not is_dead_here("not-an-owner")

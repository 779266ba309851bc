"""The pure stages import no I/O: no HTTP client, no database, no scheduler, no store or fetch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE_MODULES = (
    "aggregator.archive",
    "aggregator.text",
    "aggregator.timeline",
    "aggregator.publications",
    "aggregator.parse.feed",
    "aggregator.parse.fields",
    "aggregator.parse.jsonfeed",
    "aggregator.parse.split",
    "aggregator.parse.partial",
    "aggregator.render",
    "aggregator.render.feeds",
    "aggregator.render.page",
    "aggregator.render.context",
    "aggregator.render.theme",
    "aggregator.render.theme_check",
    "aggregator.render.jsonfeed",
    "aggregator.render.opml",
    "aggregator.settings",
    "aggregator.tomlpos",
    "aggregator.policy",
    "aggregator.urls",
    "aggregator.update",
    "aggregator.websub.discovery",
    "aggregator.websub.signature",
    "aggregator.websub.rules",
    "aggregator.hub.topics",
    "aggregator.hub.requests",
    "aggregator.hub.addresses",
    "aggregator.hub.rules",
)
FORBIDDEN = (
    "httpx",
    "sqlite3",
    "psycopg",
    "apscheduler",
    "aggregator.store.sqlite",
    "aggregator.store.postgres",
    "aggregator.fetch",
)

_PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def _imported(modules: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` importing `modules` loads, in a fresh interpreter (this test
    process has long since imported everything)."""
    probe = _PROBE.format(modules=modules, forbidden=watched)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.slow
def test_pure_modules_import_no_io_libraries():
    imported = _imported(PURE_MODULES, FORBIDDEN)
    assert imported == [], f"pure modules pulled in I/O modules: {imported}"


@pytest.mark.slow
def test_probe_detects_an_io_import():
    # The probe itself works: importing the store does show up.
    assert "sqlite3" in _imported(("aggregator.store.sqlite",), FORBIDDEN)


# The other direction: the stores read and write rows; the rules that decide what to write
# (`aggregator.update`) and what they build on are the poll path's, never imported by a store.
STORE_MODULES = ("aggregator.store.sqlite", "aggregator.store.postgres")
RULES = (
    "aggregator.update",
    "aggregator.timeline",
    "aggregator.policy",
    "aggregator.text",
    "aggregator.websub.rules",
)
# The hub's: what a subscription gets, when a delivery is retried (`store.hub` writes it).
HUB_RULES = ("aggregator.hub.rules", "aggregator.hub.requests", "aggregator.hub.addresses")


@pytest.mark.slow
def test_stores_import_no_rules():
    assert _imported(STORE_MODULES, RULES) == [], "a store imports the update rules"


@pytest.mark.slow
def test_probe_detects_a_rule_import():
    # The probe itself works: the poll path does load the rules.
    assert set(_imported(("aggregator.poll",), RULES)) == set(RULES)


@pytest.mark.slow
def test_stores_import_no_hub_rules():
    assert _imported(STORE_MODULES, HUB_RULES) == [], "a store imports the hub's rules"
    # The probe itself works: the hub's delivery loop does load them.
    assert "aggregator.hub.rules" in _imported(("aggregator.hub.deliver",), HUB_RULES)


# What the daemon and `once` load: not the drawing library (rich, pygments) that only the
# commands that draw need, nor httpx's own command-line client, which imports them (40 ms
# and 3 MB at every start).
RUNNING = ("aggregator.cli", "aggregator.daemon", "aggregator.cycle", "aggregator.transport")


@pytest.mark.slow
def test_running_loads_no_drawing_library():
    assert _imported(RUNNING, ("rich", "pygments")) == []
    # The probe itself works: httpx and click are loaded.
    assert _imported(RUNNING, ("httpx", "click")) == ["click", "httpx"]


@pytest.mark.slow
def test_the_commands_entry_point_loads_no_cli():
    """Worker processes import the installed script's module again (multiprocessing's
    preparation): `aggregator.command` must not bring the CLI with it."""
    assert _imported(("aggregator.command",), ("aggregator.cli", "click")) == []
    assert _imported(("aggregator.cli",), ("aggregator.cli", "click")) == [
        "aggregator.cli",
        "click",
    ]

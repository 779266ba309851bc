"""Golden timelines: small input feeds beside the timeline they must produce.

Each directory under tests/data/timeline/ holds `case.toml` (polls: which feed file each
source serves at which moment, plus configuration) and `expected.txt` (the published
timeline, one item per line: place in the timeline (UTC) | sources | title | teaser).
The real pipeline runs with a pinned clock over file sources and a real store.
Set UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate change.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator.config import load_config
from aggregator.cycle import apply_retention, run_cycle
from aggregator.publish import current_timeline
from aggregator.store.sqlite import SqliteStore
from aggregator.types import Timeline

CASES = Path(__file__).parent / "data" / "timeline"


def _config_text(case: dict[str, Any], poll: dict[str, Any], workdir: Path) -> str:
    lines = [case.get("config", ""), ""]
    options = case.get("sources", {})
    for name in poll["feeds"]:
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{workdir / ("src-" + name + ".xml")}"']
        for key, value in options.get(name, {}).items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def _format(timeline: Timeline) -> str:
    lines = []
    for item in timeline.items:
        names = "+".join(s.name for s in item.sources)
        when = item.published.strftime("%Y-%m-%d %H:%M")
        lines.append(f"{when} | {names} | {item.entry.title} | {item.entry.teaser}")
    return "\n".join(lines) + "\n"


def _fixed(moment: datetime) -> datetime:
    return moment


def _run_case(directory: Path, workdir: Path) -> str:
    case = tomllib.loads((directory / "case.toml").read_text(encoding="utf-8"))
    config_path = workdir / "feeds.toml"
    for poll in case["poll"]:
        at = datetime.fromisoformat(poll["at"])
        for name, file in poll["feeds"].items():
            shutil.copyfile(directory / file, workdir / f"src-{name}.xml")
        config_path.write_text(_config_text(case, poll, workdir), encoding="utf-8")
        config = load_config(config_path)
        store = SqliteStore.open(config.store.path)
        try:
            asyncio.run(run_cycle(config, store, clock=functools.partial(_fixed, at)))
        finally:
            store.close()
    now = datetime.fromisoformat(case["now"])
    store = SqliteStore.open(config.store.path)
    try:
        apply_retention(config, store, now)
        return _format(current_timeline(config, store, now))
    finally:
        store.close()


@pytest.mark.parametrize(
    "directory", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_golden_timeline(directory: Path, tmp_path: Path) -> None:
    got = _run_case(directory, tmp_path)
    expected_file = directory / "expected.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(got, encoding="utf-8")
    assert got == expected_file.read_text(encoding="utf-8")

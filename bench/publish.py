"""Publish cost at scale: does publishing read only what it publishes?

Builds real SQLite stores (setup, not measured) with 10,000 and 100,000 entries over 500
sources, Hindi and English, dated over six months, a few stories carried by several
sources. Then, each in a fresh process so its costs are its own: `startup` (imports, config,
store open; no publish), `first` (publish into an empty output directory), `unchanged`
(publish again, nothing new: must rewrite no file) and `warm` (two publishes in one process,
timing the second: the daemon's steady state, with templates and locale data loaded).
`publish s` is `publish_timeline`'s own time, without interpreter start-up; `rewritten` counts
files whose inode or mtime changed (archive files included). Flat from 10k to 100k is the
goal.

Archives (RFC 5005, one Atom document per past day): a first publish does a budgeted part
of them (`archiving.ARCHIVE_BUDGET` entries read) and says it is unfinished; `archives`
publishes until none is left (`publishes` of them, `publish s` their sum, `max s` the
longest); then `unchanged` again, `new item` (one item of today stored, then a publish:
atom.xml changes, no archive) and `past item` (one item of three days ago: its day's
archive is rewritten, nothing else of the archives).

`--channels N` tags the sources t0 … t(N-1) in turn and measures every phase twice on the
same store: without channels, and with N channels (one per tag, each publishing 200 items of
its 500/N sources, and archives of its own). `new item` then renders the root and that
source's channel only (`rendered` counts the publications whose main files were rendered
and the archive days rendered). The targets: with channels, each publish at most twice as
long as without, and an unchanged publish renders nothing.

Peak memory is the child's own VmHWM: os.wait4's ru_maxrss would report this (large) parent's
peak, since Linux carries the forking process's high-water mark across exec.

    python -m bench.publish [--entries 100000] [--baseline 10000] [--repeat 1] [--profile]
        [--analyze]   (run ANALYZE on the store first: shows what the query planner then picks)
        [--channels N]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aggregator.config import load_config
from aggregator.poll import store_entries, sync_sources, utc_now
from aggregator.publish import publish_timeline
from aggregator.settings import Config
from aggregator.store.sqlite import SqliteStore
from aggregator.text import html_to_text, teaser_text
from aggregator.types import ParsedEntry
from bench.farm import ENGLISH, HINDI

ROOT = Path(__file__).resolve().parent.parent
SPAN = timedelta(days=180)  # entries dated over six months; max_age keeps the last 30 days
BATCH = timedelta(days=14)  # entries are stored as polls would have: a fortnight at a time
WIRE_SHARE = 0.03  # this share of entries is a wire story another source also carries


@dataclass(frozen=True)
class Run:
    entries: int
    phase: str
    wall: float
    cpu: float
    peak_mb: float
    publish_s: float | None
    rewritten: int
    items: int | None
    channels: int = 0
    rendered: int | None = None  # publications rendered by the measured publish
    publishes: int = 1
    longest: float = 0.0  # the longest single publish of the phase
    archives: int = 0  # archive files in the root's output/ after it
    archive_rewritten: int = 0  # files under the archive/ folders rewritten


@functools.cache
def _teaser(text: str) -> str:
    """The text a teaser is cut from, as parse stores it: computed once, setup stays short."""
    return teaser_text(html_to_text(f"<p>{text}</p>"))


def _entry(rng: random.Random, source: int, serial: int, published: datetime) -> ParsedEntry:
    hindi = source % 2 == 0
    text = HINDI if hindi else ENGLISH
    words = text.split()
    start = rng.randrange(len(words) - 10)
    title = f"{' '.join(words[start : start + rng.randint(6, 10)])} ({serial})"
    link = f"https://site{source}.example.org/{published:%Y/%m}/story-{serial}"
    summary = f'<p>{text}</p><p><a href="{link}">{"पूरी ख़बर" if hindi else "Read more"}</a></p>'
    return ParsedEntry(
        entry_id=f"tag:site{source}.example.org,2025:{serial}",
        title=title,
        link=link,
        summary_html=summary,
        teaser=_teaser(text),
        author="संवाददाता" if hindi else "Staff",
        categories=("समाचार",) if hindi else ("world", "climate"),
        published=published,
        updated=None,
        content_hash=hashlib.sha256(f"{title}\x1f{link}\x1f{summary}".encode()).hexdigest(),
    )


def _wire_copy(entry: ParsedEntry, story: ParsedEntry, delay: timedelta) -> ParsedEntry:
    """`entry` republishing `story` (same link and title) a little later."""
    published = (story.published or datetime.now(UTC)) + delay
    return ParsedEntry(
        entry_id=entry.entry_id,
        title=story.title,
        link=story.link,
        summary_html=story.summary_html,
        teaser=story.teaser,
        author=entry.author,
        categories=entry.categories,
        published=published,
        updated=None,
        content_hash=hashlib.sha256(f"{entry.entry_id}{story.content_hash}".encode()).hexdigest(),
    )


def write_config(work: Path, sources: int, channels: int) -> Path:
    """feeds.toml for `sources` sources tagged t0 … t9 in turn, with `channels` channels (one
    per tag) publishing into output-<channels>/; all share one store. Returns its path."""
    config_path = work / f"feeds-{channels}.toml"
    config_path.write_text(
        '[aggregator]\ntitle = "Bench digest"\nlanguage = "hi"\ntimezone = "Asia/Kolkata"\n'
        f'[publish]\noutput_dir = "output-{channels}"\n[store]\npath = "state/aggregator.db"\n'
        + "".join(
            f'[[feeds]]\nname = "s{n}"\nurl = "https://site{n}.example.org/feed.xml"\n'
            f'tags = ["t{n % TAGS}"]\n'
            for n in range(sources)
        )
        + "".join(
            f'[[channels]]\nname = "c{k}"\ntitle = "Channel {k}"\ntags = ["t{k % TAGS}"]\n'
            for k in range(channels)
        ),
        encoding="utf-8",
    )
    return config_path


TAGS = 10  # the sources' tags: a channel per tag takes a tenth of them


def build(work: Path, entries: int, sources: int, now: datetime, *, analyze: bool = False) -> Path:
    """Write feeds.toml and fill the store it names; returns the config path.

    `analyze` leaves SQLite statistics (sqlite_stat1) in the store, which aggregator itself
    never does: without them the planner may pick a poorer index.
    """
    config_path = write_config(work, sources, 0)
    config = load_config(config_path)
    rng = random.Random(entries)
    start = now - SPAN
    by_source: dict[int, list[ParsedEntry]] = {n: [] for n in range(sources)}
    wire: list[ParsedEntry] = []
    for serial in range(entries):
        source = serial % sources
        published = (start + rng.random() * SPAN).replace(microsecond=0)
        entry = _entry(rng, source, serial, published)
        if wire and rng.random() < WIRE_SHARE:
            story = rng.choice(wire[-50:])
            entry = _wire_copy(entry, story, timedelta(minutes=rng.randint(1, 120)))
            if entry.published is not None and entry.published > now:
                entry = dataclasses.replace(entry, published=now)  # a copy is never from later
        elif rng.random() < WIRE_SHARE:
            wire.append(entry)
        by_source[source].append(entry)
    store = SqliteStore.open(config.store.path)
    try:
        sync_sources(store, config.sources, start)
        for pending in by_source.values():
            pending.sort(key=lambda e: e.published or now)
        batch_end = start + BATCH
        while batch_end - BATCH < now:
            seen_at = min(batch_end, now)
            for n, pending in by_source.items():
                cut = next(
                    (i for i, e in enumerate(pending) if (e.published or now) > seen_at),
                    len(pending),
                )
                store_entries(store, f"s{n}", pending[:cut], seen_at)
                del pending[:cut]
            batch_end += BATCH
        stored = int(store._db.execute("SELECT count(*) FROM entries").fetchone()[0])
    finally:
        store.close()
    if analyze:
        with contextlib.closing(sqlite3.connect(config.store.path)) as db:
            db.execute("ANALYZE")
    if stored != entries:
        raise SystemExit(f"setup stored {stored} entries, expected {entries}")
    return config_path


def _peak_mb() -> float:
    """This process's own high-water RSS."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(config_path: Path, publishes: int, profile: bool, add: str | None = None) -> None:
    """The measured process: open the store the way `aggregator` does, publish, say how long
    the last publish took. `publishes` 0: start-up only; -1: publish until no archive work
    is left (the sum of their times, the longest). `add`: store one item first, dated
    today or three days ago."""
    config = load_config(config_path)
    store = SqliteStore.open(config.store.path)
    try:
        if not publishes:
            print(json.dumps({"seconds": None, "items": None, "peak_mb": _peak_mb()}))
            return
        if add is not None:
            _add_item(store, add)
        if publishes < 0:
            print(json.dumps(_until_done(config, store)))
            return
        for _ in range(publishes - 1):
            publish_timeline(config, store, utc_now())
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        report = publish_timeline(config, store, utc_now())
        if profiler is not None:
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).strip_dirs()
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(15)
            print(out.getvalue(), file=sys.stderr)
        result = {
            "seconds": report.seconds,
            "items": report.items,
            "peak_mb": _peak_mb(),
            "rendered": len(report.rendered) + report.archive_days,
            "unfinished": report.unfinished,
        }
        print(json.dumps(result))
    finally:
        store.close()


def _until_done(config: Config, store: SqliteStore) -> dict[str, object]:
    """Publish until no archive work is left: how many publishes, their time, the longest."""
    times, items = [], 0
    while True:
        report = publish_timeline(config, store, utc_now())
        times.append(report.seconds)
        items = report.items
        if not report.unfinished or len(times) >= 1000:
            break
    return {
        "seconds": sum(times),
        "items": items,
        "peak_mb": _peak_mb(),
        "publishes": len(times),
        "longest": max(times),
    }


def _add_item(store: SqliteStore, when: str) -> None:
    """One new item from source s0: published now, or three days ago. Seeded by both (two
    phases within one second must not store the same item twice)."""
    now = utc_now().replace(microsecond=0)
    published = now if when == "today" else now - timedelta(days=3)
    rng = random.Random(f"{when} {now.isoformat()}")
    serial = rng.randrange(10**9)
    store_entries(store, "s0", [_entry(rng, 0, serial, published)], now)


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` (channels' and archives too): inode and mtime, by path."""
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


def _clear(directory: Path, store: Path | None = None) -> None:
    """Empty the output directory, and the store's published snapshot: a first publish
    renders everything again, rather than copying what the last run stored."""
    if directory.is_dir():
        shutil.rmtree(directory)
    if store is not None:
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            for table in ("published", "publications"):
                db.execute(f"DELETE FROM {table}")


def _measure(argv: list[str]) -> tuple[float, float, dict[str, float | int | None]]:
    """Run `argv`; wall time and CPU time of that process alone, and its JSON line."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE)
    assert process.stdout is not None
    output = process.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[3:]} failed with status {os.waitstatus_to_exitcode(status)}")
    result = json.loads(output.strip().splitlines()[-1])
    return wall, usage.ru_utime + usage.ru_stime, result


# (phase, publishes, item added first): -1 publishes until no archive work is left.
PHASES = (
    ("startup", 0, None),
    ("first", 1, None),
    ("archives", -1, None),
    ("unchanged", 1, None),
    ("warm", 2, None),
    ("new item", 1, "today"),
    ("past item", 1, "past"),
)


def measure(
    config_path: Path, entries: int, repeat: int, profile: bool, *, channels: int = 0
) -> list[Run]:
    """The phases (`PHASES`) of publishing from one store, `repeat` times."""
    output = config_path.parent / f"output-{channels}"
    child = [sys.executable, "-m", "bench.publish", "--child", str(config_path)]
    runs = []
    store = load_config(config_path).store.path
    for _ in range(repeat):
        _clear(output, store)
        for phase, publishes, add in PHASES:
            argv = [*child, "--publishes", str(publishes), *(["--add", add] if add else [])]
            before = _files(output)
            wall, cpu, result = _measure(argv)
            after = _files(output)
            rewritten = sum(1 for name, key in after.items() if before.get(name) != key)
            seconds, items, peak = result["seconds"], result["items"], result["peak_mb"]
            rendered = result.get("rendered")
            runs.append(
                Run(
                    entries,
                    phase,
                    wall,
                    cpu,
                    float(peak or 0),
                    float(seconds) if seconds is not None else None,
                    rewritten,
                    int(items) if items is not None else None,
                    channels,
                    int(rendered) if rendered is not None else None,
                    publishes=int(result.get("publishes") or (publishes > 0)),
                    longest=float(result.get("longest") or seconds or 0),
                    archives=sum(
                        1 for n in after if n.startswith("archive/") and n.endswith(".atom")
                    ),
                    archive_rewritten=sum(
                        1
                        for name, key in after.items()
                        if "archive/" in name and before.get(name) != key
                    ),
                )
            )
    if profile:  # separate runs: the profiler's overhead stays out of the table
        _clear(output, store)
        for label, times in (("first (cold process)", "1"), ("warm (second in-process)", "2")):
            print(
                f"\n=== profile: {entries} entries, {channels} channels, {label} ===",
                file=sys.stderr,
                flush=True,
            )
            _measure([*child, "--publishes", times, "--profile"])
    return runs


def report(runs: list[Run], sources: int) -> None:
    print(f"\npublish from a real store, {sources} sources, 200 items published")
    header = (
        f"{'entries':>8} {'channels':>8} {'phase':<9} {'wall s':>7} {'publish s':>9} "
        f"{'cpu s':>6} {'peak MB':>8} {'rewritten':>9} {'rendered':>8} {'items':>5} "
        f"{'publishes':>9} {'max s':>6} {'archives':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        publish = f"{r.publish_s:9.3f}" if r.publish_s is not None else f"{'-':>9}"
        items = f"{r.items:5d}" if r.items is not None else f"{'-':>5}"
        rendered = f"{r.rendered:8d}" if r.rendered is not None else f"{'-':>8}"
        print(
            f"{r.entries:8d} {r.channels:8d} {r.phase:<9} {r.wall:7.2f} {publish} {r.cpu:6.2f} "
            f"{r.peak_mb:8.1f} {r.rewritten:9d} {rendered} {items} {r.publishes:9d} "
            f"{r.longest:6.2f} {r.archives:8d}"
        )
    largest = max(r.entries for r in runs)

    def best(phase: str, channels: int = 0) -> float:
        return min(
            (r.publish_s or 0.0)
            for r in runs
            if r.entries == largest and r.phase == phase and r.channels == channels
        )

    # A cold process rendering the main files: the first publish before archives; now the
    # first does a share of the archives too, and `new item` is that measure.
    cold, warm = best("new item"), best("warm")
    rewrites = sum(r.rewritten for r in runs if r.phase in ("unchanged", "warm"))
    print(
        f"target: publish from {largest} entries < 0.5 s: best cold {cold:.3f} s (new item), "
        f"warm {warm:.3f} s ({'met' if max(cold, warm) < 0.5 else 'MISSED'}); unchanged "
        f"publishes rewrote {rewrites} files ({'met' if rewrites == 0 else 'MISSED'})"
    )
    for channels in sorted({r.channels for r in runs}):
        _report_archives(runs, largest, channels, best)
    for channels in sorted({r.channels for r in runs} - {0}):
        _report_channels(runs, largest, channels, best)


def _report_archives(runs: list[Run], largest: int, channels: int, best: Any) -> None:
    """How long the archives took to build, and what one past item rewrote of them: its
    day's document and page (and their gzipped siblings) in the root, and in the channel
    that holds its source."""
    built = [
        r for r in runs if r.entries == largest and r.phase == "archives" and r.channels == channels
    ]
    past = [
        r
        for r in runs
        if r.entries == largest and r.phase == "past item" and r.channels == channels
    ]
    if not built or not past:
        return
    whole = min(r.publish_s or 0.0 for r in built) + best("first", channels)
    longest = max(*(r.longest for r in built), best("first", channels))
    rewrote = max(r.archive_rewritten for r in past)
    expected = 4 * (1 + (channels > 0))
    print(
        f"archives of {largest} entries, {channels} channels: {built[0].archives} root days in "
        f"{built[0].publishes + 1} publishes, {whole:.1f} s in all, the longest "
        f"{longest:.2f} s; one past item rewrote {rewrote} archive files (its day's document "
        f"and page, gzipped too, per publication: {'met' if rewrote == expected else 'MISSED'})"
    )


def _report_channels(runs: list[Run], largest: int, channels: int, best: Any) -> None:
    """Each phase with `channels` channels against the same phase without."""
    ratios = {
        phase: best(phase, channels) / max(best(phase), 1e-9)
        for phase in ("first", "unchanged", "warm", "new item")
    }
    shown = ", ".join(f"{phase} {ratio:.2f}x" for phase, ratio in ratios.items())
    steady = max(ratios[p] for p in ("unchanged", "warm", "new item"))
    idle = [r.rendered for r in runs if r.channels == channels and r.phase in ("unchanged", "warm")]
    print(
        f"target: {channels} channels over {largest} entries at most 2x the publish without: "
        f"{shown} ({'met' if steady <= 2 else 'MISSED'} for the steady state: unchanged, warm, "
        f"new item; a first publish renders {channels + 1} publications instead of 1); "
        f"unchanged publishes rendered {sum(n or 0 for n in idle)} publications or archive days "
        f"({'met' if not any(idle) else 'MISSED'})"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=10_000, help="0 to skip")
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile a cold and a warm publish (stderr)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--publishes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--add", choices=("today", "past"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE the store after building it"
    )
    parser.add_argument(
        "--channels", type=int, default=0, help="also publish with N channels, and compare"
    )
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.publishes, args.profile, args.add)
        return
    now = utc_now().replace(microsecond=0)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="aggregator-publish-") as tmp:
        for entries in sorted({args.baseline, args.entries} - {0}):
            work = Path(tmp) / str(entries)
            work.mkdir()
            started = time.perf_counter()
            config_path = build(work, entries, args.sources, now, analyze=args.analyze)
            print(f"built a store of {entries} entries in {time.perf_counter() - started:.1f} s")
            runs += measure(config_path, entries, args.repeat, args.profile)
            if args.channels:
                with_channels = write_config(work, args.sources, args.channels)
                runs += measure(
                    with_channels, entries, args.repeat, args.profile, channels=args.channels
                )
    report(runs, args.sources)


if __name__ == "__main__":
    main(sys.argv[1:])

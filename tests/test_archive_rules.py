"""The archive rules (`aggregator/archive.py`), property-tested; and the incremental update
(`archiving.update_archives`) against a real SQLite store, checked against a rebuild.

Shows: a moment lies within the bounds of its local day in every zone tried (half-hour
offsets, clock changes at midnight); neighbours and relinking match a brute-force oracle;
the state survives its JSON; a plan never examines today or a day before the oldest entry;
and, for any history of stores, edits, retention, days passing and budgets, the archives
kept up to date publish after publish equal the archives built from nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from unittest.mock import patch
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from aggregator import archive, archiving
from aggregator.archive import ArchiveDay, ArchiveState, Observed
from aggregator.archiving import ArchiveTarget, ArchiveUpdate, days_renderer, update_archives
from aggregator.poll import store_entries, sync_sources
from aggregator.settings import SiteSettings
from aggregator.store.sqlite import SqliteStore
from aggregator.timeline import Selection
from aggregator.types import SourceCredit
from tests.storedata import entry, source

FAST = settings(max_examples=200, deadline=None)
SLOW = settings(max_examples=120, deadline=None)
ZONES = [
    "UTC",
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "America/New_York",
    "America/Santiago",  # clocks change at midnight
    "America/Havana",  # clocks change at midnight too
    "Pacific/Chatham",  # +12:45 / +13:45
    "Australia/Lord_Howe",  # a half-hour change
]
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
days = st.dates(min_value=date(2025, 1, 1), max_value=date(2025, 3, 1))


@FAST
@given(moments, st.sampled_from(ZONES))
def test_a_moment_lies_within_its_local_day(moment: datetime, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    day = archive.local_day(moment, zone)
    start, end = archive.day_bounds(day, zone)
    assert start <= moment < end
    assert archive.local_day(start, zone) == day
    assert archive.local_day(end, zone) == day + timedelta(days=1)


@FAST
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(1, 1, 3),
        timezones=st.just(UTC),
    )
    | st.datetimes(min_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.sampled_from([*ZONES, "Etc/GMT+12", "Pacific/Kiritimati"]),
)
@example(datetime(1, 1, 1, tzinfo=UTC), "America/New_York")  # .NET's DateTime.MinValue
@example(datetime(1, 1, 1, tzinfo=UTC), "Asia/Kolkata")
def test_days_at_the_ends_of_time_are_made_without_overflow(moment: datetime, zone: str) -> None:
    """A store from before the parser's earliest date may hold an entry dated 0001-01-01 (an
    older version kept .NET's placeholder): its day and the day's bounds are still made,
    in UTC where the zone cannot be reached, and the day holds the moment."""
    day = archive.local_day(moment, ZoneInfo(zone))
    start, end = archive.day_bounds(day, ZoneInfo(zone))
    assert archive.local_time(moment, ZoneInfo(zone)).date() == day
    assert start <= moment < end or moment == datetime.max.replace(tzinfo=UTC)


@FAST
@given(days, st.sampled_from(ZONES))
def test_days_tile_time(day: date, zone_name: str) -> None:
    """Each day ends where the next begins: no moment belongs to two days or to none."""
    zone = ZoneInfo(zone_name)
    start, end = archive.day_bounds(day, zone)
    assert end == archive.day_bounds(day + timedelta(days=1), zone)[0]
    assert timedelta(hours=22) <= end - start <= timedelta(hours=26)


@FAST
@given(st.sets(days, max_size=12), days)
def test_neighbours_are_the_nearest_days_either_side(known: set[date], day: date) -> None:
    ordered = sorted(known)
    previous, following = archive.neighbours(ordered, day)
    assert previous == max((d for d in known if d < day), default=None)
    assert following == max(
        (d for d in known if d > day), default=None, key=lambda d: -d.toordinal()
    )


@FAST
@given(st.sets(days, max_size=12), st.sets(days, max_size=12))
def test_relinked_days_are_those_whose_neighbours_changed(
    before: set[date], after: set[date]
) -> None:
    old, new = sorted(before), sorted(after)
    expected = {
        d for d in before & after if archive.neighbours(old, d) != archive.neighbours(new, d)
    }
    assert archive.relinked(old, new) == expected


def test_archive_names() -> None:
    day = date(2025, 7, 3)
    assert archive.archive_name(day) == "archive/2025/07/03.atom"
    assert archive.day_page_name(day) == "archive/2025/07/03.html"
    assert archive.day_files(day) == ("archive/2025/07/03.atom", "archive/2025/07/03.html")
    assert archive.day_path(date(999, 1, 2)) == "archive/0999/01/02"  # %Y would say 999
    assert archive.day_of("archive/2025/07/03.atom") == day
    assert archive.day_of("archive/2025/07/03.html") == day
    for other in ("atom.xml", "news/archive/2025/07/03.atom", "archive/2025/02/30.atom"):
        assert archive.day_of(other) is None


@FAST
@given(days)
def test_a_day_is_read_back_from_its_file_name(day: date) -> None:
    assert all(archive.day_of(name) == day for name in archive.day_files(day))


states = st.builds(
    ArchiveState,
    basis=st.text(max_size=8),
    token=st.none() | st.text(max_size=8),
    today=days,
    oldest=st.none() | moments,
    days=st.dictionaries(days, st.text(max_size=8), max_size=5),
    sources=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    pending=st.frozensets(days, max_size=3),
    sweep=st.none() | st.tuples(days, days),
)


@FAST
@given(states)
def test_the_state_survives_its_json(state: ArchiveState) -> None:
    import json  # noqa: PLC0415

    assert ArchiveState.from_json(json.loads(archive.encode_state(state))) == state


@FAST
@given(st.none() | st.integers() | st.text() | st.dictionaries(st.text(), st.text()))
def test_anything_else_is_no_state(value: object) -> None:
    assert ArchiveState.from_json(value) is None


@FAST
@given(
    states,
    st.text(max_size=3),
    days,
    st.none() | moments,
    st.none() | st.lists(moments, max_size=5),
)
def test_a_plan_examines_only_days_that_can_be_archive_days(
    state: ArchiveState,
    basis: str,
    today: date,
    oldest: datetime | None,
    changed: list[datetime] | None,
) -> None:
    zone = ZoneInfo("Asia/Kolkata")
    observed = Observed(basis, today, oldest, None if changed is None else tuple(changed))
    work = archive.plan(state, observed, zone)
    # Today never goes back by a day (clocks of daemons differing around midnight).
    ahead = today < state.today <= today + timedelta(days=1)
    assert work.today == (state.today if ahead else today)
    today = work.today
    floor = None if oldest is None else archive.local_day(oldest, zone)
    assert all(floor is not None and floor <= d < today for d in [*work.dirty, *work.days])
    assert list(work.dirty) == sorted(set(work.dirty), reverse=True)
    if work.sweep is not None:
        assert floor is not None and floor <= work.sweep[0] <= work.sweep[1] < today
    if floor is not None and floor < today and (changed is None or basis != state.basis):
        assert work.sweep == (floor, today - timedelta(days=1))  # everything again
    fresh = archive.plan(None, observed, zone)
    assert fresh.days == {} and fresh.dirty == ()


@FAST
@given(st.tuples(days, days), st.none() | days, st.sets(days, max_size=6))
def test_a_sweep_takes_the_newest_candidate_in_its_range(
    sweep: tuple[date, date], latest: date | None, known: set[date]
) -> None:
    low, high = sweep
    step = archive.next_in_sweep(sweep, latest, known)
    candidates = {d for d in [*known, *([latest] if latest else [])] if low <= d <= high}
    assert step == max(candidates, default=None)


# -- the incremental update against a rebuild --------------------------------------------------

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
SITE = SiteSettings("T", "http://x.example/", "d", None, "Asia/Kolkata", "http://x.example/")
TARGET = ArchiveTarget("", SITE, Selection(max_items=50, max_age=timedelta(days=30)), ("a", "b"))


def _credits(title_b: str = "b") -> dict[str, SourceCredit]:
    return {
        "a": SourceCredit("a", "a", "https://a.example.org/feed.xml"),
        "b": SourceCredit("b", title_b, "https://b.example.org/feed.xml"),
    }


def _render(site: SiteSettings, day: ArchiveDay) -> dict[str, bytes]:
    """A stand-in for the Atom renderer: the day's input, exactly."""
    return {archive.archive_name(day.day): repr(day).encode()}


@contextmanager
def _store() -> Iterator[SqliteStore]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore.open(Path(tmp) / "s.db")
        sync_sources(store, [source("a"), source("b")], NOW - timedelta(days=90))
        try:
            yield store
        finally:
            store.close()


class _Published:
    """What the archive files would be after each update: name → bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.state: ArchiveState | None = None

    def apply(self, update: ArchiveUpdate) -> None:
        for name in update.removed:
            self.files.pop(name, None)
        self.files.update(update.files)
        self.state = update.state


# (kind, source, days back from today, item number or budget): few days and items, so that
# a history often touches one item twice (stored, then copied or edited after a publish).
_item = (st.sampled_from("ab"), st.integers(0, 5), st.integers(0, 1))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("store"), *_item),
        st.tuples(st.just("edit"), *_item),
        st.tuples(st.just("copy"), *_item),
        st.tuples(st.just("prune"), st.just(""), st.integers(2, 6), st.just(0)),
        st.tuples(st.just("day passes"), st.just(""), st.just(0), st.just(0)),
        st.tuples(st.just("rename b"), st.just(""), st.just(0), st.just(0)),
        st.tuples(st.just("publish"), st.just(""), st.just(0), st.integers(1, 40)),
    ),
    max_size=14,
)


@SLOW
@given(operations)
@example([("store", "a", 5, 0), ("publish", "", 0, 40), ("copy", "b", 5, 0)])
@example([("store", "a", 3, 0), ("store", "a", 3, 1), ("publish", "", 0, 40), ("prune", "", 3, 0)])
@example(
    [("store", "a", 1, 0), ("publish", "", 0, 40), ("rename b", "", 0, 0), ("copy", "b", 1, 0)]
)
def test_kept_up_to_date_equals_built_from_nothing(ops: list[tuple[str, str, int, int]]) -> None:
    """Whatever happened between publishes, and however the budget cut the work, once a
    publish finishes, the archive files are those a rebuild makes: every day with items,
    linked to its neighbours, rendered from its items as they are."""
    zone = ZoneInfo(SITE.timezone)
    now, title_b = NOW, "b"
    with _store() as store:
        published = _Published()

        def publish(budget: int | None) -> None:
            update = update_archives(
                store,
                TARGET,
                _credits(title_b),
                published.state,
                now,
                render=days_renderer(_render),
                budget=budget,
            )
            published.apply(update)
            # At every step every link leads to a file that exists.
            for day in update.days:
                assert archive.archive_name(day) in published.files

        for kind, name, back, n in ops:
            at = datetime.combine(
                archive.local_day(now, zone) - timedelta(days=back), datetime.min.time(), zone
            )
            # Early and late in the day: retention (at 17:30 there) cuts a day in two.
            placed = (at + timedelta(hours=1 + 18 * n)).astimezone(UTC)
            if kind in ("store", "edit"):
                title = f"Story {back}-{n}" + (" edited" if kind == "edit" else "")
                store_entries(store, name, [entry(f"{back}-{n}", title, published=placed)], now)
            elif kind == "copy":
                # Another source's copy of story back-n (the same link), a day later: it
                # joins the story wherever it sits, or stands alone if it came first.
                later = min(placed + timedelta(days=1), now)
                copy = entry(f"{back}-{n}-copy", f"Copy of {back}-{n}", published=later)
                copy = replace(copy, link=f"https://example.org/{back}-{n}")
                store_entries(store, name, [copy], now)
            elif kind == "prune":
                store.prune(now - timedelta(days=back), now)
            elif kind == "day passes":
                now += timedelta(days=1)
            elif kind == "rename b":
                title_b += "+"
            else:
                publish(n)
        publish(None)
        while published.state is not None and published.state.unfinished:
            publish(None)
        rebuilt = _Published()
        rebuilt.apply(
            update_archives(
                store,
                TARGET,
                _credits(title_b),
                None,
                now,
                render=days_renderer(_render),
                budget=10**9,
            )
        )
        assert published.files == rebuilt.files
        assert published.state is not None and rebuilt.state is not None
        assert published.state.days == rebuilt.state.days


@SLOW
@given(operations)
@example([("store", "a", 5, 0), ("store", "b", 3, 1), ("publish", "", 0, 40), ("copy", "b", 5, 0)])
def test_too_many_changes_to_read_examine_every_day_to_the_same_files(
    ops: list[tuple[str, str, int, int]],
) -> None:
    """Past `CHANGES_CAP` changed entries since the last publish (a first start, a long
    outage: the cap keeps what one publish reads small), every day is examined instead of
    the changed ones: the archives still end as a rebuild makes them."""
    with patch.object(archiving, "CHANGES_CAP", 1), patch.object(archiving, "COPIES_CAP", 1):
        test_kept_up_to_date_equals_built_from_nothing.hypothesis.inner_test(ops)  # type: ignore[attr-defined]

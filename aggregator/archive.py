"""Archived feeds (RFC 5005 §4): the archive days, their URLs and neighbours, and which of
them a publish must examine again. Pure: dates, tokens and fingerprints in, decisions out;
`archiving.py` reads the store and renders.

One Atom document per local day (in the publication's time zone) that has items, at
`archive/YYYY/MM/DD.atom` under the publication's directory. Each links to the older and
newer archive days (`prev-archive`, `next-archive`) and to the subscription document
(`current`: atom.xml), which links to the newest archive day (`prev-archive`). Following the
chain from atom.xml reaches every item the store keeps.

**Today is not an archive day.** RFC 5005 asks that an archive document's entries not
change, and lets readers fetch one once and keep it; today's would change with every new
item. Today's items are in atom.xml; at local midnight the day closes and becomes the newest
archive day, whole. So what atom.xml's window (`max_items`, `max_age`) leaves out of a busy
day reaches readers once it ends: a reader polling atom.xml then finds a `prev-archive` it
has not seen, and fetches it.

**A past day's document changes only when its input does**: its items (an entry stored or
edited, a copy of one of its stories arriving elsewhere, retention taking some), its
neighbours (a day appearing or disappearing), one source's credit or filters, or what every
document depends on (`basis`: the site, the filters, the teaser length, the code's version).
`ArchiveState`, kept in the store between publishes, holds each day's input fingerprint, the
store's change token, and the work one publish's budget left for the next.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only named: importing the timeline would load its text rules
    from aggregator.timeline import Selection
    from aggregator.types import Timeline

ARCHIVE_DIR = "archive"
ATOM_SUFFIX = ".atom"
PAGE_SUFFIX = ".html"  # the day page (themes' `day.html.j2`)
# The files of one archive day, by suffix after its path: all are rendered from the day's
# input together, and all removed when the day goes.
DAY_SUFFIXES = (ATOM_SUFFIX, PAGE_SUFFIX)
# The oldest moment an archive reads back to: archives are bounded by `[store] keep`, not by
# the subscription document's `max_age`.
_BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
_ONE_DAY = timedelta(days=1)


# -- days and their URLs -----------------------------------------------------------------------


def local_time(moment: datetime, zone: tzinfo) -> datetime:
    """`moment` in `zone`. One within hours of `datetime`'s first or last day cannot be moved
    there and stays in UTC: a store from before `parse.fields.EARLIEST_DATE` may hold an
    entry dated 0001-01-01, and a day page or an archive must still be made with it."""
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return moment.astimezone(UTC)


def local_day(moment: datetime, zone: tzinfo) -> date:
    """The day `moment` falls on in `zone` (`local_time`)."""
    return local_time(moment, zone).date()


def day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The UTC instants [start, end) of `day` in `zone` (23, 24 or 25 hours long).

    A midnight that a clock change skips starts the day at the change itself. `datetime`'s
    first day starts, and its last day ends, with time itself: there is no midnight before
    or after them to move to UTC (`local_time` puts the moments they cannot reach there).
    """
    start = _midnight(day, zone) if day > date.min else datetime.min.replace(tzinfo=UTC)
    end = _midnight(day + _ONE_DAY, zone) if day < date.max else datetime.max.replace(tzinfo=UTC)
    return start, end


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def day_path(day: date) -> str:
    """Where an archive day's files live, without suffix: `archive/2025/07/13`."""
    return f"{ARCHIVE_DIR}/{day.year:04d}/{day.month:02d}/{day.day:02d}"


def archive_name(day: date) -> str:
    """The Atom archive document of `day`, relative to its publication's directory."""
    return day_path(day) + ATOM_SUFFIX


def day_page_name(day: date) -> str:
    """The HTML page of `day`, relative to its publication's directory."""
    return day_path(day) + PAGE_SUFFIX


def day_files(day: date) -> tuple[str, ...]:
    """Every file an archive day has (relative to its publication's directory)."""
    return tuple(day_path(day) + suffix for suffix in DAY_SUFFIXES)


_DAY_FILE = re.compile(rf"{ARCHIVE_DIR}/(\d{{4}})/(\d{{2}})/(\d{{2}})\.[a-z]+")


def day_of(name: str) -> date | None:
    """The archive day whose file `name` (inside its publication) is, if it is one."""
    match = _DAY_FILE.fullmatch(name)
    if match is None:
        return None
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def neighbours(days: Sequence[date], day: date) -> tuple[date | None, date | None]:
    """The archive days just before and just after `day` among `days` (sorted, oldest
    first), `day` itself excluded."""
    low = bisect.bisect_left(days, day)
    high = bisect.bisect_right(days, day)
    return (days[low - 1] if low > 0 else None, days[high] if high < len(days) else None)


def relinked(before: Sequence[date], after: Sequence[date]) -> frozenset[date]:
    """The days in both lists whose neighbours differ: their documents' links change."""
    kept = set(before) & set(after)
    return frozenset(d for d in kept if neighbours(before, d) != neighbours(after, d))


def archive_selection(selection: Selection, now: datetime, items: int) -> Selection:
    """The publication's selection for one archive day: its filters and teasers, without
    the subscription document's window (`max_items`, `max_age`)."""
    return replace(selection, max_items=items, max_age=now - _BEGINNING)


# -- one archive day's document, and what it is made from -------------------------------------


@dataclass(frozen=True)
class ArchiveDay:
    """One archive day: its items (a timeline, newest first) and its neighbours."""

    day: date
    timeline: Timeline
    previous: date | None = None
    next: date | None = None


def day_fingerprint(basis: str, day: ArchiveDay) -> str:
    """What an archive day's files are rendered from, as a digest: equal, nothing to render.

    Hashed item by item: the repr of a whole day (thousands of items) at once was a string
    of tens of megabytes, the peak of a publish's memory."""
    fingerprint = hashlib.sha256(
        repr((basis, day.day, day.previous, day.next, day.timeline.updated)).encode()
    )
    for item in day.timeline.items:
        fingerprint.update(repr(item).encode("utf-8", "surrogatepass"))
    return fingerprint.hexdigest()


def digest(*parts: object) -> str:
    """A short digest of `parts`' repr (a basis, a source's credit and filters)."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- the state between publishes -------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveState:
    """What a publication's archives were at its last publish.

    `basis`: the digest of what every document depends on; `token`: the store's change
    token then; `today`: the day that was open; `oldest`: the oldest stored entry's place
    (retention moving it takes items from archive days); `days`: each archive day's input
    fingerprint; `sources`: each source's digest (credit, filters); `pending` and `sweep`:
    days still to examine (a set, and a range walked from its newest day down).
    """

    basis: str
    token: str | None
    today: date
    oldest: datetime | None = None
    days: Mapping[date, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    pending: frozenset[date] = frozenset()
    sweep: tuple[date, date] | None = None

    @property
    def unfinished(self) -> bool:
        """Whether work is left for the next publish."""
        return bool(self.pending) or self.sweep is not None

    def to_json(self) -> dict[str, object]:
        return {
            "basis": self.basis,
            "token": self.token,
            "today": self.today.isoformat(),
            "oldest": None if self.oldest is None else self.oldest.isoformat(),
            "days": {d.isoformat(): fp for d, fp in sorted(self.days.items())},
            "sources": dict(sorted(self.sources.items())),
            "pending": sorted(d.isoformat() for d in self.pending),
            "sweep": None if self.sweep is None else [d.isoformat() for d in self.sweep],
        }

    @classmethod
    def from_json(cls, value: object) -> ArchiveState | None:
        """The state `to_json` wrote; None for anything else (then everything is examined
        again: a lost state costs work, never a wrong archive)."""
        if not isinstance(value, dict):
            return None
        try:
            oldest, sweep = value["oldest"], value["sweep"]
            return cls(
                basis=str(value["basis"]),
                token=None if value["token"] is None else str(value["token"]),
                today=date.fromisoformat(value["today"]),
                oldest=None if oldest is None else datetime.fromisoformat(oldest),
                days={date.fromisoformat(d): str(fp) for d, fp in value["days"].items()},
                sources={str(s): str(d) for s, d in value["sources"].items()},
                pending=frozenset(date.fromisoformat(d) for d in value["pending"]),
                sweep=None if sweep is None else (_date(sweep[0]), _date(sweep[1])),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return None


def _date(value: object) -> date:
    return date.fromisoformat(str(value))


def encode_state(state: ArchiveState) -> str:
    return json.dumps(state.to_json(), sort_keys=True, separators=(",", ":"))


def sources_changed(state: ArchiveState | None, sources: Mapping[str, str]) -> tuple[str, ...]:
    """Sources added, removed, or whose digest changed since `state`: each of their
    entries may now be rendered differently (or not at all)."""
    if state is None:
        return ()
    names = set(state.sources) | set(sources)
    return tuple(sorted(n for n in names if state.sources.get(n) != sources.get(n)))


def must_sweep(state: ArchiveState | None, basis: str) -> bool:
    """Whether every day must be examined again: no state yet, or what every document
    depends on changed."""
    return state is None or state.basis != basis


# -- what a publish examines -------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the store says now, for `plan`.

    `moments`: where the entries stored since the state's token sit, with their stories'
    other copies and the entries of changed sources; None when there were too many to read
    (then every day is examined again). `published`: the archive days that have files in
    the snapshot, read only when there is no state (lost, or never kept): they are examined
    too, so that a day gone meanwhile is removed.
    """

    basis: str
    today: date
    oldest: datetime | None
    moments: tuple[datetime, ...] | None = ()
    published: tuple[date, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The days a publish examines: `dirty` ones (newest first), then `sweep`, a range of
    days walked from its newest down. `days` are the archive days known and still possible
    (none older than `floor`, the oldest stored entry's day, nor from today on); `before`
    are all the days the documents as published were linked with."""

    today: date
    floor: date | None
    before: tuple[date, ...]
    days: Mapping[date, str]
    dirty: tuple[date, ...] = ()
    sweep: tuple[date, date] | None = None


def plan(state: ArchiveState | None, now: Observed, zone: tzinfo) -> Plan:
    """Which days to examine, given what was published (`state`) and what the store says.

    Today never goes back by a day: daemons sharing a store whose clocks differ by a minute
    around midnight would otherwise archive yesterday and take it back in turn.
    """
    if state is not None and now.today < state.today <= now.today + _ONE_DAY:
        now = replace(now, today=state.today)
    floor = None if now.oldest is None else local_day(now.oldest, zone)
    # Without a state, the days published are known, with no fingerprint: all rendered again.
    known = state.days if state is not None else dict.fromkeys(now.published, "")
    before = tuple(sorted(known))
    if floor is None:  # nothing stored: no archive day
        return Plan(now.today, None, before, {})
    days = {d: fp for d, fp in known.items() if floor <= d < now.today}
    whole = _clamped((floor, now.today - _ONE_DAY), floor, now.today)
    if state is None or now.moments is None or state.basis != now.basis:
        return Plan(now.today, floor, before, days, sweep=whole)
    dirty = {local_day(m, zone) for m in now.moments} | set(state.pending)
    if state.oldest != now.oldest:
        dirty.add(floor)  # retention took the oldest entries, perhaps part of this day
    sweep = state.sweep
    if state.today < now.today:
        # Days that closed since: walked like a sweep, which skips days without entries.
        closed = (state.today, now.today - _ONE_DAY)
        sweep = closed if sweep is None else (min(sweep[0], closed[0]), max(sweep[1], closed[1]))
    return Plan(
        now.today,
        floor,
        before,
        days,
        dirty=tuple(sorted((d for d in dirty if floor <= d < now.today), reverse=True)),
        sweep=_clamped(sweep, floor, now.today),
    )


def _clamped(span: tuple[date, date] | None, floor: date, today: date) -> tuple[date, date] | None:
    if span is None:
        return None
    low, high = max(span[0], floor), min(span[1], today - _ONE_DAY)
    return (low, high) if low <= high else None


def next_in_sweep(
    sweep: tuple[date, date], latest: date | None, known: Iterable[date]
) -> date | None:
    """The next day a sweep examines: the newest day in `sweep` that has entries (`latest`:
    the day of the latest entry at or before its end) or is an archive day already (one
    whose entries are all gone must be examined, to go). None: the sweep is done."""
    low, high = sweep
    candidates = [d for d in known if low <= d <= high]
    if latest is not None and low <= latest <= high:
        candidates.append(latest)
    return max(candidates, default=None)


@dataclass(frozen=True)
class Settled:
    """The archive days after an examination, oldest first, and the known days whose
    links changed (they are rendered again too)."""

    days: tuple[date, ...]
    relinked: frozenset[date]


def settle(plan: Plan, found: Mapping[date, bool]) -> Settled:
    """Fold what was examined (`found`: day → whether it has items) into the day list."""
    days = {d for d in plan.days if found.get(d, True)} | {d for d, has in found.items() if has}
    after = tuple(sorted(days))
    return Settled(after, relinked(plan.before, after) - set(found))


def next_state(
    plan: Plan,
    observed: Observed,
    *,
    token: str,
    sources: Mapping[str, str],
    fingerprints: Mapping[date, str],
    settled: Settled,
    left: tuple[frozenset[date], tuple[date, date] | None],
) -> ArchiveState:
    """The state after this publish: each day's fingerprint (new where examined), and the
    work `left` (dirty days not reached, the rest of the sweep)."""
    pending, sweep = left
    return ArchiveState(
        basis=observed.basis,
        token=token,
        today=plan.today,
        oldest=observed.oldest,
        days={d: fingerprints.get(d) or plan.days[d] for d in settled.days},
        sources=dict(sources),
        pending=pending,
        sweep=sweep,
    )

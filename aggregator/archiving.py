"""One publication's archives brought up to date: the store read for what changed, the days
examined within a budget, the changed ones rendered. The rules are `archive.py`'s.

Reads, in one publish: the entries stored since the last publish's change token (their
places and story keys), the other copies of those stories, the entries of sources whose
credit or filters changed; then, per day examined, its entries and their copies on other
days. Nothing is read when nothing changed: an unchanged publish examines no day and
renders nothing. A day is examined whole; the days of one publish stop once `budget`
entries were read (the first is always done), and the rest waits for the next publish
(`ArchiveUpdate.unfinished`), so one publish stays short whatever the store holds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from aggregator import __version__, archive
from aggregator.archive import ArchiveDay, ArchiveState, Observed, Plan
from aggregator.settings import SiteSettings, Theme
from aggregator.store import StoreAPI
from aggregator.store.records import EntryMark, StoryKeys
from aggregator.timeline import Selection, build_timeline
from aggregator.types import SourceCredit, StoredEntry, Timeline

log = logging.getLogger("aggregator")

# Entries one publish of the daemon reads for its archives, all its publications'
# together (a day is read whole, and each publication examines at least one day, so it
# may go over by a few days'). What a publish holds grows with it (its days' documents,
# ~4 MB for a day of 2,000 entries, and the render of one: ~8 MB), and a daemon lives with
# its highest peak: 2,000 is about one busy day per publish, which keeps a 1,000-source
# daemon's first start within its memory bound (5,000: +8 MB at its peak). The cost, when
# archives are built from nothing (no state: a first start): a day the sweep finds is
# rendered again when the next publish finds its older neighbour (~1.7x the CPU of
# building them at 10,000), paced in the background. With a state (a new theme, filter or
# version re-rendering every day) the older neighbours are known and each day renders once.
ARCHIVE_BUDGET = 2_000
# `aggregator once` publishes until done, then exits: nothing lives on with its peak, so it
# takes bigger steps (fewer days rendered twice: 40% less CPU for 50,000 entries).
ONCE_ARCHIVE_BUDGET = 10_000
# The most entries of one day an archive document is made from (the earliest placed), and
# the most copies on other days read beside them: a source that dumps its whole backlog
# on one day cannot make one document, or one read, unbounded.
DAY_READ_CAP = 2_000
# Changed entries read at most; beyond, every day is examined (within the budget, publish
# after publish: a first start, a long outage). Each is a few small objects (~0.7 KB):
# 20,000 of them at once grew the daemon's Python heap by ~14 MB for the rest of its life
# (pymalloc keeps a partly used arena).
CHANGES_CAP = 2_000
# Their stories' copies on other days read at most (a date each, ~0.1 KB): a generic title
# shared by years of entries ("Daily digest") must not turn every publish into a sweep.
COPIES_CAP = 20_000

DayRenderer = Callable[[SiteSettings, ArchiveDay], Mapping[str, bytes]]
# The days to render, rendered in their order (`days_renderer`): one after the other with
# `map` (the daemon), or on every core (`aggregator once`: `render.workers.RenderWorkers`).
DaysRenderer = Callable[[SiteSettings, Iterable[ArchiveDay]], Iterable[Mapping[str, bytes]]]
RenderMap = Callable[
    [Callable[[ArchiveDay], Mapping[str, bytes]], Iterable[ArchiveDay]],
    Iterable[Mapping[str, bytes]],
]


def days_renderer(render: DayRenderer, render_map: RenderMap = map) -> DaysRenderer:
    """`render` applied to each day through `render_map` (`map`: one after the other)."""

    def render_days(
        site: SiteSettings, days: Iterable[ArchiveDay]
    ) -> Iterable[Mapping[str, bytes]]:
        return render_map(functools.partial(render, site), days)

    return render_days


@dataclass(frozen=True)
class ArchiveTarget:
    """A publication whose archives are kept: its directory under output/ ("" for the
    root, "name/" for a channel), its site settings (time zone, base URL: the documents'
    URLs are `site.base_url` + their path inside the directory), what it selects, from
    which sources, and the theme its day pages are rendered with."""

    directory: str
    site: SiteSettings
    selection: Selection
    sources: tuple[str, ...]
    theme: Theme = field(default_factory=Theme)


@dataclass(frozen=True)
class ArchiveUpdate:
    """What a publish changed of one publication's archives.

    `files` are the rendered files by name under output/ (the directory included);
    `removed` the names of days gone. `days` are every archive day, the newest first, and
    `rendered` the days rendered now.
    """

    target: ArchiveTarget
    state: ArchiveState
    files: Mapping[str, bytes] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    days: tuple[date, ...] = ()
    rendered: tuple[date, ...] = ()
    examined: int = 0  # days read from the store
    spent: int = 0  # entries read for them (what counts against the budget)

    @property
    def newest(self) -> date | None:
        """The newest archive day: where atom.xml's `prev-archive` leads."""
        return self.days[0] if self.days else None

    @property
    def unfinished(self) -> bool:
        return self.state.unfinished


def basis_of(target: ArchiveTarget) -> str:
    """What every archive day's files of `target` depend on, as a digest (not `max_items`
    nor `max_age`: they shape atom.xml only): the theme as its templates' text (not where
    they are, which may differ between daemons sharing a store)."""
    selection = target.selection
    return archive.digest(
        __version__,
        target.directory,
        target.site,
        selection.teaser_length,
        _patterns(selection.filters),
        _patterns(selection.channel_filters),
        target.theme.files,
    )


def source_digests(target: ArchiveTarget, credits: Mapping[str, SourceCredit]) -> dict[str, str]:
    """Each source's digest: how its items are credited and filtered."""
    filters = target.selection.source_filters
    return {
        name: archive.digest(credits.get(name), _patterns(filters.get(name)))
        for name in target.sources
    }


def _patterns(filters: object) -> object:
    """Filters as their pattern texts (where they were written in feeds.toml is not their
    meaning: moving a line must not render every archive again)."""
    include = getattr(filters, "include", ())
    exclude = getattr(filters, "exclude", ())
    return (tuple(p.text for p in include), tuple(p.text for p in exclude))


def update_archives(
    store: StoreAPI,
    target: ArchiveTarget,
    credits: Mapping[str, SourceCredit],
    state: ArchiveState | None,
    now: datetime,
    *,
    render: DaysRenderer,
    budget: int | None = None,
) -> ArchiveUpdate:
    """Bring `target`'s archives up to date with the store, within `budget` entries read
    (default `ARCHIVE_BUDGET`).

    `render` makes each archive day's files (names relative to the publication), from the
    day only (`days_renderer`), given the days the newest first: a day whose input
    fingerprint is unchanged is not rendered again.
    """
    zone = ZoneInfo(target.site.timezone)
    basis = basis_of(target)
    digests = source_digests(target, credits)
    token, moments = _changes(store, target, state, basis, digests)
    observed = Observed(
        basis=basis,
        today=archive.local_day(now, zone),
        oldest=store.oldest_entry(target.sources),
        moments=moments,
        published=() if state is not None else _published_days(store, target),
    )
    work = archive.plan(state, observed, zone)
    days = _Days(store, target, credits, now, zone)
    left = days.examine(work, ARCHIVE_BUDGET if budget is None else budget)
    settled = archive.settle(work, {d: bool(t.items) for d, t in days.found.items()})
    for day in sorted(settled.relinked, reverse=True):
        days.read(day)  # its neighbours changed: rendered again, whatever the budget
    fingerprints: dict[date, str] = {}
    rendered: list[date] = []
    files: dict[str, bytes] = {}
    examined = len(days.found)

    def changed() -> Iterator[ArchiveDay]:
        """The days whose input changed, the newest first. With `map` (the daemon), each
        is rendered before the next is made, and its entries let go: what a publish holds
        at its peak is one day's items or its documents, not every day's. (`once`'s
        workers take all of a publish's days at once, within its budget.)"""
        for day in sorted(days.found, reverse=True):
            timeline = days.found.pop(day)
            if not timeline.items:
                continue
            previous, following = archive.neighbours(settled.days, day)
            value = ArchiveDay(day, timeline, previous, following)
            fingerprints[day] = archive.day_fingerprint(basis, value)
            if fingerprints[day] != (state.days.get(day) if state is not None else None):
                rendered.append(day)
                yield value

    for made in render(target.site, changed()):
        files.update({target.directory + n: data for n, data in made.items()})
    gone = set(work.before) - set(settled.days)
    new_state = archive.next_state(
        work,
        observed,
        token=token,
        sources=digests,
        fingerprints=fingerprints,
        settled=settled,
        left=left,
    )
    return ArchiveUpdate(
        target=target,
        state=new_state,
        files=files,
        removed=frozenset(target.directory + n for d in gone for n in archive.day_files(d)),
        days=tuple(reversed(settled.days)),
        rendered=tuple(rendered),
        examined=examined,
        spent=days.spent,
    )


def _changes(
    store: StoreAPI,
    target: ArchiveTarget,
    state: ArchiveState | None,
    basis: str,
    digests: Mapping[str, str],
) -> tuple[str, tuple[datetime, ...] | None]:
    """The store's change token now, and where what changed since `state` sits (None:
    too much to say; every day is examined again)."""
    if archive.must_sweep(state, basis):
        return store.entry_marks(target.sources, None, 0).token, None
    assert state is not None
    stored = store.entry_marks(target.sources, state.token, CHANGES_CAP)
    marks = list(stored.marks)
    complete = stored.complete
    changed_sources = archive.sources_changed(state, digests)
    if changed_sources:
        theirs = store.entry_marks(changed_sources, None, CHANGES_CAP)
        marks += theirs.marks
        complete = complete and theirs.complete
    if not complete:
        return stored.token, None
    moments = [m.sort_date for m in marks]
    keys = _keys(marks)
    if keys.links or keys.titles:
        # A story's copies on other days: its first copy's day credits them all.
        copies = store.story_dates(target.sources, keys, COPIES_CAP + 1)
        if len(copies) > COPIES_CAP:
            return stored.token, None
        moments += copies
    return stored.token, tuple(moments)


def _published_days(store: StoreAPI, target: ArchiveTarget) -> tuple[date, ...]:
    """The archive days of `target` that have files in the stored snapshot."""
    prefix = target.directory
    names = (n.removeprefix(prefix) for n in store.published_digests(prefix))
    days = (archive.day_of(name) for name in names)
    return tuple(sorted({d for d in days if d is not None}))


def _keys(marks: Sequence[EntryMark]) -> StoryKeys:
    return StoryKeys(
        links=frozenset(m.link_key for m in marks if m.link_key),
        titles=frozenset(m.title_key for m in marks if m.title_key),
    )


class _Days:
    """The days examined by one publish, each read once: day → its items (a timeline)."""

    def __init__(
        self,
        store: StoreAPI,
        target: ArchiveTarget,
        credits: Mapping[str, SourceCredit],
        now: datetime,
        zone: ZoneInfo,
    ) -> None:
        self.store = store
        self.target = target
        self.credits = credits
        self.now = now
        self.zone = zone
        self.found: dict[date, Timeline] = {}
        self.spent = 0  # entries read

    def examine(self, work: Plan, budget: int) -> tuple[frozenset[date], tuple[date, date] | None]:
        """Read the dirty days, then walk the sweep, until `budget` entries were read;
        returns what is left (dirty days not reached, the rest of the sweep)."""
        for i, day in enumerate(work.dirty):
            if self.spent >= budget and self.found:
                return frozenset(work.dirty[i:]), work.sweep
            self.read(day)
        sweep = work.sweep
        while sweep is not None:
            if self.spent >= budget and self.found:
                return frozenset(), sweep
            low, high = sweep
            latest = self.store.latest_before(
                self.target.sources, archive.day_bounds(high, self.zone)[1]
            )
            step = archive.next_in_sweep(
                sweep,
                None if latest is None else archive.local_day(latest, self.zone),
                work.days,
            )
            if step is None:
                break
            self.read(step)
            sweep = (low, step - timedelta(days=1)) if step > low else None
        return frozenset(), None

    def read(self, day: date) -> Timeline:
        """The items of `day`, as the timeline merges them: the day's entries with their
        stories' copies on other days (a story sits on its first copy's day and credits
        the others), filtered by the publication's selection."""
        if day in self.found:
            return self.found[day]
        names = self.target.sources
        start, end = archive.day_bounds(day, self.zone)
        # The root's sources are all of them: read by date; a channel's are a few.
        by_source = bool(self.target.directory)
        entries = self.store.entries_between(names, start, end, DAY_READ_CAP, by_source=by_source)
        if len(entries) >= DAY_READ_CAP:
            log.warning(
                "archive %s%s: more than %d entries on one day; the document holds the first %d",
                self.target.directory,
                archive.archive_name(day),
                DAY_READ_CAP,
                DAY_READ_CAP,
            )
        copies = self.store.copies_outside(names, start, end, DAY_READ_CAP)
        self.spent += len(entries) + len(copies) + 1
        self.found[day] = _day_timeline(
            day, entries, copies, self.credits, self.target.selection, self.now, self.zone
        )
        return self.found[day]


def _day_timeline(
    day: date,
    entries: Sequence[StoredEntry],
    copies: Sequence[StoredEntry],
    credits: Mapping[str, SourceCredit],
    selection: Selection,
    now: datetime,
    zone: ZoneInfo,
) -> Timeline:
    """The stories whose first copy sits on `day`, as `build_timeline` makes them."""
    merged = build_timeline(
        entries,
        credits,
        now=now,
        earlier=copies,
        selection=archive.archive_selection(selection, now, len(entries) + len(copies)),
    )
    items = tuple(i for i in merged.items if archive.local_day(i.published, zone) == day)
    return Timeline(items=items, updated=max((i.updated for i in items), default=None))

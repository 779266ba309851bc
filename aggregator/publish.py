"""Publishing: each publication's timeline (the root's, each channel's) built from the
store, its main files rendered when their input changed, its archives brought up to date,
all written to output/ under the lock.

With several daemons sharing a store, what one renders is stored as the published snapshot
(`snapshot.py`) and every daemon copies it into its own output/, so all serve the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from aggregator import __version__, archiving
from aggregator.archive import ArchiveState
from aggregator.archiving import (
    ArchiveTarget,
    ArchiveUpdate,
    RenderMap,
    days_renderer,
    update_archives,
)
from aggregator.publications import ROOT, Publication, publications_of
from aggregator.render import OUTPUT_FILES, Framing, render_archive_day, render_outputs
from aggregator.render.workers import RenderWorkers
from aggregator.settings import Config
from aggregator.settled import Inputs, settled
from aggregator.shared_reads import SharedReads
from aggregator.snapshot import (
    Change,
    copied_files,
    remove_unpublished,
    store_change,
    sync_publication,
)
from aggregator.store import StoreAPI
from aggregator.timeline import build_timeline
from aggregator.types import SourceCredit, Timeline
from aggregator.update import source_credits as credits_of

log = logging.getLogger("aggregator")

# A publish reads at most READ_CAP_PER_ITEM × max_items + READ_CAP_BASE entries (12,000
# for the default 200 items): room for a busy source whose items an `include` mostly
# filters out (3,000 a day, 1 in 100 kept, must not push a quiet source's week out of the
# feed), and a bound on the work whatever the store holds (grouping is linear: ~0.3 s).
READ_CAP_PER_ITEM = 50
READ_CAP_BASE = 2000


@dataclass(frozen=True)
class PublishReport:
    """What a publish wrote: paths under output/ (`news/atom.xml` for a channel's)."""

    items: int  # in the root's timeline
    changed: tuple[str, ...]  # main files rewritten, or removed with a channel no longer published
    unchanged: tuple[str, ...]  # main files
    seconds: float
    rendered: tuple[str, ...] = ()  # the publications whose main files were rendered
    built: tuple[str, ...] = ()  # those whose timeline was built (the others: `settled`)
    archive_days: int = 0  # archive days rendered anew (each its Atom document and page)
    unfinished: bool = False  # archive work is left for the next publish


def read_cap(max_items: int) -> int:
    """The most entries a publish reads (and the most earlier copies beside them)."""
    return READ_CAP_PER_ITEM * max_items + READ_CAP_BASE


def source_credits(config: Config, store: StoreAPI) -> dict[str, SourceCredit]:
    """How each configured source is credited, from what its feed said when last parsed."""
    return credits_of(config.sources, store.feed_metas())


def current_timeline(
    config: Config,
    store: StoreAPI,
    now: datetime,
    credits: Mapping[str, SourceCredit] | None = None,
) -> Timeline:
    """The root's timeline as it should be published now (`publication_timeline`)."""
    credits = credits if credits is not None else source_credits(config, store)
    root = publications_of(config)[0]
    return publication_timeline(root, SharedReads(store), now, credits)


def publication_timeline(
    publication: Publication,
    reads: SharedReads,
    now: datetime,
    credits: Mapping[str, SourceCredit],
) -> Timeline:
    """One publication's timeline as it should be published now, from its own sources.

    Reads only what can be published: the newest entries, a few times `max_items` of them
    (filters and duplicates drop some), reading further only when that did not suffice, and
    never more than `read_cap` entries, nor as many earlier copies of them: a feed of
    thousands of copies of one story cannot make a publish read the whole store.
    """
    names = list(publication.sources)
    selection = publication.selection
    mine = own_credits(publication, credits)
    cap = read_cap(selection.max_items)
    limit = min(selection.max_items * 2 + 50, cap)
    oldest = now - selection.max_age
    while True:
        entries = reads.recent_entries(names, oldest, limit)
        timeline = build_timeline(
            entries,
            mine,
            now=now,
            earlier=reads.earlier_copies(names, entries, oldest, limit),
            selection=selection,
        )
        if len(timeline.items) >= selection.max_items or len(entries) < limit:
            break
        if limit >= cap:
            log.warning(
                "%s: published %d items, fewer than max_items, after reading %d entries "
                "(the most a publish reads): most of the newest are copies or filtered out",
                publication.site.base_url,
                len(timeline.items),
                limit,
            )
            break
        limit = min(limit * 4, cap)
    if timeline.updated is None:
        # Nothing to publish yet: a fixed, plausible date keeps the empty feeds' bytes stable.
        timeline = replace(timeline, updated=reads.store.first_added() or now)
    return timeline


def own_credits(
    publication: Publication, credits: Mapping[str, SourceCredit]
) -> dict[str, SourceCredit]:
    """The credits of the publication's own sources, in its order."""
    return {name: credits[name] for name in publication.sources if name in credits}


def archive_target(publication: Publication) -> ArchiveTarget:
    """Where and how a publication's archives are kept (`archiving.py`)."""
    return ArchiveTarget(
        directory=publication.directory,
        site=publication.site,
        selection=publication.selection,
        sources=publication.sources,
        theme=publication.theme,
    )


@dataclass(frozen=True)
class PublicationState:
    """What a publication's last publish stored beside its files: the fingerprint of its
    main files' input (the same input renders the same bytes: nothing to render again) and
    its archives' state."""

    main: str | None = None
    archive: ArchiveState | None = None

    def encode(self) -> str:
        archive = None if self.archive is None else self.archive.to_json()
        return json.dumps({"main": self.main, "archive": archive}, sort_keys=True)

    @classmethod
    def decode(cls, text: str | None) -> PublicationState:
        """The state `encode` wrote; an empty one for anything else (all is rendered again)."""
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            value = {}
        if not isinstance(value, dict):
            value = {}
        main = value.get("main")
        return cls(
            main if isinstance(main, str) else None, ArchiveState.from_json(value.get("archive"))
        )


@dataclass(frozen=True)
class Rendered:
    """One publication's part of a publish: its timeline, its files rendered anew (by name
    under output/), the files it no longer has, its state before and after, and its archive
    report. A publish of several publications stores them all in one `store_change`."""

    publication: Publication
    timeline: Timeline
    files: dict[str, bytes]
    removed: frozenset[str]
    state: PublicationState
    before: PublicationState
    archive: ArchiveUpdate

    @property
    def directory(self) -> str:
        return self.publication.directory

    @property
    def main_rendered(self) -> bool:
        """Whether its main files were rendered (their input changed)."""
        return self.state.main != self.before.main

    def change(self) -> Change:
        """What the snapshot stores of it."""
        return Change(
            self.directory, self.files, self.removed, self.state.encode(), self.before.encode()
        )


def framing(publication: Publication, newest_archive: date | None) -> Framing:
    """What a publication's main files show around its timeline."""
    return Framing(
        theme=publication.theme,
        channel=publication.channel,
        channels=publication.channels,
        tags=publication.tags,
        newest_archive=newest_archive,
    )


def main_fingerprint(
    publication: Publication,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    newest_archive: date | None,
) -> str:
    """What a publication's main files are rendered from, as a digest. Rendering is a pure
    function of these (and of this version's code): the same input renders the same bytes,
    so there is nothing to render again. The timeline holds the teasers as cut;
    `teaser_length` is named too, as what they were cut with."""
    rendered_from = (
        __version__,
        publication.site,
        publication.selection.teaser_length,
        # The theme as its templates' text (not where they are, which may differ between
        # daemons sharing a store): an edited template renders again.
        publication.theme.files,
        timeline,
        sorted(credits.items()),
        publication.channels,
        sorted(publication.tags.items()),
        newest_archive,
    )
    return hashlib.sha256(repr(rendered_from).encode()).hexdigest()


def render_publication(
    store: StoreAPI,
    publication: Publication,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    now: datetime,
    budget: int | None = None,
    render_map: RenderMap = map,
) -> Rendered:
    """A publication's main files (only when their input changed) and archives (only the
    days whose input changed, within `budget` entries read, rendered through `render_map`),
    with the state to store beside them."""
    before = PublicationState.decode(store.publication_state(publication.directory))
    mine = own_credits(publication, credits)
    render_day = functools.partial(
        render_archive_day, theme=publication.theme, channel=publication.channel
    )
    archives = update_archives(
        store,
        archive_target(publication),
        mine,
        before.archive,
        now,
        render=days_renderer(render_day, render_map),
        budget=budget,
    )
    main = main_fingerprint(publication, timeline, mine, archives.newest)
    files = dict(archives.files)
    if main != before.main:
        outputs = render_outputs(
            publication.site, timeline, mine, framing(publication, archives.newest)
        )
        files.update({publication.path(name): data for name, data in outputs.items()})
    after = PublicationState(main, archives.state)
    return Rendered(publication, timeline, files, archives.removed, after, before, archives)


def publish_timeline(
    config: Config,
    store: StoreAPI,
    now: datetime,
    archive_budget: int | None = None,
    render_map: RenderMap = map,
) -> PublishReport:
    """Render what changed of every publication (the root, each channel), store it in the
    published snapshot, write what changed to output/.

    Daemons sharing a PostgreSQL store each serve their own output/, yet must serve the
    same bytes (one ETag, whichever daemon a reader reaches). Rendering alone cannot promise
    that: each would render at its own moment from a database that keeps changing. So
    publishing runs under `store.publish_lock()` (one publisher at a time), stores what it
    changed of the snapshot (file by file: archives are thousands of files, of which a
    publish changes a few), and every daemon copies the newest snapshot into its output/
    (`snapshot.follow_published`). The snapshot written last was rendered from the newest
    data, since readers of the data take the same lock. On SQLite it is the same path.

    A publication's main files are rendered only when their input changed, an archive day
    only when its input did (`archiving.py`). A publication whose input is, by `Inputs`,
    that of its last publish here is not even read (`settled`). A channel no longer
    configured leaves the snapshot and output/.
    """
    output_dir = config.publish.output_dir
    publications = publications_of(config)
    current = {p.directory for p in publications}
    with store.publish_lock():
        started = time.perf_counter()  # the work, not the wait for another daemon's turn
        credits = source_credits(config, store)
        stored = store.published_fingerprints()
        versions = store.entry_versions()
        inputs = {p.directory: Inputs.of(p, credits, versions, now) for p in publications}
        quiet = settled(output_dir, store, inputs, stored)
        reads = SharedReads(store)
        # One budget for every publication's archives: eleven publications' first publish
        # takes as long as one's; what is left waits for the next publish.
        budget = archiving.ARCHIVE_BUDGET if archive_budget is None else archive_budget
        rendered: list[Rendered] = []
        for p in (p for p in publications if p.directory not in quiet):
            timeline = publication_timeline(p, reads, now, credits)
            rendered.append(
                render_publication(store, p, timeline, credits, now, budget, render_map)
            )
            budget = max(0, budget - rendered[-1].archive.spent)
        heads = store_change(
            store, [r.change() for r in rendered], sorted(set(stored) - current), stored
        )
        written: dict[str, bool] = {}
        for r in rendered:
            record = inputs[r.directory].record(len(r.timeline.items), r.archive.unfinished)
            written |= sync_publication(output_dir, store, r.directory, heads[r.directory], record)
        removed = remove_unpublished(output_dir, current)
    every = [p.path(name) for p in publications for name in OUTPUT_FILES]
    root = rendered[0] if rendered and rendered[0].directory == ROOT else None
    report = PublishReport(
        items=len(root.timeline.items) if root else quiet.get(ROOT, 0),
        changed=tuple([n for n in every if written.get(n)] + sorted(removed)),
        unchanged=tuple(n for n in every if not written.get(n)),
        seconds=time.perf_counter() - started,
        rendered=tuple(r.directory for r in rendered if r.main_rendered),
        built=tuple(r.directory for r in rendered),
        archive_days=sum(len(r.archive.rendered) for r in rendered),
        unfinished=any(r.archive.unfinished for r in rendered),
    )
    if any(written.values()) or removed:
        log.info("published %d items (%s)", report.items, copied_files(written | removed))
    return report


def publish_all(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Publish until no archive work is left (`aggregator once`: no next publish comes
    soon to finish it), in steps of `archiving.ONCE_ARCHIVE_BUDGET`, the archive days
    rendered on every core (`render.workers`); one report for all."""
    budget = archiving.ONCE_ARCHIVE_BUDGET
    workers = RenderWorkers()
    try:
        report = publish_timeline(config, store, now, budget, workers.map)
        while report.unfinished:
            report = _joined(report, publish_timeline(config, store, now, budget, workers.map))
    except BaseException:
        workers.close(kill=True)  # Ctrl-C, or an error: no render is waited for
        raise
    workers.close()
    return report


def _joined(first: PublishReport, then: PublishReport) -> PublishReport:
    """Two publishes' reports as one: what either changed, rendered or built."""

    def both(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
        return (*a, *(n for n in b if n not in a))

    return replace(
        then,
        changed=both(first.changed, then.changed),
        unchanged=tuple(n for n in then.unchanged if n not in first.changed),
        seconds=first.seconds + then.seconds,
        rendered=both(first.rendered, then.rendered),
        built=both(first.built, then.built),
        archive_days=first.archive_days + then.archive_days,
    )

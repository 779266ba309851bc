"""Publishing: each publication's timeline (the root's, each channel's) built from the
store, rendered when it changed, written to output/ under the lock.

With several daemons sharing a store, what one renders is stored as the published snapshot
and every daemon copies it into its own output/, so all serve the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from aggregator import __version__
from aggregator.output import (
    already_published,
    publish_files,
    published_names,
    published_subdirectories,
    remember_published,
    remove_published,
)
from aggregator.publications import ROOT, Publication, publications_of
from aggregator.render import OUTPUT_FILES, render_outputs
from aggregator.settings import Config
from aggregator.settled import Inputs, settled
from aggregator.shared_reads import SharedReads
from aggregator.store import StoreAPI
from aggregator.store.records import PublishedSnapshot
from aggregator.timeline import build_timeline
from aggregator.types import (
    SourceCredit,
    Timeline,
)
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
    changed: tuple[str, ...]  # rewritten, or removed with a channel no longer published
    unchanged: tuple[str, ...]
    seconds: float
    rendered: tuple[str, ...] = ()  # the publications rendered: "" for the root, "news/"
    built: tuple[str, ...] = ()  # those whose timeline was built (the others: `settled`)


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
    mine = {name: credits[name] for name in names if name in credits}
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


@dataclass(frozen=True)
class _Planned:
    """A publication, its timeline and the fingerprint of everything it renders from."""

    publication: Publication
    timeline: Timeline
    credits: dict[str, SourceCredit]
    fingerprint: str


def _plan(
    publication: Publication,
    reads: SharedReads,
    now: datetime,
    credits: Mapping[str, SourceCredit],
) -> _Planned:
    timeline = publication_timeline(publication, reads, now, credits)
    mine = {name: credits[name] for name in publication.sources if name in credits}
    # Rendering is a pure function of these (and of this version's code): the same input
    # renders the same bytes, so there is nothing to render again. The timeline holds the
    # teasers as cut; `teaser_length` is named too, as what they were cut with.
    rendered_from = (
        __version__,
        publication.site,
        publication.selection.teaser_length,
        # The theme as its templates' text (not where they are, which may differ between
        # daemons sharing a store): an edited template renders again.
        publication.theme.files,
        timeline,
        sorted(mine.items()),
        publication.channels,
        sorted(publication.tags.items()),
    )
    fingerprint = hashlib.sha256(repr(rendered_from).encode()).hexdigest()
    return _Planned(publication, timeline, mine, fingerprint)


def _render(planned: _Planned) -> PublishedSnapshot:
    publication = planned.publication
    files = render_outputs(
        publication.site,
        planned.timeline,
        planned.credits,
        theme=publication.theme,
        channel=publication.channel,
        channels=publication.channels,
        tags=publication.tags,
    )
    return PublishedSnapshot(planned.fingerprint, files, publication.directory)


def publish_timeline(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Render what changed of every publication (the root, each channel), store it as the
    published snapshot, write what changed.

    Daemons sharing a PostgreSQL store each serve their own output/, yet must serve the
    same bytes (one ETag, whichever daemon a reader reaches). Rendering alone cannot promise
    that: each would render at its own moment from a database that keeps changing. So
    publishing runs under `store.publish_lock()` (one publisher at a time), stores what it
    rendered with the fingerprint of its input, and every daemon copies the newest snapshot
    into its output/ (`follow_published`). The snapshot written last was rendered from the
    newest data, since readers of the data take the same lock. On SQLite it is the same path.

    Each publication has a fingerprint of its own: one whose stored snapshot has this very
    fingerprint is not rendered again, only copied if missing here, so a change in one
    channel renders that channel (and the root, whose timeline it changes too) alone. One
    whose input is, by `Inputs`, that of its last publish here is not even read
    (`settled`). A channel no longer configured leaves the snapshot and output/.
    """
    output_dir = config.publish.output_dir
    publications = publications_of(config)
    with store.publish_lock():
        started = time.perf_counter()  # the work, not the wait for another daemon's turn
        credits = source_credits(config, store)
        stored = store.published_fingerprints()
        versions = store.entry_versions()
        inputs = {p.directory: Inputs.of(p, credits, versions, now) for p in publications}
        quiet = settled(output_dir, store, inputs, stored)
        reads = SharedReads(store)
        planned = [_plan(p, reads, now, credits) for p in publications if p.directory not in quiet]
        fresh = [
            _render(p) for p in planned if stored.get(p.publication.directory) != p.fingerprint
        ]
        current = {p.directory for p in publications}
        removed = sorted(set(stored) - current)
        if fresh or removed:
            store.save_published(fresh, removed)
        written: dict[str, bool] = {}
        for snapshot in fresh:
            written |= write_snapshot(output_dir, snapshot)
        kept = {p.publication.directory: p.fingerprint for p in planned}
        written |= _copy_missing(output_dir, store, kept)
        for p in planned:  # what the next publish needs to know it may skip them
            remember_published(
                output_dir / p.publication.directory,
                p.fingerprint,
                published_names(output_dir / p.publication.directory),
                inputs[p.publication.directory].record(len(p.timeline.items)),
            )
        written |= _remove_unpublished(output_dir, current)
    every = [p.path(name) for p in publications for name in OUTPUT_FILES]
    root = planned[0] if planned and planned[0].publication.directory == ROOT else None
    report = PublishReport(
        items=len(root.timeline.items) if root else quiet.get(ROOT, 0),
        changed=tuple(
            [n for n in every if written.get(n)] + sorted(n for n in written if n not in every)
        ),
        unchanged=tuple(n for n in every if not written.get(n)),
        seconds=time.perf_counter() - started,
        rendered=tuple(s.publication for s in fresh),
        built=tuple(p.publication.directory for p in planned),
    )
    if written:
        log.info(
            "published %d items (%s)", report.items, ", ".join(report.changed) or "no file changed"
        )
    return report


def follow_published(output_dir: Path, store: StoreAPI) -> dict[str, bool]:
    """Copy the store's published snapshot into `output_dir` where it is not there already,
    and remove the channels it no longer holds.

    Returns which files were rewritten or removed, by path under `output_dir` ({} when the
    snapshot was already here, or there is none yet). Each file is replaced atomically and
    only when its bytes differ, so an unchanged file keeps its ETag.
    """
    fingerprints = store.published_fingerprints()
    if not fingerprints:
        return {}
    written = _copy_missing(output_dir, store, fingerprints)
    written |= _remove_unpublished(output_dir, set(fingerprints))
    return written


def _copy_missing(
    output_dir: Path, store: StoreAPI, fingerprints: Mapping[str, str]
) -> dict[str, bool]:
    """Write the stored snapshot of each publication whose files here are not those of its
    fingerprint (a first start, another daemon's publish, a file removed by hand)."""
    missing = [
        publication
        for publication, fingerprint in fingerprints.items()
        if not already_published(output_dir / publication, fingerprint)
    ]
    written: dict[str, bool] = {}
    for snapshot in store.load_published(missing) if missing else ():
        written |= write_snapshot(output_dir, snapshot)
    return written


def _remove_unpublished(output_dir: Path, current: set[str]) -> dict[str, bool]:
    """Remove the files of the channels published here before and no longer: only what a
    publish wrote (`output.remove_published`), never anything else under output/."""
    removed: dict[str, bool] = {}
    for directory in published_subdirectories(output_dir):
        if directory not in current:
            names = remove_published(output_dir / directory)
            removed |= dict.fromkeys((directory + name for name in names), True)
            log.info("removed the channel %s from %s", directory.rstrip("/"), output_dir)
    return removed


def write_snapshot(output_dir: Path, snapshot: PublishedSnapshot) -> dict[str, bool]:
    """Write a publication's files into its directory under `output_dir` (each only if its
    bytes differ) and remember its fingerprint there; which files were rewritten, by path
    under `output_dir`."""
    directory = output_dir / snapshot.publication
    written = publish_files(directory, snapshot.files)
    remember_published(directory, snapshot.fingerprint, snapshot.files)
    return {snapshot.publication + name: changed for name, changed in written.items()}

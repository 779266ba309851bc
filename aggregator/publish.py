"""Publishing: the timeline built from the store, rendered, written to output/ under the lock.

With several daemons sharing a store, what one renders is stored as the published snapshot
and every daemon copies it into its own output/, so all serve the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from aggregator import __version__
from aggregator.archive import ArchiveState
from aggregator.archiving import ArchiveTarget, ArchiveUpdate, update_archives
from aggregator.output import (
    already_published,
    publish_files,
    published_here,
    remember_published,
    remove_published,
)
from aggregator.render import OUTPUT_FILES, render_archive_day, render_outputs
from aggregator.settings import Config
from aggregator.store import StoreAPI
from aggregator.store.records import PublishedChange, PublishedFile
from aggregator.timeline import Selection, build_timeline
from aggregator.types import (
    SourceCredit,
    Timeline,
)
from aggregator.update import source_credits as credits_of
from aggregator.update import story_keys_of

log = logging.getLogger("aggregator")

# A publish reads at most READ_CAP_PER_ITEM × max_items + READ_CAP_BASE entries (12,000
# for the default 200 items): room for a busy source whose items an `include` mostly
# filters out (3,000 a day, 1 in 100 kept, must not push a quiet source's week out of the
# feed), and a bound on the work whatever the store holds (grouping is linear: ~0.3 s).
READ_CAP_PER_ITEM = 50
READ_CAP_BASE = 2000


@dataclass(frozen=True)
class PublishReport:
    """What a publish wrote: which of the main files changed in this output/, how many
    archive files it rendered anew, whether archive work is left for the next publish."""

    items: int
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    seconds: float
    archive_files: int = 0
    unfinished: bool = False


def selection_of(config: Config) -> Selection:
    """What the published timeline selects, from `[publish]` and each source's filters."""
    return Selection(
        max_items=config.publish.max_items,
        max_age=config.publish.max_age,
        filters=config.publish.filters,
        source_filters={s.name: s.filters for s in config.sources},
        teaser_length=config.publish.teaser_length,
    )


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
    """The timeline as it should be published now.

    Reads only what can be published: the newest entries, a few times `max_items` of them
    (filters and duplicates drop some), reading further only when that did not suffice, and
    never more than `read_cap` entries, nor as many earlier copies of them: a feed of
    thousands of copies of one story cannot make a publish read the whole store.
    """
    names = [s.name for s in config.sources]
    credits = credits if credits is not None else source_credits(config, store)
    cap = read_cap(config.publish.max_items)
    limit = min(config.publish.max_items * 2 + 50, cap)
    oldest = now - config.publish.max_age
    selection = selection_of(config)
    while True:
        entries = store.recent_entries(names, oldest, limit)
        timeline = build_timeline(
            entries,
            credits,
            now=now,
            earlier=store.earlier_copies(names, story_keys_of(entries), oldest, limit),
            selection=selection,
        )
        if len(timeline.items) >= config.publish.max_items or len(entries) < limit:
            break
        if limit >= cap:
            log.warning(
                "published %d items, fewer than max_items, after reading %d entries "
                "(the most a publish reads): most of the newest are copies or filtered out",
                len(timeline.items),
                limit,
            )
            break
        limit = min(limit * 4, cap)
    if timeline.updated is None:
        # Nothing to publish yet: a fixed, plausible date keeps the empty feeds' bytes stable.
        timeline = replace(timeline, updated=store.first_added() or now)
    return timeline


def archive_target(config: Config) -> ArchiveTarget:
    """The root publication, whose archives are kept under output/archive/."""
    return ArchiveTarget(
        directory="",
        site=config.site,
        selection=selection_of(config),
        sources=tuple(s.name for s in config.sources),
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
    """One publication's part of a publish: its files rendered anew (by name under
    output/), the files it no longer has, its state before and after, its archive report.
    A publish of several publications (channels) stores them all in one `store_change`."""

    files: dict[str, bytes]
    removed: frozenset[str]
    state: PublicationState
    before: PublicationState
    archive: ArchiveUpdate


def render_publication(
    store: StoreAPI,
    target: ArchiveTarget,
    timeline: Timeline,
    credits: Mapping[str, SourceCredit],
    now: datetime,
) -> Rendered:
    """A publication's main files (only when their input changed) and archives (only the
    days whose input changed), with the state to store beside them."""
    before = PublicationState.decode(store.publication_state(target.directory))
    archives = update_archives(
        store, target, credits, before.archive, now, render=render_archive_day
    )
    # Rendering is a pure function of these (and of this version's code): the same input
    # renders the same bytes, so there is nothing to render again. The timeline holds the
    # teasers as cut; `teaser_length` is named too, as what they were cut with.
    rendered_from = (
        __version__,
        target.site,
        target.selection.teaser_length,
        timeline,
        sorted(credits.items()),
        archives.newest,
    )
    main = hashlib.sha256(repr(rendered_from).encode()).hexdigest()
    files = dict(archives.files)
    if main != before.main:
        outputs = render_outputs(target.site, timeline, credits, archives.newest)
        files.update({target.directory + name: data for name, data in outputs.items()})
    after = PublicationState(main, archives.state)
    return Rendered(files, archives.removed, after, before, archives)


def publish_timeline(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Render what changed, store it in the published snapshot, write it to output/.

    Daemons sharing a PostgreSQL store each serve their own output/, yet must serve the
    same bytes (one ETag, whichever daemon a reader reaches). Rendering alone cannot promise
    that: each would render at its own moment from a database that keeps changing. So
    publishing runs under `store.publish_lock()` (one publisher at a time), stores what it
    changed of the snapshot (file by file: archives are thousands of files, of which a
    publish changes a few), and every daemon copies the newest snapshot into its output/
    (`follow_published`). The snapshot written last was rendered from the newest data,
    since readers of the data take the same lock. On SQLite it is the same path. A main
    file whose input is unchanged is not rendered again, nor an archive day whose input
    is unchanged (`archiving.py`).
    """
    output_dir = config.publish.output_dir
    with store.publish_lock():
        started = time.perf_counter()  # the work, not the wait for another daemon's turn
        credits = source_credits(config, store)
        timeline = current_timeline(config, store, now, credits)
        target = archive_target(config)
        rendered = render_publication(store, target, timeline, credits, now)
        fingerprint, digests, written_files = store_change(store, [rendered])
        written = sync_output(output_dir, store, fingerprint, digests, at_hand=written_files)
    changed = tuple(n for n in OUTPUT_FILES if written.get(n))
    report = PublishReport(
        items=len(timeline.items),
        changed=changed,
        unchanged=tuple(n for n in OUTPUT_FILES if not written.get(n)),
        seconds=time.perf_counter() - started,
        archive_files=len(rendered.archive.files),
        unfinished=rendered.archive.unfinished,
    )
    if any(written.values()):
        archived = sum(1 for n, w in written.items() if w and n not in OUTPUT_FILES)
        log.info(
            "published %d items (%s%s)",
            report.items,
            ", ".join(report.changed) or "no main file changed",
            f"; {archived} archive files" if archived else "",
        )
    return report


def store_change(
    store: StoreAPI, publications: Sequence[Rendered]
) -> tuple[str | None, dict[str, str] | None, dict[str, bytes]]:
    """Store what the publications changed of the snapshot: the files whose bytes differ
    from the stored ones, the ones gone, their states. Returns the snapshot's fingerprint,
    every stored file's digest (None when nothing was rendered: not read), and the files
    written, which need not be read back to be copied into output/."""
    fingerprint = store.published_fingerprint()
    files: dict[str, bytes] = {}
    removed: set[str] = set()
    states: dict[str, str] = {}
    for rendered in publications:
        files.update(rendered.files)
        removed |= rendered.removed
        if rendered.state != rendered.before:
            states[rendered.archive.target.directory] = rendered.state.encode()
    if not files and not removed:
        if states:
            store.save_published(PublishedChange(fingerprint or _EMPTY, states=states))
        return fingerprint, None, {}
    digests = store.published_digests()
    written = [
        PublishedFile(name, digest, data)
        for name, data in sorted(files.items())
        if digests.get(name) != (digest := _digest(data))
    ]
    gone = frozenset(n for n in removed if n in digests)
    if written or gone:
        fingerprint = hashlib.sha256(
            repr((fingerprint, sorted((f.name, f.digest) for f in written), sorted(gone))).encode()
        ).hexdigest()
    change = PublishedChange(
        fingerprint or _EMPTY,
        tuple(written),
        gone,
        states,
    )
    if written or gone or states:
        store.save_published(change)
    digests.update({f.name: f.digest for f in written})
    for name in gone:
        del digests[name]
    return change.fingerprint, digests, {f.name: f.data for f in written}


_EMPTY = hashlib.sha256(b"").hexdigest()  # the fingerprint of a snapshot with nothing in it


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_all(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Publish until no archive work is left (`aggregator once`: no next publish comes
    soon to finish it); one report for all, the first publish's main files changed."""
    report = publish_timeline(config, store, now)
    while report.unfinished:
        more = publish_timeline(config, store, now)
        report = replace(
            more,
            changed=tuple(n for n in OUTPUT_FILES if n in report.changed or n in more.changed),
            unchanged=tuple(n for n in more.unchanged if n not in report.changed),
            seconds=report.seconds + more.seconds,
            archive_files=report.archive_files + more.archive_files,
        )
    return report


def copied_files(written: Mapping[str, bool]) -> str:
    """The files a copy rewrote, for a log line: the main ones by name, the others (archive
    days: thousands at a first copy) counted."""
    main = [n for n in OUTPUT_FILES if written.get(n)]
    others = sum(1 for n, w in written.items() if w and n not in OUTPUT_FILES)
    return ", ".join([*main, *([f"{others} other files"] if others else [])])


def follow_published(
    output_dir: Path, store: StoreAPI, fingerprint: str | None = None
) -> dict[str, bool]:
    """Copy the store's published snapshot into `output_dir` unless it is there already.

    `fingerprint`: the snapshot's, when the caller has just read it. Returns, for each
    published file, whether it was rewritten ({} when the snapshot was already here, or
    there is none yet). Only the files whose digest differs from what this directory
    recorded are read from the store; each is replaced atomically and only when its bytes
    differ, so an unchanged file keeps its ETag; files no longer published are removed.
    """
    return sync_output(output_dir, store, fingerprint or store.published_fingerprint(), None)


# Files read from the store at a time when copying a snapshot: archives of a year may hold
# hundreds of megabytes, which a follower's first copy must not hold in memory at once.
_COPY_BATCH = 64


def sync_output(
    output_dir: Path,
    store: StoreAPI,
    fingerprint: str | None,
    digests: Mapping[str, str] | None,
    at_hand: Mapping[str, bytes] | None = None,
) -> dict[str, bool]:
    """Make `output_dir` hold snapshot `fingerprint`: `digests` its files' (read from the
    store when None), `at_hand` the bytes of some of them (not read again)."""
    if fingerprint is None or already_published(output_dir, fingerprint):
        return {}
    if digests is None:
        digests = store.published_digests()
    _, intact = published_here(output_dir)
    at_hand = at_hand or {}
    wanted = [n for n, d in sorted(digests.items()) if intact.get(n) != d]
    written = dict.fromkeys(digests, False)
    written.update(publish_files(output_dir, {n: at_hand[n] for n in wanted if n in at_hand}))
    rest = [n for n in wanted if n not in at_hand]
    copied = {n for n in wanted if n in at_hand}
    for start in range(0, len(rest), _COPY_BATCH):
        batch = store.load_published(rest[start : start + _COPY_BATCH])
        written.update(publish_files(output_dir, {f.name: f.data for f in batch}))
        copied |= {f.name for f in batch}
        if any(f.digest != digests[f.name] for f in batch):
            fingerprint = ""  # a file replaced meanwhile: the next copy takes it
    for name in sorted(set(intact) - set(digests)):
        remove_published(output_dir, name)
    held = {n: d for n, d in digests.items() if n in copied or intact.get(n) == d}
    remember_published(output_dir, fingerprint, held)
    return written

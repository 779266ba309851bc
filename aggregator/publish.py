"""Publishing: the timeline built from the store, rendered, written to output/ under the lock.

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
    remember_published,
)
from aggregator.render import OUTPUT_FILES, render_outputs
from aggregator.settings import Config
from aggregator.store import StoreAPI
from aggregator.store.records import PublishedSnapshot
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
    """What a publish wrote."""

    items: int
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    seconds: float


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


def publish_timeline(config: Config, store: StoreAPI, now: datetime) -> PublishReport:
    """Render the current timeline, store it as the published snapshot, write what changed.

    Daemons sharing a PostgreSQL store each serve their own output/, yet must serve the
    same bytes (one ETag, whichever daemon a reader reaches). Rendering alone cannot promise
    that: each would render at its own moment from a database that keeps changing. So
    publishing runs under `store.publish_lock()` (one publisher at a time), stores what it
    rendered with the fingerprint of its input, and every daemon copies the newest snapshot
    into its output/ (`follow_published`). The snapshot written last was rendered from the
    newest data, since readers of the data take the same lock. On SQLite it is the same path.
    A snapshot with this very fingerprint is not rendered again, only copied if missing here.
    """
    output_dir = config.publish.output_dir
    with store.publish_lock():
        started = time.perf_counter()  # the work, not the wait for another daemon's turn
        credits = source_credits(config, store)
        timeline = current_timeline(config, store, now, credits)
        # Rendering is a pure function of these (and of this version's code): the same input
        # renders the same bytes, so there is nothing to render again. The timeline holds
        # the teasers as cut; `teaser_length` is named too, as what they were cut with. The
        # theme counts as its templates' text (not where they are, which may differ between
        # daemons sharing a store), so an edited template renders again.
        rendered_from = (
            __version__,
            config.site,
            config.publish.teaser_length,
            config.publish.theme.files,
            timeline,
            sorted(credits.items()),
        )
        fingerprint = hashlib.sha256(repr(rendered_from).encode()).hexdigest()
        if store.published_fingerprint() == fingerprint:
            written = follow_published(output_dir, store, fingerprint)
        else:
            snapshot = PublishedSnapshot(
                fingerprint, render_outputs(config.site, timeline, credits, config.publish.theme)
            )
            store.save_published(snapshot)
            written = write_snapshot(output_dir, snapshot)
    report = PublishReport(
        items=len(timeline.items),
        changed=tuple(n for n in OUTPUT_FILES if written.get(n)),
        unchanged=tuple(n for n in OUTPUT_FILES if not written.get(n)),
        seconds=time.perf_counter() - started,
    )
    if written:
        log.info(
            "published %d items (%s)", report.items, ", ".join(report.changed) or "no file changed"
        )
    return report


def follow_published(
    output_dir: Path, store: StoreAPI, fingerprint: str | None = None
) -> dict[str, bool]:
    """Copy the store's published snapshot into `output_dir` unless it is there already.

    `fingerprint`: the snapshot's, when the caller has just read it. Returns which files
    were rewritten ({} when the snapshot was already here, or there is none yet). Each file
    is replaced atomically and only when its bytes differ, so an unchanged file keeps its
    ETag.
    """
    fingerprint = fingerprint or store.published_fingerprint()
    if fingerprint is None or already_published(output_dir, fingerprint, OUTPUT_FILES):
        return {}
    snapshot = store.load_published()
    if snapshot is None:
        return {}
    return write_snapshot(output_dir, snapshot)


def write_snapshot(output_dir: Path, snapshot: PublishedSnapshot) -> dict[str, bool]:
    """Write a snapshot's files into `output_dir` (each only if its bytes differ) and
    remember its fingerprint there; which files were rewritten."""
    written = publish_files(output_dir, snapshot.files)
    remember_published(output_dir, snapshot.fingerprint, snapshot.files)
    return written

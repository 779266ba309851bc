"""The update rules: what a poll changes in the store, decided from what the store holds.

Pure (no I/O, no SQL): the poll path reads from the store (`known_entries`, the schedules
`sync_sources` returns, `feed_metas`), asks these functions, and hands the store the
answer to write (`EntryWrites`, `Reschedule`). The stores only read and write rows, so
the rules are written once, whichever database holds the rows (`tests/test_update.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aggregator.policy import ServerHints, is_overdue_schedule, next_poll
from aggregator.settings import SourceConfig
from aggregator.store.records import (
    EntryWrite,
    EntryWrites,
    FeedMeta,
    KnownEntries,
    PollOutcome,
    Reschedule,
    Schedule,
    Signature,
    StoreResult,
    StoryKeys,
)
from aggregator.text import story_keys
from aggregator.timeline import CLOCK_SKEW, order_date
from aggregator.types import ItemMemory, ParsedEntry, ParsedFeed, SourceCredit, StoredEntry

__all__ = [
    "entry_story_keys",
    "entry_writes",
    "feed_meta",
    "items_to_remember",
    "outcome_of",
    "reuse_holds",
    "schedule_repairs",
    "signature",
    "source_credits",
    "story_keys_of",
]


def to_second(value: datetime | None) -> datetime | None:
    """An entry date as the stores keep it: UTC, cut to the whole second (what feeds carry)."""
    return None if value is None else value.astimezone(UTC).replace(microsecond=0)


def stored_updated(updated: datetime | None, now: datetime) -> datetime | None:
    """An `updated` in the future is the publisher's clock: until it has come, it is no date
    at all (keeping it would make the published feeds change every run)."""
    return None if updated is not None and updated > now + CLOCK_SKEW else updated


def signature(entry: ParsedEntry, now: datetime) -> Signature:
    """What the store would hold of `entry` if it were stored `now`, for telling a change."""
    updated = stored_updated(entry.updated, now)
    return Signature(entry.content_hash, to_second(entry.published), to_second(updated))


def entry_writes(
    entries: Sequence[ParsedEntry],
    known: KnownEntries,
    now: datetime,
    reused: Sequence[str] = (),
) -> EntryWrites:
    """Which entries of a parsed feed are new, which changed, which were buried by retention.

    Unchanged entries (most of a changed feed) are not written at all. A new entry's place
    in the timeline (`sort_date`) is fixed now and never moves; undated entries seen together
    keep their document order, a second apart, instead of all sharing one moment. A buried
    entry is not new: its tombstone's `last_seen` is touched so it stays buried. `reused`:
    the ids of entries a partial parse did not read again (unchanged; `reuse_holds`), of
    which only the buried ones are written (touched), as a whole parse would.
    """
    new: list[EntryWrite] = []
    changed: list[EntryWrite] = []
    buried: set[str] = {entry_id for entry_id in reused if entry_id in known.buried}
    undated = 0
    for e in entries:
        if e.entry_id in known.buried:
            buried.add(e.entry_id)
            continue
        updated = stored_updated(e.updated, now)
        was = known.signatures.get(e.entry_id)
        if was is None:
            sort_date = order_date(e.published, updated, now)
            if e.published is None and updated is None:
                sort_date -= timedelta(seconds=undated)
                undated += 1
            new.append(EntryWrite(e, updated, sort_date))
        elif was != Signature(e.content_hash, to_second(e.published), to_second(updated)):
            changed.append(EntryWrite(e, updated))
    return EntryWrites(
        seen=now, new=tuple(new), changed=tuple(changed), still_buried=tuple(sorted(buried))
    )


def reuse_holds(reused: Iterable[str], known: KnownEntries) -> bool:
    """Whether the store holds every entry a partial parse reused, stored or buried, as
    the poll that remembered its item left it. Not so (an entry deleted by hand, a
    tombstone expired while its feed was not read), the document must be parsed whole."""
    return all(e in known.signatures or e in known.buried for e in reused)


def items_to_remember(feed: ParsedFeed, now: datetime) -> ItemMemory | None:
    """The items of `feed` its next parse may skip: all but those whose entry's `updated`
    still lies in the future, since once that moment comes the same bytes change the
    entry (`stored_updated`), and the next parse must read them to say so."""
    memory = feed.memory
    if memory is None:
        return None
    unsettled = {
        e.entry_id
        for e in feed.entries
        if e.updated is not None and stored_updated(e.updated, now) is None
    }
    if not unsettled:
        return memory
    return replace(memory, items=tuple(i for i in memory.items if i[1] not in unsettled))


def result_of(writes: EntryWrites) -> StoreResult:
    """How many entries a feed adds and changes."""
    return StoreResult(new=len(writes.new), updated=len(writes.changed))


def outcome_of(result: StoreResult | None) -> PollOutcome:
    """A fetched body's outcome: updated when it added or changed an entry; None: not parsed."""
    if result is None:
        return PollOutcome.NOT_MODIFIED
    return PollOutcome.UPDATED if result.new or result.updated else PollOutcome.UNCHANGED


def feed_meta(feed: ParsedFeed) -> FeedMeta:
    """What a parsed feed says about itself, to store with its source."""
    return FeedMeta(feed.title, feed.link, feed.feed_id, feed.lifetime)


def entry_story_keys(entry: StoredEntry) -> tuple[str | None, str | None]:
    """(link key, title key) of a stored entry: as the store holds them, else computed."""
    if entry.story_keys is not None:
        return entry.story_keys
    return story_keys(entry.link, entry.title)


def story_keys_of(entries: Iterable[StoredEntry]) -> StoryKeys:
    """The story keys (normalized link, title) to look up `entries`' earlier copies by."""
    links: set[str] = set()
    titles: set[str] = set()
    for entry in entries:
        link, title = entry_story_keys(entry)
        if link:
            links.add(link)
        if title:
            titles.add(title)
    return StoryKeys(frozenset(links), frozenset(titles))


def source_credits(
    sources: Sequence[SourceConfig], feeds: Mapping[str, FeedMeta]
) -> dict[str, SourceCredit]:
    """How each configured source is credited: the operator's title, else the feed's own,
    else the source's name."""
    credits = {}
    for source in sources:
        feed = feeds.get(source.name) or FeedMeta(None, None, None)
        credits[source.name] = SourceCredit(
            name=source.name,
            title=source.title or feed.title or source.name,
            feed_url=source.url,
            site_url=feed.site_url,
            feed_id=feed.feed_id,
        )
    return credits


def schedule_repairs(
    sources: Iterable[SourceConfig], schedules: Iterable[Schedule]
) -> list[Reschedule]:
    """Next polls to bring forward: a shortened interval applies now, not after the old,
    longer wait. A Retry-After and the feed's own lifetime still hold."""
    by_name = {s.name: s for s in schedules}
    repairs = []
    for source in sources:
        held = by_name.get(source.name)
        if held is None or held.last_polled is None or held.next_poll is None:
            continue
        hints = ServerHints(retry_after=held.retry_after, lifetime=held.lifetime or None)
        if is_overdue_schedule(
            held.next_poll, held.last_polled, source.interval, held.failures, hints
        ):
            when = next_poll(source.name, source.interval, held.last_polled, held.failures, hints)
            repairs.append(Reschedule(source.name, held.next_poll, when))
    return repairs

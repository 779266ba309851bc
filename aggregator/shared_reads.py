"""One publish's reads of the store, shared between its publications.

Every publication (the root, each channel) reads the newest entries of its own sources, so a
quiet channel is never starved by busy sources it does not carry. Most of the time the root's
read, of every source, already holds those very rows: a channel's read is then answered from
it, and costs no query. Only when that cannot be sure to give the same rows does a channel
ask the store itself. So the result is the same as a read of its own, always (see
`_Read.answer`), and ten channels do not cost ten queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.store import StoreAPI
from aggregator.store.records import StoryKeys
from aggregator.types import StoredEntry
from aggregator.update import entry_story_keys, story_keys_of

# Sources holding less than this share of the newest entries are read source by source
# (`recent_entries(by_source=True)`): walking every entry by date to find theirs would pass
# 1 / share rows for each of theirs (a tenth: ten times the rows; a quiet source: the whole
# window). With more, the walk by date stops soon enough.
BY_SOURCE_SHARE = 0.25


@dataclass(frozen=True)
class _Read:
    """The answer to one query: the first `limit` rows, in the query's own order, of the
    entries of `names` selected by `since` (and, for earlier copies, by story keys)."""

    names: frozenset[str]
    since: datetime
    limit: int
    rows: tuple[StoredEntry, ...]

    def share(self, names: frozenset[str]) -> float:
        """The share of these rows that `names` hold: how busy those sources are lately."""
        return sum(e.source in names for e in self.rows) / max(len(self.rows), 1)

    def answer(
        self, names: frozenset[str], since: datetime, limit: int
    ) -> list[StoredEntry] | None:
        """The same query for fewer sources, answered from these rows; None when they may
        not hold its answer.

        The rows are a prefix of the wider query's ordered result, so the rows of `names`
        among them are a prefix of the narrower query's result in the same order: its answer
        when there are at least `limit` of them, or when the wider query returned everything
        it selects (fewer rows than its limit).
        """
        if since != self.since or not names <= self.names:
            return None
        mine = [e for e in self.rows if e.source in names]
        if len(mine) >= limit or len(self.rows) < self.limit:
            return mine[:limit]
        return None


class SharedReads:
    """The store's `recent_entries` and `earlier_copies` for one publish: the first (widest)
    read of each kind is kept and narrower ones are answered from it when it holds their
    answer."""

    def __init__(self, store: StoreAPI) -> None:
        self.store = store
        self._recent: _Read | None = None
        self._earlier: _Read | None = None
        self._earlier_of: _Read | None = None  # the recent read whose story keys it looked up
        self._earlier_of_rows: set[tuple[str, str]] | None = None
        self.queries = 0  # how many reads went to the store (for tests and the bench)

    def recent_entries(
        self, names: Sequence[str], since: datetime, limit: int
    ) -> list[StoredEntry]:
        wanted = frozenset(names)
        kept = self._recent
        if kept is not None and (rows := kept.answer(wanted, since, limit)) is not None:
            return rows
        self.queries += 1
        if kept is not None and kept.share(wanted) < BY_SOURCE_SHARE:
            found = self.store.recent_entries(names, since, limit, by_source=True)
        else:
            found = self.store.recent_entries(names, since, limit)
        if kept is None or wanted >= kept.names:  # the widest read is the one worth keeping
            self._recent = _Read(wanted, since, limit, tuple(found))
        return found

    def earlier_copies(
        self, names: Sequence[str], entries: Sequence[StoredEntry], before: datetime, limit: int
    ) -> list[StoredEntry]:
        """Entries before `before` carrying the story keys of `entries` (`earlier_copies`).

        Answered from the kept read only when that read was complete (fewer rows than its
        limit) and looked up the keys of a recent read that `entries` all come from: its
        rows then hold every row the store would select, and filtering them by source and
        by these keys, in their order, gives the store's own answer.
        """
        wanted, keys = frozenset(names), story_keys_of(entries)
        kept = self._earlier
        if (
            kept is not None
            and kept.since == before
            and wanted <= kept.names
            and len(kept.rows) < kept.limit
            and self._from_kept(entries)
        ):
            return [e for e in kept.rows if e.source in wanted and _carries(e, keys)][:limit]
        self.queries += 1
        found = self.store.earlier_copies(names, keys, before, limit)
        if kept is None or wanted >= kept.names:
            self._earlier = _Read(wanted, before, limit, tuple(found))
            self._earlier_of = self._recent
            self._earlier_of_rows = None
        return found

    def _from_kept(self, entries: Sequence[StoredEntry]) -> bool:
        """Whether `entries` all come from the recent read whose keys the kept earlier read
        looked up."""
        if self._earlier_of is None:
            return False
        if self._earlier_of_rows is None:
            self._earlier_of_rows = {(e.source, e.entry_id) for e in self._earlier_of.rows}
        rows = self._earlier_of_rows
        return all((e.source, e.entry_id) in rows for e in entries)


def _carries(entry: StoredEntry, keys: StoryKeys) -> bool:
    """Whether the store's earlier-copies query would select `entry` for `keys`."""
    link, title = entry_story_keys(entry)
    return (link is not None and link in keys.links) or (title is not None and title in keys.titles)

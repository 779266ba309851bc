"""Which publications need no timeline this time: their input is that of their last publish.

A publication's timeline is a function of its settings, its sources' credits, its sources'
entries, the code, and of `now` only through the window's edge (`now - max_age`: entries
placed before it leave). Its archives (`archiving.py`) are a function of the same, and of
`now` only through the local day (in the publication's time zone): at midnight the day
that ended becomes an archive day. The store counts the writes that change each source's
entries, retention's deletions included (`StoreAPI.entry_versions`); the record of the last
publish in the publication's directory keeps a digest of all the rest (`Inputs`, today
included), where the edge was, and whether archive work was left for the next publish.
When the digest is the same, the edge has passed no entry of its sources since, no archive
work is left, the store still holds the snapshot the record names, and the main files here
are as written (`MAIN`), the timeline and the archives would come out the same: there is nothing to
read, build, render or write. So a publish with ten unchanged channels costs ten small
comparisons, not ten reads of the store.

Any doubt (no record, another daemon's newer snapshot, a file touched, an old edge) says
"not settled", and the publication is built as usual.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aggregator import __version__
from aggregator.archive import local_day
from aggregator.output import already_published, published_record, remember_published
from aggregator.publications import Publication
from aggregator.render import OUTPUT_FILES
from aggregator.store import StoreAPI
from aggregator.types import SourceCredit

# A record whose window edge is older than this is not trusted: asking which entries the
# edge passed since would scan that span of the store. Past it, the publication is built.
MAX_EDGE_GAP = timedelta(days=1)
# A settled publication's record takes the new edge once it has moved this far, so that
# the span asked about stays short without rewriting every record at every publish.
EDGE_STEP = timedelta(hours=1)
# The files a settled publication's check looks at: its main files, the most served. Its
# archives are thousands of files (stat'ing them all made a publish of eleven unchanged
# publications six times as long as one's); they are checked, and a file removed by hand
# put back, whenever the publication is built (`snapshot.sync_publication`).
MAIN = OUTPUT_FILES


@dataclass(frozen=True)
class Inputs:
    """What a publication's timeline and archives are made from, now, short of its sources'
    entries themselves: a digest of its settings, its sources' credits and entry versions,
    the code's version and the local day (which archive days there are); and the window's
    edge."""

    digest: str
    edge: datetime  # now - max_age: entries placed before it are not published
    sources: frozenset[str]

    @classmethod
    def of(
        cls,
        publication: Publication,
        credits: Mapping[str, SourceCredit],
        versions: Mapping[str, int],
        now: datetime,
    ) -> Inputs:
        names = publication.sources
        made_of = (
            __version__,
            publication,
            sorted((n, credits[n]) for n in names if n in credits),
            [versions.get(n, -1) for n in names],
            local_day(now, ZoneInfo(publication.site.timezone)),
        )
        return cls(
            hashlib.sha256(repr(made_of).encode()).hexdigest(),
            now - publication.selection.max_age,
            frozenset(names),
        )

    def record(self, items: int, unfinished: bool = False) -> dict[str, Any]:
        """What the publication's record keeps of these, beside its fingerprint and files;
        `unfinished`: archive work was left for the next publish (then it is not settled)."""
        return {
            "inputs": self.digest,
            "edge": self.edge.isoformat(),
            "items": items,
            "unfinished": unfinished,
        }


def settled(
    output_dir: Path,
    store: StoreAPI,
    inputs: Mapping[str, Inputs],
    stored: Mapping[str, str],
) -> dict[str, int]:
    """The publications (by directory) that need nothing this time, with the number of
    items their record says they published. `stored`: the store's fingerprints."""
    candidates: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for directory, wanted in inputs.items():
        record = published_record(output_dir / directory)
        if record is None or record.get("inputs") != wanted.digest or record.get("unfinished"):
            continue
        fingerprint = record.get("fingerprint")
        edge = _when(record.get("edge"))
        if (
            not isinstance(fingerprint, str)
            or stored.get(directory) != fingerprint
            or edge is None
            or not wanted.edge - MAX_EDGE_GAP <= edge <= wanted.edge
            or not already_published(output_dir / directory, fingerprint, MAIN, record)
        ):
            continue
        candidates[directory] = (edge, record)
    # Which sources the edge passed since each recorded edge: one query per distinct span
    # (publications built by one publish share theirs), so that a channel whose record is
    # older (it settled earlier) does not make the others, the root above all, look changed.
    passed: dict[tuple[datetime, datetime], set[str]] = {}
    quiet = {}
    for directory, (edge, record) in candidates.items():
        span = (edge, inputs[directory].edge)
        if span not in passed:
            passed[span] = store.sources_placed_between(*span) if edge < span[1] else set()
        if passed[span] & inputs[directory].sources:
            continue
        quiet[directory] = int(record.get("items", 0))
        if inputs[directory].edge - edge >= EDGE_STEP:
            _advance(output_dir / directory, record, inputs[directory])
    return quiet


def _advance(directory: Path, head: Mapping[str, Any], inputs: Inputs) -> None:
    """Move a settled publication's recorded edge to now's: nothing was placed in between.
    The whole record is written again (`head` lists its main files only)."""
    record = published_record(directory, whole=True)
    if record is None or record.get("fingerprint") != head.get("fingerprint"):
        return  # changed meanwhile: the next publish looks again
    files = record.get("files") or {}
    remember_published(
        directory,
        str(record["fingerprint"]),
        {name: str(entry[0]) for name, entry in files.items()},
        inputs.record(int(record.get("items", 0))),
    )


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None

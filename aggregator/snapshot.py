"""The published snapshot: what a publish stores of its files, and every daemon's copy of it.

Daemons sharing a store each serve their own output/, yet must serve the same bytes. So a
publish stores what it rendered (`store_change`), and every daemon copies the stored files
into its output/ (`sync_publication`, `follow_published`). The snapshot is kept file by
file, each file under its publication (the root "", a channel "<name>/"): archives are
thousands of files, of which a publish changes a few, so a publish stores only the files
whose digest changed and those removed, and a copy reads only the files its directory's
record (`output.published_here`) says differ, in batches. Each publication has a
fingerprint of its own, which changes whenever one of its files does: a daemon whose
directory holds it has nothing to copy, and a channel removed from the configuration is
removed from the snapshot and from every daemon's output/ with its files (its archives
included), and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.output import (
    already_published,
    publish_files,
    published_here,
    published_subdirectories,
    remember_published,
    remove_file,
    remove_published,
)
from aggregator.render import OUTPUT_FILES
from aggregator.store import StoreAPI
from aggregator.store.records import PublicationHead, PublishedChange, PublishedFile

log = logging.getLogger("aggregator")

# Files read from the store at a time when copying a snapshot: archives of a year may hold
# hundreds of megabytes, which a follower's first copy must not hold in memory at once.
_COPY_BATCH = 64
EMPTY = hashlib.sha256(b"").hexdigest()  # the fingerprint of a publication without files


@dataclass(frozen=True)
class Change:
    """What one publish rendered of one publication: its files rendered anew (by name under
    output/; those whose bytes are the stored ones are not stored again), the names it no
    longer has, and its state (`state`, saved when it differs from `before`)."""

    directory: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    state: str = ""
    before: str | None = None


@dataclass(frozen=True)
class Stored:
    """A publication as stored after a change: its fingerprint, every file's digest (None
    when nothing was rendered: not read), and the bytes of the files just stored, which
    need not be read back to be written into output/."""

    fingerprint: str
    digests: dict[str, str] | None = None
    written: dict[str, bytes] = field(default_factory=dict)
    removed: tuple[str, ...] = ()  # stored before, and deleted by this change


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_change(
    store: StoreAPI,
    changes: Sequence[Change],
    dropped: Iterable[str] = (),
    fingerprints: Mapping[str, str] | None = None,
) -> dict[str, Stored]:
    """Store what a publish changed, in one transaction: the files whose bytes differ from
    the stored ones, the ones gone, each publication's head, and the `dropped` publications
    (channels no longer configured) deleted. `fingerprints`: the stored ones, when the
    caller has just read them. Returns each changed publication as stored now."""
    if fingerprints is None:
        fingerprints = store.published_fingerprints()
    files: list[PublishedFile] = []
    removed: set[str] = set()
    heads: dict[str, PublicationHead] = {}
    result: dict[str, Stored] = {}
    for change in changes:
        before = fingerprints.get(change.directory)
        stored = _stored(store, change, before)
        files += [
            PublishedFile(name, digest(data), data, change.directory)
            for name, data in stored.written.items()
        ]
        removed |= set(stored.removed)
        if stored.fingerprint != before or change.state != change.before:
            heads[change.directory] = PublicationHead(stored.fingerprint, change.state)
        result[change.directory] = stored
    gone = frozenset(dropped)
    if files or removed or heads or gone:
        store.save_published(PublishedChange(tuple(files), frozenset(removed), heads, gone))
    return result


def _stored(store: StoreAPI, change: Change, before: str | None) -> Stored:
    """One publication as `change` leaves it (`before`: its stored fingerprint)."""
    if not change.files and not change.removed:
        return Stored(before or EMPTY)
    digests = store.published_digests(change.directory)
    written = {
        name: data
        for name, data in sorted(change.files.items())
        if digests.get(name) != digest(data)
    }
    gone = sorted(n for n in change.removed if n in digests)
    if not written and not gone:
        return Stored(before or EMPTY, digests)
    fingerprint = hashlib.sha256(
        repr((before, sorted((n, digest(d)) for n, d in written.items()), gone)).encode()
    ).hexdigest()
    digests.update({name: digest(data) for name, data in written.items()})
    for name in gone:
        del digests[name]
    return Stored(fingerprint, digests, written, tuple(gone))


def sync_publication(
    output_dir: Path,
    store: StoreAPI,
    directory: str,
    stored: Stored,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, bool]:
    """Make `output_dir/directory` hold the publication as `stored`: copy the files whose
    digest differs from what its record says it holds (the bytes at hand, or read from the
    store in batches), remove those no longer published, record it (with `inputs`, for
    `settled`). Returns, by path under `output_dir`, whether each file was rewritten or
    removed ({} when the directory held it already)."""
    here = output_dir / directory
    fingerprint = stored.fingerprint
    if already_published(here, fingerprint):
        if inputs is not None:  # the same files; the record takes the new inputs
            remember_published(here, fingerprint, published_here(here)[1], inputs)
        return {}
    digests = stored.digests
    if digests is None:
        digests = store.published_digests(directory)
    intact = {directory + name: d for name, d in published_here(here)[1].items()}
    wanted = [n for n, d in sorted(digests.items()) if intact.get(n) != d]
    written = dict.fromkeys(digests, False)
    at_hand = {n: stored.written[n] for n in wanted if n in stored.written}
    written |= publish_files(output_dir, at_hand)
    copied = set(at_hand)
    rest = [n for n in wanted if n not in at_hand]
    for start in range(0, len(rest), _COPY_BATCH):
        batch = store.load_published(rest[start : start + _COPY_BATCH])
        written |= publish_files(output_dir, {f.name: f.data for f in batch})
        copied |= {f.name for f in batch}
        if len(batch) < len(rest[start : start + _COPY_BATCH]) or any(
            f.digest != digests[f.name] for f in batch
        ):
            fingerprint = ""  # a file replaced or removed meanwhile: the next copy takes it
    for name in sorted(set(intact) - set(digests)):
        remove_file(output_dir, name)
        written[name] = True
    held = {
        n.removeprefix(directory): d
        for n, d in digests.items()
        if n in copied or intact.get(n) == d
    }
    remember_published(here, fingerprint, held, inputs)
    return written


def follow_published(output_dir: Path, store: StoreAPI) -> dict[str, bool]:
    """Copy the store's published snapshot into `output_dir` where it is not there already,
    and remove the channels it no longer holds.

    Returns which files were rewritten or removed, by path under `output_dir` ({} when the
    snapshot was already here, or there is none yet). Only the files whose digest differs
    from what this directory recorded are read from the store; each is replaced atomically
    and only when its bytes differ, so an unchanged file keeps its ETag.
    """
    fingerprints = store.published_fingerprints()
    if not fingerprints:
        return {}
    written: dict[str, bool] = {}
    for directory, fingerprint in sorted(fingerprints.items()):
        written |= sync_publication(output_dir, store, directory, Stored(fingerprint))
    written |= remove_unpublished(output_dir, set(fingerprints))
    return written


def remove_unpublished(output_dir: Path, current: set[str]) -> dict[str, bool]:
    """Remove the files of the channels published here before and no longer: only what a
    publish wrote (`output.remove_published`), never anything else under output/."""
    removed: dict[str, bool] = {}
    for directory in published_subdirectories(output_dir):
        if directory not in current:
            names = remove_published(output_dir / directory)
            removed |= dict.fromkeys((directory + name for name in names), True)
            log.info("removed the channel %s from %s", directory.rstrip("/"), output_dir)
    return removed


def copied_files(written: Mapping[str, bool]) -> str:
    """The files a publish or a copy rewrote, for a log line: the main ones by name, the
    others (archive days: thousands at a first copy) counted."""
    main = [n for n, w in written.items() if w and n.rpartition("/")[2] in OUTPUT_FILES]
    others = sum(1 for n, w in written.items() if w and n.rpartition("/")[2] not in OUTPUT_FILES)
    return ", ".join([*sorted(main), *([f"{others} other files"] if others else [])])

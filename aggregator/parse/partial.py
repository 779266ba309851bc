"""Parse only what changed: a document whose items mostly stand as the last parse read them
is handed to feedparser as its header, its new or edited items and its tail.

The last parse of a source left an `ItemMemory`: a digest of each item's bytes and the id
of the entry it gave. The next document is cut (`split`); an item whose digest is in the
memory gave that entry, and the store holds it as it is, so it is not read again: the
result names it in `ParsedFeed.reused` instead. Everything that could make an unchanged
item read differently is part of the memory's `frame` (the XML declaration, the start tags
enclosing the items, the media type and language of the response, the URL, the time zone,
the parser's versions) or its `feed` digest (the format, the feed's own link); if either
differs, the document is parsed whole.

The result must be the one a whole parse gives, so anything short of certainty parses the
whole document: a document the cut refuses (`split`), one whose bytes the preparation
changes (a DOCTYPE stripped, invalid UTF-8 repaired: decided on the whole document), an
encoding in which a part could decode differently from the whole, a partial parse that
is not clean (not well-formed, an item unreadable: the whole one may differ), a repeated
entry id anywhere in the document (which item keeps the plain id depends on all of them).
The memory is left out after such a parse, so the next one is whole too. Pure.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Mapping
from dataclasses import replace

import feedparser
from feedparser.encodings import convert_to_utf8
from feedparser.exceptions import CharacterEncodingOverride, CharacterEncodingUnknown

from aggregator import __version__
from aggregator.errors import ParseError
from aggregator.parse.feed import (
    Prepared,
    Reading,
    feed_fields,
    finish,
    parse_feed,
    prepare,
    read,
)
from aggregator.parse.fields import ENTRY_LIMIT
from aggregator.parse.jsonfeed import is_json_object
from aggregator.parse.split import Refused, Split, split_document
from aggregator.types import ItemMemory, ParsedFeed

# Raise when a change to the parse makes an unchanged item give a different entry: every
# memory is then stale, and the next parse of each source is whole.
# 2: placeholder dates are no dates; lone surrogates dropped, not items. 3: offsets such as
# "GMT+5:30" and "IST +0530" read as written (`fields.odd_offset`).
PARSE_REVISION = "3"
_REVISION = f"aggregator {__version__}/{PARSE_REVISION}, feedparser {feedparser.__version__}"
# Code points of entry ids a memory may hold (a feed of 10,000 long ids is parsed whole).
MEMORY_LIMIT = 1_000_000
# Encodings in which each byte range cut at a "<" decodes as it does within the whole.
_SELF_SYNCHRONIZING = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})
_WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # the UTF-32 ones begin alike


def parse_changed(
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    *,
    timezone: str = "UTC",
    memory: ItemMemory | None = None,
) -> ParsedFeed:
    """`parse_feed`'s result, less the entries of the items `memory` shows unchanged (their
    ids in `reused`); with the memory for the next parse (None when it must be whole).
    A JSON Feed is read whole (it is parsed in milliseconds, with no feedparser)."""
    if is_json_object(body):
        return parse_feed(body, headers, url, timezone=timezone)
    prepared = prepare(body, headers)
    cut = _cut(body, prepared)
    if isinstance(cut, Refused):
        return finish(read(prepared, url, timezone=timezone))
    frame = _digest(cut.frame, *_frame_context(prepared, url, timezone))
    digests = tuple(_digest(item) for item in cut.items)
    if memory is not None and memory.frame == frame:
        partial = _parse_partly(cut, digests, memory, prepared, url, timezone)
        if partial is not None:
            return partial
    reading = read(prepared, url, timezone=timezone)
    return replace(finish(reading), memory=_remembered(frame, digests, reading))


def refusal(body: bytes, headers: Mapping[str, str]) -> str | None:
    """Why `body` would be parsed whole whatever the memory; None if it can be cut."""
    cut = _cut(body, prepare(body, headers))
    return cut.reason if isinstance(cut, Refused) else None


def _cut(body: bytes, prepared: Prepared) -> Split | Refused:
    if prepared.body != body:
        return Refused("a DOCTYPE or ENTITY declaration, or invalid UTF-8 repaired")
    if not _decodes_in_parts(prepared):
        return Refused("an encoding in which a part may not decode as the whole does")
    return split_document(body, max_items=ENTRY_LIMIT)


def _decodes_in_parts(prepared: Prepared) -> bool:
    """Whether feedparser's first choice of encoding decodes the whole document (so it
    decodes every part, and no part is read in another) and is one where a part decodes
    as it does within the whole (UTF-8, ASCII, single-byte Latin)."""
    if prepared.body[:4].count(0) or prepared.body.startswith(_WIDE_BOMS):
        return False  # UTF-16 or UTF-32: "<" is not one byte
    result: dict[str, object] = {}
    try:
        convert_to_utf8(dict(prepared.response_headers), prepared.body, result)
        chosen = codecs.lookup(str(result.get("encoding"))).name
    except Exception:  # feedparser's own helper changed, or an unknown codec: no certainty
        return False
    problem = result.get("bozo_exception")
    if isinstance(problem, CharacterEncodingOverride | CharacterEncodingUnknown):
        return False
    return chosen in _SELF_SYNCHRONIZING


def _frame_context(prepared: Prepared, url: str, timezone: str) -> tuple[bytes, ...]:
    headers = prepared.response_headers
    return tuple(
        value.encode("utf-8", "surrogateescape")
        for value in (
            _REVISION,
            headers.get("content-type", ""),
            headers.get("content-language", ""),
            url,
            timezone,
        )
    )


def _parse_partly(
    cut: Split,
    digests: tuple[str, ...],
    memory: ItemMemory,
    prepared: Prepared,
    url: str,
    timezone: str,
) -> ParsedFeed | None:
    """The document read with only its new and changed items; None when that is not
    certain to match a whole parse."""
    known = dict(memory.items)
    fresh = [index for index, digest in enumerate(digests) if digest not in known]
    document = cut.document([cut.items[index] for index in fresh])
    try:
        reading = read(replace(prepared, body=document), url, timezone=timezone)
    except ParseError:
        return None
    if (
        reading.problems()
        or len(reading.items) != len(fresh)
        or _feed_digest(reading) != memory.feed
    ):
        return None
    ids = {
        index: entry.entry_id if entry else None
        for index, entry in zip(fresh, reading.items, strict=True)
    }
    items = tuple(
        (digest, ids[index] if index in ids else known[digest])
        for index, digest in enumerate(digests)
    )
    if not _distinct_and_bounded(items):
        return None
    reused = tuple(
        entry_id
        for index, (_, entry_id) in enumerate(items)
        if index not in ids and entry_id is not None
    )
    return ParsedFeed(
        **feed_fields(reading),
        entries=tuple(reading.entries),
        reused=reused,
        memory=ItemMemory(memory.frame, memory.feed, items),
        items_parsed=len(fresh),
        items_reused=len(digests) - len(fresh),
    )


def _remembered(frame: str, digests: tuple[str, ...], reading: Reading) -> ItemMemory | None:
    """The memory a whole parse leaves: none unless each item gave its own entry cleanly."""
    if reading.problems() or len(reading.items) != len(digests):
        return None
    items = tuple(
        (digest, entry.entry_id if entry else None)
        for digest, entry in zip(digests, reading.items, strict=True)
    )
    if not _distinct_and_bounded(items):
        return None
    return ItemMemory(frame, _feed_digest(reading), items)


def _distinct_and_bounded(items: tuple[tuple[str, str | None], ...]) -> bool:
    """No id given twice (the whole parse would make them distinct, depending on every item
    that shares it), no item twice, and the ids within `MEMORY_LIMIT`."""
    ids = [entry_id for _, entry_id in items if entry_id is not None]
    if len(set(ids)) != len(ids) or len({digest for digest, _ in items}) != len(items):
        return False
    return sum(map(len, ids)) <= MEMORY_LIMIT


def _feed_digest(reading: Reading) -> str:
    """What the parse says that every item's entry depends on: its format, its own link."""
    return _digest(reading.version.encode("utf-8"), (reading.site or "").encode("utf-8"))


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()

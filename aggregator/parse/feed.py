"""Bytes and response headers → `ParsedFeed`, via feedparser, normalized once.

What feedparser read becomes aware UTC dates, plain-text titles and absolute links here,
and entries by the rules every format shares (`fields`: identity, sanitized summaries, the
text teasers are cut from, caps); past this module no code sees a `FeedParserDict`. A JSON
document goes to `jsonfeed` instead. Pure:
feedparser is always given a `BytesIO`, never a URL or path, and feedparser's own
sanitizer and relative-URI pass are off because `text` does both.
"""

from __future__ import annotations

import functools
import html
import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import feedparser
from feedparser.datetimes.rfc822 import timezone_names as RFC822_ZONES
from feedparser.exceptions import CharacterEncodingOverride, NonXMLContentType

from aggregator.errors import ParseError
from aggregator.parse.fields import (
    CONTENT_LIMIT,
    DATE_LIMIT,
    HTML_TYPES,
    ItemFields,
    bounded_link,
    category_terms,
    date_from_text,
    identifier,
    kept_entries,
    make_entry,
    name_text,
    odd_offset,
    plain_title,
    plausible_date,
)
from aggregator.parse.jsonfeed import is_json_object, parse_json_feed
from aggregator.policy import feed_lifetime
from aggregator.text import absolute_url, cap_length
from aggregator.types import ParsedEntry, ParsedFeed
from aggregator.websub.discovery import feed_links

# A date string that carries its own zone: Z, +05:30 or -0800, or a zone name feedparser
# knows (GMT, EST, ...). Any other name ("IST") feedparser silently reads as UTC, so such a
# date is treated as zone-less and read in the source's time zone.
_NUMERIC_ZONE = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})\s*(?:\([^)]*\))?\s*$")
_NAMED_ZONE = re.compile(r"\b([A-Za-z]{1,5})\s*(?:\([^)]*\))?\s*$")
_NUMBER_LIMIT = 32  # <ttl> and sy:updateFrequency: a longer "number" is noise
# bozo reasons that say nothing about the document being broken.
_HARMLESS = (NonXMLContentType,)

# feedparser asks for libxml2's SAX driver before expat at every parse; it is not installed
# (nor wanted: expat is the parser the rest of this module is written and tested against),
# and the failed import searches sys.path each time: ~10% of a small feed's parse.
feedparser.api.PREFERRED_XML_PARSERS[:] = []

# feedparser's forgiving parser (which reads a document expat refused) decodes a character
# reference with `chr()`: one to a surrogate (`&#xD800;`) or past U+10FFFF raised out of the
# whole parse, and the source lost every item to one reference. It names no character XML
# allows, and is dropped, as those characters are (`text`).
_decode_reference = feedparser.mixin._FeedParserMixin.handle_charref


def _handle_charref(parser: Any, ref: str) -> None:
    try:
        _decode_reference(parser, ref)
    except (ValueError, OverflowError):  # UnicodeEncodeError (a surrogate) is a ValueError
        return


feedparser.mixin._FeedParserMixin.handle_charref = _handle_charref


def _number(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= _NUMBER_LIMIT else None


def _as_html(detail: Mapping[str, Any] | None, value: str) -> str:
    """A content construct as HTML: escape it when the feed says it is plain text."""
    kind = (detail or {}).get("type", "text/html")
    return value if kind in HTML_TYPES else html.escape(value, quote=False)


def _date(entry: dict[str, Any], key: str, zone: tzinfo) -> datetime | None:
    """The entry's own `published` or `updated`, in UTC; a zone-less date is read in `zone`.

    Reads the dict directly: feedparser's `entry["updated"]` silently falls back to `published`.
    A date that cannot be a real one (year 1 moved across a zone), or is a placeholder
    (`fields.plausible_date`: "0001-01-01", the Unix epoch), is no date.
    """
    raw = dict.get(entry, key)
    if isinstance(raw, str) and len(raw) > DATE_LIMIT:
        raw = None  # no pattern of ours reads it (they are not linear on such text)
    parsed: time.struct_time | None = dict.get(entry, f"{key}_parsed")
    try:
        if parsed is None or (isinstance(raw, str) and odd_offset(raw.strip()) is not None):
            # Or an offset feedparser misreads ("GMT+5:30", "IST +0530": `odd_offset`).
            # feedparser gives up on some zone-less RFC 822 dates ("Sat, 12 Jul 2025 10:00:00").
            return date_from_text(raw, zone) if isinstance(raw, str) else None
        value = datetime(*parsed[:6], tzinfo=UTC)
        if isinstance(raw, str) and raw.strip() and not _has_zone(raw.strip()):
            # feedparser read a zone-less date as UTC; it is really wall-clock time in `zone`.
            value = value.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        return None
    return plausible_date(value)


def _has_zone(raw: str) -> bool:
    if _NUMERIC_ZONE.search(raw):
        return True
    named = _NAMED_ZONE.search(raw)
    return named is not None and named.group(1).lower() in RFC822_ZONES


def _not_a_feed(result: Any, body: bytes, headers: Mapping[str, str]) -> str:
    if not body.strip():
        return "empty response body"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    start = body.lstrip()[:2048].lower()
    if content_type == "text/html" or start.startswith(b"<!doctype html") or b"<html" in start:
        return "got an HTML page, not a feed"
    if content_type.endswith("json") or start.startswith((b"{", b"[")):
        return "got JSON, not a feed"
    reason = result.get("bozo_exception")
    return f"not a feed: {reason}" if reason else "not an RSS or Atom feed"


@dataclass(frozen=True)
class Prepared:
    """A fetched document as feedparser is to read it: declarations stripped, invalid UTF-8
    repaired, a charset the bytes contradict dropped (each decided on the whole document)."""

    body: bytes
    headers: Mapping[str, str]  # as fetched, minus a contradicted charset
    # What feedparser is given: names lower-cased, no Content-Location.
    response_headers: Mapping[str, str]


def prepare(body: bytes, headers: Mapping[str, str]) -> Prepared:
    """`body` and `headers` made ready for feedparser (see `Prepared`)."""
    body = _strip_declarations(body)
    headers = _trustworthy_charset(body, headers)
    body = _repair_utf8(body, headers)
    # No Content-Location: feedparser would resolve a plain guid ("12345") against it, and an
    # item's id would then change whenever the feed moved. Relative links are resolved here.
    response_headers = {k.lower(): v for k, v in headers.items() if k.lower() != "content-location"}
    return Prepared(body, headers, response_headers)


@dataclass(frozen=True)
class Reading:
    """One run of feedparser over a document, each of its items normalized.

    `items` has one place per item feedparser found, in document order: its entry, or None
    for an item with nothing in it or one that could not be read (`skipped` counts those).
    Ids are as the items give them: `finish` makes repeated ones distinct.
    """

    result: Any  # feedparser's result, for the feed's own fields and its bozo flag
    items: tuple[ParsedEntry | None, ...]
    skipped: int
    site: str | None  # the feed's own link, absolute: the base of its items' relative links
    version: str
    url: str  # the document's own URL: the base of its hub and self links

    @property
    def entries(self) -> list[ParsedEntry]:
        return [e for e in self.items if e is not None]

    def problems(self) -> list[str]:
        """What a reader of the log should know about the document, one phrase each."""
        warnings = []
        problem = self.result.get("bozo_exception")
        if isinstance(problem, CharacterEncodingOverride):
            warnings.append(
                f"its declared encoding was wrong; read as {self.result.get('encoding')}"
            )
        elif self.result.get("bozo") and not isinstance(problem, _HARMLESS):
            warnings.append(f"feed is not well-formed, read what could be read: {problem}")
        if self.skipped:
            warnings.append(f"skipped {self.skipped} unreadable item(s)")
        return warnings


def read(prepared: Prepared, url: str, *, timezone: str = "UTC") -> Reading:
    """Run feedparser over a prepared document; raise `ParseError` when it is not a feed."""
    try:
        result = feedparser.parse(
            io.BytesIO(prepared.body),
            response_headers=dict(prepared.response_headers),
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as e:  # feedparser raising at all is its bug; one source must not stop a cycle
        raise ParseError(f"the feed parser failed: {type(e).__name__}: {e}") from e
    if not result.get("version") and not result.entries:
        raise ParseError(_not_a_feed(result, prepared.body, prepared.headers))
    version = str(result.get("version", ""))
    typed = version.startswith("atom")  # Atom declares its text types
    site = absolute_url(bounded_link(result.feed.get("link")), url)
    zone = ZoneInfo(timezone)
    items: list[ParsedEntry | None] = []
    skipped = 0
    for raw in result.entries:
        try:
            entry = _entry(raw, base=site or url, zone=zone, typed=typed)
        except (ValueError, OverflowError, TypeError):
            skipped += 1  # one absurd item (a date in year 1, a broken URL) must not lose the rest
            items.append(None)
            continue
        # An item with nothing in it (a cut-off document) is no item.
        items.append(entry if entry.title or entry.link or entry.summary_html else None)
    return Reading(result, tuple(items), skipped, site, version, url)


def feed_fields(reading: Reading) -> dict[str, Any]:
    """What the feed says about itself, as `ParsedFeed` keeps it (its title, link, id,
    lifetime, WebSub hub and self URL)."""
    feed = reading.result.feed
    typed = reading.version.startswith("atom")
    hub, self_url = feed_links(feed.get("links"), reading.url)
    return {
        "title": (
            plain_title(feed.get("title_detail"), feed["title"], typed=typed)
            if feed.get("title")
            else None
        ),
        "link": reading.site,
        "feed_id": (identifier(feed["id"]) or None) if feed.get("id") else None,
        "hub": hub,
        "self_url": self_url,
        "lifetime": feed_lifetime(
            _number(feed.get("ttl")),
            _number(feed.get("sy_updateperiod")),
            _number(feed.get("sy_updatefrequency")),
        ),
    }


def finish(reading: Reading) -> ParsedFeed:
    """A whole document's `ParsedFeed`: repeated ids made distinct, the newest kept."""
    entries, left_out = kept_entries(reading.entries)
    warnings = reading.problems()
    if left_out:
        warnings.append(left_out)
    return ParsedFeed(
        **feed_fields(reading),
        entries=tuple(entries),
        warning="; ".join(warnings) or None,
        items_parsed=len(reading.items),
    )


def parse_feed(
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    *,
    timezone: str = "UTC",
) -> ParsedFeed:
    """Parse one fetched document; raise `ParseError` when it is not a feed at all."""
    if is_json_object(body):
        return parse_json_feed(body, headers, url, timezone=timezone)
    return finish(read(prepare(body, headers), url, timezone=timezone))


def _strip_declarations(body: bytes) -> bytes:
    """The document without the DOCTYPE and ENTITY declarations of its prolog.

    A DOCTYPE can declare entities that feedparser's fallback parser expands quadratically (an
    entity bomb), and feedparser rebuilds a DOCTYPE from stray <!ENTITY>s, so every one of them
    goes. One linear scan: declarations can only stand before the root element, and each is
    read once, quotes and internal subset included (a regex here backtracked quadratically).
    """
    kept = bytearray()
    position = 0
    while True:
        start = body.find(b"<", position)
        if start < 0 or start + 1 >= len(body):
            break
        marker = body[start + 1 : start + 10].upper()
        if marker.startswith(b"?"):  # the XML declaration or a processing instruction
            end = body.find(b"?>", start)
        elif marker.startswith(b"!--"):
            end = body.find(b"-->", start)
            end = end + 1 if end >= 0 else end  # point at the closing ">"
        elif marker.startswith((b"!DOCTYPE", b"!ENTITY")):
            kept += body[position:start]
            position = _declaration_end(body, start)
            continue
        else:
            break  # the root element: no declaration can follow
        if end < 0:
            break
        kept += body[position : end + 2]
        position = end + 2
    return bytes(kept) + body[position:]


def _declaration_end(body: bytes, start: int) -> int:
    """Just past the ">" closing the declaration at `start` (quotes and [subset] skipped)."""
    quote = 0
    depth = 0
    for index in range(start + 2, len(body)):
        byte = body[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in (0x22, 0x27):  # " or '
            quote = byte
        elif byte == 0x5B:  # [
            depth += 1
        elif byte == 0x5D:  # ]
            depth = max(depth - 1, 0)
        elif byte == 0x3E and depth == 0:  # >
            return index + 1
    return len(body)  # never closed: nothing after it can be trusted


_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([\w.:-]+)", re.IGNORECASE)
_UTF8 = ("utf-8", "utf8")


def header_charset(content_type: str) -> str | None:
    """The charset parameter of a Content-Type header, if any."""
    match = _CHARSET.search(content_type)
    return match.group(1) if match else None


def _declared_utf8(body: bytes, headers: Mapping[str, str]) -> bool:
    charset = _CHARSET.search(headers.get("content-type", ""))
    if charset:
        return charset.group(1).lower() in _UTF8
    declared = _XML_ENCODING.search(body[:200])
    return declared is not None and declared.group(1).decode("ascii").lower() in _UTF8


def _trustworthy_charset(body: bytes, headers: Mapping[str, str]) -> Mapping[str, str]:
    """Headers to hand feedparser, minus a charset the bytes plainly contradict.

    A body that is valid UTF-8 with non-ASCII text, under a header naming a single-byte
    charset, is UTF-8 mislabelled; trusting the header would publish mojibake.
    """
    content_type = headers.get("content-type", "")
    charset = _CHARSET.search(content_type)
    if charset is None or charset.group(1).lower() in _UTF8 or body.isascii():
        return headers
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or not _is_utf8(body):
        return headers
    declared = _XML_ENCODING.search(body[:200])
    if declared is not None and declared.group(1).decode("ascii").lower() not in _UTF8:
        return headers
    return {**headers, "content-type": _CHARSET.sub("", content_type)}


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _repair_utf8(body: bytes, headers: Mapping[str, str]) -> bytes:
    """A UTF-8 document with a few invalid bytes: replace those bytes, keep the rest.

    Left alone, feedparser would re-read the whole document in some other detected encoding
    and garble every item instead of one.
    """
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or _is_utf8(body):
        return body
    if not _declared_utf8(body, headers):
        return body
    text = body.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 127) - bad
    if good < 10 * bad:
        return body  # mostly not UTF-8 at all (a wrong label): let detection read it
    # The invalid bytes go; a U+FFFD in a published title would say nothing to a reader.
    return text.replace("\ufffd", "").encode("utf-8")


def _entry(raw: Any, *, base: str, zone: tzinfo, typed: bool) -> ParsedEntry:
    # `dict.get`, not FeedParserDict's own: none of these keys is one of its aliases, and its
    # lookup costs several times more, for every key of every entry.
    get = functools.partial(dict.get, raw)
    link = absolute_url(bounded_link(get("link")), base)
    # A summary without summary_detail is feedparser's copy of the content, not a summary.
    summary = dict.get(raw, "summary")
    summary_detail = dict.get(raw, "summary_detail")
    summary_raw = (
        _as_html(summary_detail, cap_length(summary, CONTENT_LIMIT))
        if summary and summary_detail
        else ""
    )
    contents = get("content") or []
    content_raw = (
        _as_html(contents[0], cap_length(contents[0].get("value", ""), CONTENT_LIMIT))
        if contents
        else ""
    )
    # Relative URLs in content: the xml:base in effect (Atom), else the entry's link.
    used = summary_detail if summary_raw else (contents[0] if contents else None)
    detail = get("author_detail") or {}
    name = detail.get("name") or get("author")
    return make_entry(
        ItemFields(
            raw_id=get("id") or "",
            title=plain_title(get("title_detail"), raw["title"], typed=typed)
            if get("title")
            else "",
            link=link,
            summary_html=summary_raw,
            content_html=content_raw,
            content_base=(used or {}).get("base") or link or base,
            author=name_text(name) if name else None,
            categories=category_terms(
                tag.get("term") or tag.get("label") or "" for tag in get("tags") or []
            ),
            published=_date(raw, "published", zone),
            updated=_date(raw, "updated", zone),
        )
    )

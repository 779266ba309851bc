"""Bytes and response headers → `ParsedFeed`, via feedparser, normalized once.

Identity (guid/id → link → content hash), aware UTC dates, plain-text titles, sanitized
HTML summaries, the plain text that teasers are cut from when publishing, and absolute
links are all decided here; past this module no code sees a `FeedParserDict`. Pure:
feedparser is always given a `BytesIO`, never a URL or path, and feedparser's own
sanitizer and relative-URI pass are off because `text` does both.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import html
import io
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from html.entities import html5 as html5_entities
from typing import Any
from zoneinfo import ZoneInfo

import feedparser
from feedparser.datetimes.rfc822 import timezone_names as RFC822_ZONES
from feedparser.exceptions import CharacterEncodingOverride, NonXMLContentType

from aggregator.errors import ParseError
from aggregator.policy import feed_lifetime
from aggregator.text import (
    absolute_url,
    cap_length,
    clean_text,
    drop_trailing_more_link,
    html_to_text,
    make_teaser,
    sanitize_html,
    strip_bidi_controls,
    teaser_text,
)
from aggregator.types import ParsedEntry, ParsedFeed

# A DOCTYPE can declare entities that feedparser's fallback parser expands quadratically
# (an entity bomb). Feeds have no use for one, so it goes before parsing.
# A date string that carries its own zone: Z, +05:30 or -0800, or a zone name feedparser
# knows (GMT, EST, ...). Any other name ("IST") feedparser silently reads as UTC, so such a
# date is treated as zone-less and read in the source's time zone.
_NUMERIC_ZONE = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})\s*(?:\([^)]*\))?\s*$")
_NAMED_ZONE = re.compile(r"\b([A-Za-z]{1,5})\s*(?:\([^)]*\))?\s*$")
# Caps on one feed field, applied to the raw text before any pattern, sanitizer or parser of
# ours sees it (README, "Limits"): with them every text operation here costs at most a
# bounded amount per field, and a 10 MB title costs what a short one does. Generous for
# real feeds: a real headline is under 300 characters, a long article under 200 KB of HTML.
TITLE_LIMIT = 500  # published title (entry and feed), in grapheme clusters
RAW_TITLE_LIMIT = 8_000  # a title as the feed wrote it, markup and entities included
NAME_LIMIT = 200  # published author name or category term, in grapheme clusters
RAW_NAME_LIMIT = 2_000
CONTENT_LIMIT = 512 * 1024  # summary or content HTML, in characters
ID_LIMIT = 2_048  # a longer guid/id is kept as its start plus a digest of the whole
# Items kept from one document: the newest this many. Storing them runs on the event loop
# (SQLite), so 60,000 items blocked it for 2-3 s; a real feed carries tens, an archive
# feed (a podcast's whole back catalogue) a few thousand.
ENTRY_LIMIT = 10_000
CATEGORY_LIMIT = 50  # distinct categories kept per item, the first ones in the feed
CATEGORY_TEXT_LIMIT = 2_000  # code points of all of an item's categories together
RAW_CATEGORY_COUNT = 1_000  # categories read per item, duplicates included
LINK_LIMIT = 8_192  # a longer link is no link (cut, it would lead nowhere)
_DATE_LIMIT = 256  # a longer date string is no date; feedparser's reading of it stands
_NUMBER_LIMIT = 32  # <ttl> and sy:updateFrequency: a longer "number" is noise
# Markup in an RSS title, as opposed to text about markup ("the <b> tag"): a dangerous
# element, a line break or image, an element that is opened and then closed, a known
# element's start tag carrying an attribute (`<svg onload=...>`, `<video src=x ...>`), or
# any tag carrying an event handler (`<x onclick=...>`: browsers run it on unknown
# elements too). Found by one linear scan over tag starts: a tag's rest ends at the next
# "<" or ">", and the optional ">" never makes the engine back up (a pattern pairing
# `<b ...>` with its `</b>` restarted at every "<": minutes for a 120 KB title of "<b>"s).
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)([^<>]*)(>?)")
_EVENT_HANDLER = re.compile(r"[\s/]on[a-z]+\s*=", re.IGNORECASE)
# Dangerous even bare: they run or load something wherever a next ">" closes them. Other
# bare tags ("the <title> element", "<img> lazy loading") are text about markup; they are
# markup once they carry an attribute that runs or loads something (`_ACTIVE_ATTRIBUTE`).
_DANGEROUS = frozenset(
    {"script", "iframe", "object", "embed", "applet", "frame", "frameset", "plaintext", "xmp"}
)  # fmt: skip
# An attribute that runs script or loads a resource: an event handler, a URL or a document.
_ACTIVE_ATTRIBUTE = re.compile(
    r"[\s/](?:on[a-z]+|src|srcset|srcdoc|href|xlink:href|data|action|formaction|background"
    r"|poster|dynsrc|lowsrc|http-equiv|style)\s*=",
    re.IGNORECASE,
)
_PAIRED = frozenset(
    {"a", "b", "i", "u", "em", "strong", "span", "div", "p", "font", "sup", "sub", "small",
     "big", "mark", "code", "q", "s", "strike", "h1", "h2", "h3", "h4", "h5", "h6"}
)  # fmt: skip
# Element names of HTML (current and obsolete), SVG and MathML, lower-cased: a start tag
# of one of these with an active attribute is markup. nh3 knows only the ones it allows, and
# html5lib is no dependency, so the list is here.
_ELEMENT_NAMES = """a abbr acronym address applet area article aside audio b base basefont bdi bdo
    bgsound big blink blockquote body br button canvas caption center cite code col
    colgroup data datalist dd del details dfn dialog dir div dl dt em embed fieldset
    figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup
    hr html i iframe image img input ins isindex kbd keygen label legend li link listing
    main map mark marquee menu menuitem meta meter multicol nav nextid nobr noembed noframes
    noscript object ol optgroup option output p param picture plaintext portal pre progress
    q rb rp rt rtc ruby s samp script search section select slot small source spacer span
    strike strong style sub summary sup table tbody td template textarea tfoot th thead time
    title tr track tt u ul var video wbr xmp
    svg altglyph animate animatecolor animatemotion animatetransform circle clippath cursor
    defs desc discard ellipse feblend fecolormatrix fecomponenttransfer fecomposite
    feconvolvematrix fediffuselighting fedisplacementmap fedistantlight fedropshadow feflood
    fefunca fefuncb fefuncg fefuncr fegaussianblur feimage femerge femergenode femorphology
    feoffset fepointlight fespecularlighting fespotlight fetile feturbulence filter
    foreignobject g glyph hatch hatchpath line lineargradient marker mask metadata mpath
    path pattern polygon polyline radialgradient rect set stop switch symbol text textpath
    tref tspan use view
    math maction annotation merror mfrac mi mmultiscripts mn mo mover mpadded mphantom
    mprescripts mroot mrow ms mspace msqrt mstyle msub msubsup msup mtable mtd mtext mtr
    munder munderover semantics"""
_ELEMENTS = frozenset(_ELEMENT_NAMES.split())
# How many times a title may turn out to be escaped markup once more ("&amp;lt;b&amp;gt;").
_UNESCAPE_ROUNDS = 3
_ENTITY_REFERENCE = re.compile(r"&([A-Za-z][A-Za-z0-9]{0,31});")
# bozo reasons that say nothing about the document being broken.
_HARMLESS = (NonXMLContentType,)
_HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


def _plain(
    detail: Mapping[str, Any] | None,
    value: str,
    *,
    typed: bool = False,
    limit: int = TITLE_LIMIT,
    raw_limit: int = RAW_TITLE_LIMIT,
) -> str:
    """A title-like text construct as plain text, at most `limit` clusters, cut at a word.

    Atom says what a text is (`typed`): its "text" is literal, "<b>" included. RSS leaves it
    open, so there text carrying real HTML tags is read as HTML (a literal "<script>" in a
    published title is an attack on naive readers), and so is text that decodes to markup
    once more (double-escaped "&amp;lt;b&amp;gt;"): readers that treat RSS titles as HTML
    would show its tags. Text about markup ("the <b> tag") is no markup and stays. An
    entity reference nobody defined ("&lol9;") is dropped rather than shown; bidi controls
    go (they can make a title read backwards).
    """
    value = cap_length(value, raw_limit)
    kind = (detail or {}).get("type", "text/plain")
    if kind in _HTML_TYPES:
        value = html_to_text(value)
    for _ in range(0 if typed else _UNESCAPE_ROUNDS):
        if looks_like_markup(value):
            value = html_to_text(value)
        elif "&" in value and looks_like_markup(decoded := html.unescape(value)):
            value = html_to_text(decoded)  # escaped once more than the type says
        else:
            break
    value = _ENTITY_REFERENCE.sub(_known_entity_only, clean_text(value))
    return make_teaser(strip_bidi_controls(value), limit)


def looks_like_markup(value: str) -> bool:
    """Whether `value` holds real HTML rather than text about it (one linear scan)."""
    if "<" not in value:
        return False
    opened: set[str] = set()
    for tag in _TAG.finditer(value):
        closing, name, rest, complete = tag.groups()
        name = name.lower()
        if not closing and (name in _DANGEROUS or _EVENT_HANDLER.search(rest)):
            return True  # complete or not: a page's next ">" would close it
        if not complete:
            continue
        if not closing and name in _ELEMENTS and _ACTIVE_ATTRIBUTE.search(rest):
            return True  # `<video src=x>`; not `<input type="range">`, text about a tag
        if name == "br" and rest.strip() in ("", "/"):
            return True
        if name in _PAIRED:
            if not closing:
                opened.add(name)
            elif name in opened and not rest.strip():
                return True
    return False


def _name(value: str) -> str | None:
    """An author name or category term as plain text: capped, no bidi controls."""
    text = html_to_text(cap_length(value, RAW_NAME_LIMIT))
    return make_teaser(strip_bidi_controls(text), NAME_LIMIT) or None


def _identifier(value: str) -> str:
    """A guid/id, cleaned; one over `ID_LIMIT` keeps its start and a digest of the whole."""
    if len(value) > ID_LIMIT:
        value = f"{value[: ID_LIMIT - 33]}#{_hash(value)}"
    return clean_text(value).strip()


def _link(value: object) -> str | None:
    """A link as the feed wrote it; None when it is absurdly long (a cut link is broken)."""
    return value if isinstance(value, str) and len(value) <= LINK_LIMIT else None


def _number(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= _NUMBER_LIMIT else None


def _known_entity_only(match: re.Match[str]) -> str:
    """Keep "&nbsp;" written as text; drop a reference no DTD defines ("&lol9;")."""
    return match.group(0) if f"{match.group(1)};" in html5_entities else ""


def _as_html(detail: Mapping[str, Any] | None, value: str) -> str:
    """A content construct as HTML: escape it when the feed says it is plain text."""
    kind = (detail or {}).get("type", "text/html")
    return value if kind in _HTML_TYPES else html.escape(value, quote=False)


def _date(entry: dict[str, Any], key: str, zone: tzinfo) -> datetime | None:
    """The entry's own `published` or `updated`, in UTC; a zone-less date is read in `zone`.

    Reads the dict directly: feedparser's `entry["updated"]` silently falls back to `published`.
    A date that cannot be a real one (year 1 moved across a zone) is no date.
    """
    raw = dict.get(entry, key)
    if isinstance(raw, str) and len(raw) > _DATE_LIMIT:
        raw = None  # no pattern of ours reads it (they are not linear on such text)
    parsed: time.struct_time | None = dict.get(entry, f"{key}_parsed")
    try:
        if parsed is None:
            # feedparser gives up on some zone-less RFC 822 dates ("Sat, 12 Jul 2025 10:00:00").
            return _fallback_date(raw, zone) if isinstance(raw, str) else None
        value = datetime(*parsed[:6], tzinfo=UTC)
        if isinstance(raw, str) and raw.strip() and not _has_zone(raw.strip()):
            # feedparser read a zone-less date as UTC; it is really wall-clock time in `zone`.
            value = value.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, TypeError, OverflowError):
        return None
    return value


def _has_zone(raw: str) -> bool:
    if _NUMERIC_ZONE.search(raw):
        return True
    named = _NAMED_ZONE.search(raw)
    return named is not None and named.group(1).lower() in RFC822_ZONES


def _fallback_date(raw: str, zone: tzinfo) -> datetime | None:
    value: datetime | None = None
    try:
        value = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()
    return digest[:32]


def _not_a_feed(result: Any, body: bytes, headers: Mapping[str, str]) -> str:
    if not body.strip():
        return "empty response body"
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    start = body.lstrip()[:2048].lower()
    if content_type == "text/html" or start.startswith(b"<!doctype html") or b"<html" in start:
        return "got an HTML page, not a feed"
    if content_type.endswith("json") or start.startswith((b"{", b"[")):
        return "got JSON, not an RSS or Atom feed"
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
    site = absolute_url(_link(result.feed.get("link")), url)
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
    return Reading(result, tuple(items), skipped, site, version)


def feed_fields(reading: Reading) -> dict[str, Any]:
    """What the feed says about itself, as `ParsedFeed` keeps it (its title, link, id, lifetime)."""
    feed = reading.result.feed
    typed = reading.version.startswith("atom")
    return {
        "title": (
            _plain(feed.get("title_detail"), feed["title"], typed=typed)
            if feed.get("title")
            else None
        ),
        "link": reading.site,
        "feed_id": (_identifier(feed["id"]) or None) if feed.get("id") else None,
        "lifetime": feed_lifetime(
            _number(feed.get("ttl")),
            _number(feed.get("sy_updateperiod")),
            _number(feed.get("sy_updatefrequency")),
        ),
    }


def finish(reading: Reading) -> ParsedFeed:
    """A whole document's `ParsedFeed`: repeated ids made distinct, the newest kept."""
    entries = _distinct_ids(reading.entries)
    warnings = reading.problems()
    if len(entries) > ENTRY_LIMIT:
        warnings.append(f"kept the newest {ENTRY_LIMIT} of its {len(entries)} items")
        entries = _newest(entries, ENTRY_LIMIT)
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


def _newest(entries: list[ParsedEntry], limit: int) -> list[ParsedEntry]:
    """The `limit` newest entries by their own dates (undated ones count as oldest), in
    document order: whichever way round a huge feed is sorted, its latest items stay."""
    oldest = datetime.min.replace(tzinfo=UTC)
    ranked = sorted(
        range(len(entries)),
        key=lambda i: entries[i].published or entries[i].updated or oldest,
        reverse=True,
    )
    return [entries[i] for i in sorted(ranked[:limit])]


def _distinct_ids(entries: list[ParsedEntry]) -> list[ParsedEntry]:
    """A guid used by several items of one document: each becomes its own item.

    Every such item gets the guid plus a digest of its own link (else its title), so its id
    depends neither on where it stands in the document nor on later edits of its text.
    """
    counts = Counter(e.entry_id for e in entries)
    distinct: dict[str, ParsedEntry] = {}
    for entry in entries:
        unique = entry
        if counts[entry.entry_id] > 1:
            digest = _hash(entry.link or entry.title or entry.content_hash)[:12]
            unique = replace(entry, entry_id=f"{entry.entry_id}#{digest}")
        distinct.setdefault(unique.entry_id, unique)
    return list(distinct.values())


def _entry(raw: Any, *, base: str, zone: tzinfo, typed: bool) -> ParsedEntry:
    # `dict.get`, not FeedParserDict's own: none of these keys is one of its aliases, and its
    # lookup costs several times more, for every key of every entry.
    get = functools.partial(dict.get, raw)
    link = absolute_url(_link(get("link")), base)
    title = _plain(get("title_detail"), raw["title"], typed=typed) if get("title") else ""

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
    content_base = (used or {}).get("base") or link or base
    summary_html = sanitize_html(summary_raw or content_raw, content_base)
    text = html_to_text(summary_raw or content_raw)
    # The teasers' text, without a "Read more" link the source appended (the summary keeps it;
    # an entry's id, when made from its text, is made from all of it, as it always was).
    shown_raw = drop_trailing_more_link(summary_raw or content_raw)
    shown = text if len(shown_raw) == len(summary_raw or content_raw) else html_to_text(shown_raw)

    author = None
    detail = get("author_detail") or {}
    name = detail.get("name") or get("author")
    if name:
        author = _name(name)
    categories: dict[str, None] = {}  # in the feed's order, each once
    room = CATEGORY_TEXT_LIMIT
    for tag in (get("tags") or [])[:RAW_CATEGORY_COUNT]:
        term = _name(tag.get("term") or tag.get("label") or "")
        if term and term not in categories:
            room -= len(term)
            if room < 0 or len(categories) == CATEGORY_LIMIT:
                break
            categories[term] = None

    content_hash = _hash(title, link or "", summary_html, author or "", "\x1f".join(categories))
    raw_id = _identifier(get("id") or "")
    entry_id = raw_id or link or f"sha256:{_hash(title, html_to_text(content_raw) or text)}"
    return ParsedEntry(
        entry_id=entry_id,
        title=title,
        link=link,
        summary_html=summary_html,
        # Uncut: rendering cuts it to the `teaser_length` of the day (timeline.build_timeline).
        teaser=teaser_text(shown),
        author=author,
        categories=tuple(categories),
        published=_date(raw, "published", zone),
        updated=_date(raw, "updated", zone),
        content_hash=content_hash,
    )

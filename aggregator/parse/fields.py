"""The rules every source format shares for one item's fields: caps, titles, names, ids,
links, dates, the entry itself and which of a document's entries are kept.

RSS and Atom (`feed`, via feedparser) and JSON Feed (`jsonfeed`) both build their entries
here, so an item reads the same whichever format carried it: the same sanitizing, teaser
text, identity (id → link → content hash) and caps. Pure.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from html.entities import html5 as html5_entities
from itertools import islice
from typing import Any

from aggregator.text import (
    cap_length,
    clean_text,
    drop_trailing_more_link,
    html_to_text,
    make_teaser,
    sanitize_html,
    strip_bidi_controls,
    teaser_text,
)
from aggregator.types import ParsedEntry

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
DATE_LIMIT = 256  # a longer date string is no date
# The earliest date an item may carry. Before it, a date is a placeholder, not when the item
# was published (.NET's `DateTime.MinValue` "0001-01-01", SQL Server's "1900-01-01", Unix
# time 0), and the item is undated. It also keeps every stored date far from `datetime`'s
# own first day, where moving a date to a time zone west of UTC (a day page, an archive
# day) overflows.
EARLIEST_DATE = datetime(1970, 1, 2, tzinfo=UTC)
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
HTML_TYPES = ("text/html", "application/xhtml+xml", "html", "xhtml")


def plain_title(
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
    if kind in HTML_TYPES:
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


def name_text(value: str) -> str | None:
    """An author name or category term as plain text: capped, no bidi controls."""
    text = html_to_text(cap_length(value, RAW_NAME_LIMIT))
    return make_teaser(strip_bidi_controls(text), NAME_LIMIT) or None


def identifier(value: str) -> str:
    """A guid/id, cleaned; one over `ID_LIMIT` keeps its start and a digest of the whole."""
    if len(value) > ID_LIMIT:
        value = f"{value[: ID_LIMIT - 33]}#{digest(value)}"
    return clean_text(value).strip()


def bounded_link(value: object) -> str | None:
    """A link as the feed wrote it; None when it is absurdly long (a cut link is broken)."""
    return value if isinstance(value, str) and len(value) <= LINK_LIMIT else None


def _known_entity_only(match: re.Match[str]) -> str:
    """Keep "&nbsp;" written as text; drop a reference no DTD defines ("&lol9;")."""
    return match.group(0) if f"{match.group(1)};" in html5_entities else ""


def digest(*parts: str) -> str:
    """A short SHA-256 of `parts`: ids made from text, content hashes."""
    # surrogatepass: a JSON string may hold a lone surrogate ("\ud800"), which UTF-8 cannot.
    text = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


# An offset at a date's end written as feeds write India's: one hour digit (`+5:30`,
# `GMT+5:30`), or after a zone's name (`UTC+05:30`, `IST +0530`). feedparser reads
# "GMT+5:30" 58.5 hours early and drops the others (UTC, or the source's zone, instead).
_ODD_OFFSET = re.compile(
    r"(?:\b([A-Za-z]{2,5})[ \t]{0,3})?([+-])(\d{1,2}):?(\d{2})[ \t]{0,3}(?:\([^()]{0,40}\))?\s*\Z"
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}")


def odd_offset(raw: str) -> str | None:
    """`raw` (at most `DATE_LIMIT` long) with such an offset written plainly (`+0530`,
    or `+05:30` in an ISO 8601 date); None when it has none."""
    match = _ODD_OFFSET.search(raw)
    if match is None:
        return None
    name, sign, hours, minutes = match.groups()
    if (name is None and len(hours) == 2) or int(hours) > 23 or int(minutes) > 59:
        return None
    head = raw[: match.start()].rstrip()
    if _ISO_DATE.match(head.lstrip()):
        return f"{head}{sign}{int(hours):02}:{minutes}"
    return f"{head} {sign}{int(hours):02}{minutes}"


def date_from_text(raw: str, zone: tzinfo) -> datetime | None:
    """An RFC 822 or ISO 8601/RFC 3339 date in UTC; one without a zone is read in `zone`;
    an offset written as `odd_offset` knows is read as the offset it is.

    None for anything else, a string over `DATE_LIMIT` included (no pattern reads it), a
    date that cannot be a real one once moved to UTC (year 1 east of Greenwich), and a
    placeholder (`plausible_date`).
    """
    if len(raw) > DATE_LIMIT:
        return None
    raw = raw.strip()
    raw = odd_offset(raw) or raw
    value: datetime | None = None
    try:
        value = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            # RFC 3339 allows "t" and "z"; fromisoformat knows only the capitals.
            value = datetime.fromisoformat(raw.upper())
        except ValueError:
            return None
    try:
        value = (value if value.tzinfo else value.replace(tzinfo=zone)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return plausible_date(value)


def plausible_date(value: datetime) -> datetime | None:
    """`value` (in UTC), or None when it is before `EARLIEST_DATE`: a placeholder."""
    return value if value >= EARLIEST_DATE else None


def category_terms(terms: Iterable[str]) -> tuple[str, ...]:
    """An item's categories as published: each once, in the feed's order, capped in number
    and in text (README, "Limits"); only the first `RAW_CATEGORY_COUNT` are read."""
    categories: dict[str, None] = {}
    room = CATEGORY_TEXT_LIMIT
    for raw in islice(terms, RAW_CATEGORY_COUNT):
        term = name_text(raw)
        if term and term not in categories:
            room -= len(term)
            if room < 0 or len(categories) == CATEGORY_LIMIT:
                break
            categories[term] = None
    return tuple(categories)


@dataclass(frozen=True)
class ItemFields:
    """One item as its format gave it, before the shared rules make an entry of it.

    `title` and `author` are already plain (`plain_title`, `name_text`), `link` absolute;
    `summary_html` and `content_html` are the raw HTML as capped (`CONTENT_LIMIT`), "" when
    absent; `content_base` is what relative links in them resolve against.
    """

    raw_id: str
    title: str
    link: str | None
    summary_html: str
    content_html: str
    content_base: str | None
    author: str | None
    categories: tuple[str, ...]
    published: datetime | None
    updated: datetime | None


def make_entry(item: ItemFields) -> ParsedEntry:
    """The entry: sanitized summary (the summary, else the content), the text teasers are
    cut from, its content hash, and its id (its own id, else its link, else a hash of its
    title and text)."""
    shown_html = item.summary_html or item.content_html
    summary_html = sanitize_html(shown_html, item.content_base)
    text = html_to_text(shown_html)
    # The teasers' text, without a "Read more" link the source appended (the summary keeps it;
    # an entry's id, when made from its text, is made from all of it, as it always was).
    shown_raw = drop_trailing_more_link(shown_html)
    shown = text if len(shown_raw) == len(shown_html) else html_to_text(shown_raw)
    content_hash = digest(
        item.title, item.link or "", summary_html, item.author or "", "\x1f".join(item.categories)
    )
    entry_id = (
        identifier(item.raw_id)
        or item.link
        or f"sha256:{digest(item.title, html_to_text(item.content_html) or text)}"
    )
    return ParsedEntry(
        entry_id=entry_id,
        title=item.title,
        link=item.link,
        summary_html=summary_html,
        # Uncut: rendering cuts it to the `teaser_length` of the day (timeline.build_timeline).
        teaser=teaser_text(shown),
        author=item.author,
        categories=item.categories,
        published=item.published,
        updated=item.updated,
        content_hash=content_hash,
    )


def kept_entries(entries: list[ParsedEntry]) -> tuple[list[ParsedEntry], str | None]:
    """A document's entries with distinct ids, at most `ENTRY_LIMIT` of them, and what was
    left out (a warning) if anything."""
    entries = _distinct_ids(entries)
    if len(entries) <= ENTRY_LIMIT:
        return entries, None
    warning = f"kept the newest {ENTRY_LIMIT} of its {len(entries)} items"
    return _newest(entries, ENTRY_LIMIT), warning


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
            suffix = digest(entry.link or entry.title or entry.content_hash)[:12]
            unique = replace(entry, entry_id=f"{entry.entry_id}#{suffix}")
        distinct.setdefault(unique.entry_id, unique)
    return list(distinct.values())

"""JSON Feed 1.0 and 1.1 documents (https://jsonfeed.org/version/1.1) → `ParsedFeed`.

feedparser reads no JSON, so the standard `json` module reads the document and every item
goes through the field rules RSS and Atom go through (`fields`): an item reads the same
whichever format carried it. Only the document's shape is strict: bytes that are not JSON
(or not UTF-8), no JSON Feed `version`, no `items` array are a `ParseError` of one line. A
field of the wrong type or an unreadable date is left out, named in the feed's warning
(`items[3].date_published is not a date: 'yesterday'`), and the rest is read. Pure, and
bounded: by the body cap of the fetch, the caps of `fields`, and the parse's time budget.
"""

from __future__ import annotations

import codecs
import html
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from aggregator.errors import ParseError
from aggregator.parse.fields import (
    CONTENT_LIMIT,
    ItemFields,
    bounded_link,
    category_terms,
    date_from_text,
    kept_entries,
    make_entry,
    name_text,
    plain_title,
)
from aggregator.text import absolute_url, cap_length
from aggregator.types import ParsedEntry, ParsedFeed
from aggregator.websub.discovery import json_feed_links

_VERSION_URLS = ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
_KNOWN_VERSIONS = frozenset({"1", "1.1"})
_MEDIA_TYPE = "application/feed+json"
# The byte order marks JSON may start with (RFC 8259 asks for UTF-8; a reader may ignore
# a BOM), the longer UTF-32 ones before the UTF-16 ones they begin with.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF = 1024  # bytes looked at to tell a JSON object from XML
_PROBLEMS_SHOWN = 3  # named in the warning; the rest are counted
_SHOWN_VALUE = 40  # characters of an unreadable value quoted in a warning
# An integer of more digits is no id, count or size any feed needs (and Python refuses to
# read one over 4,300 digits at all).
_INTEGER_DIGITS = 1_000
# An item without any of these has nothing to publish: it is no item.
_SHOWN_KEYS = ("title", "url", "external_url", "content_html", "content_text", "summary")
_AUTHORS_READ = 100  # entries of an `authors` array looked at for a name


class _Refused(ValueError):
    """A JSON value this reader refuses (NaN, a 5,000-digit number): the message says which."""


def is_json_object(body: bytes) -> bool:
    """Whether `body` starts like a JSON object: "{" after a byte order mark and whitespace.

    The cheap test that sends a document here rather than to feedparser (XML never starts
    with "{"), whatever its Content-Type says.
    """
    head = body[:_SNIFF]
    for bom, _ in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :].replace(b"\x00", b"")  # UTF-16/32: the ASCII bytes
            break
    return head.lstrip(b" \t\r\n").startswith(b"{")


def parse_json_feed(
    body: bytes, headers: Mapping[str, str], url: str, *, timezone: str = "UTC"
) -> ParsedFeed:
    """Read a JSON Feed; `ParseError` (one line) when the body is none at all."""
    declared = _declared_json_feed(headers)
    text, repaired = _decoded(body)
    document = _loaded(text)
    if not isinstance(document, dict):
        raise ParseError(f"got JSON, not a feed: the document is {_kind(document)}")
    version_note = _version_note(document, declared)
    items = document.get("items")
    if not isinstance(items, list):
        what = 'no "items" array' if items is None else f'"items" is {_kind(items)}, not an array'
        raise ParseError(f"malformed JSON Feed: {what}")

    problems = _Problems()
    site = absolute_url(bounded_link(problems.string(document, "home_page_url", "")), url)
    title = problems.string(document, "title", "")
    context = _Context(
        base=site or url,
        zone=ZoneInfo(timezone),
        author=problems.author(document, ""),
        problems=problems,
    )
    entries, skipped = _entries(items, context)
    entries, left_out = kept_entries(entries)
    warnings = [repaired, version_note]
    if problems.count:
        warnings.append(f"malformed JSON Feed, read what could be read: {problems.summary()}")
    if skipped:
        warnings.append(f"skipped {skipped} unreadable item(s)")
    warnings.append(left_out)
    hub, self_url = json_feed_links(document, url)
    return ParsedFeed(
        title=plain_title(None, title) if title else None,
        link=site,
        feed_id=None,  # JSON Feed has no feed id (RSS neither); `feed_url` is its self link
        entries=tuple(entries),
        warning="; ".join(w for w in warnings if w) or None,
        hub=hub,
        self_url=self_url,
    )


def _declared_json_feed(headers: Mapping[str, str]) -> bool:
    """Whether the response's Content-Type is JSON Feed's own media type."""
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return content_type.split(";")[0].strip().lower() == _MEDIA_TYPE


def _decoded(body: bytes) -> tuple[str, str | None]:
    """The document as text, and a warning when invalid bytes were dropped.

    JSON Feed is UTF-8 (RFC 8259 too); a byte order mark is read and dropped. A UTF-8
    document with a few invalid bytes keeps the rest, as an XML one does; one that is not
    UTF-8 at all is refused rather than guessed at.
    """
    for bom, codec in _BOMS:
        if body.startswith(bom):
            try:
                return body[len(bom) :].decode(codec), None
            except UnicodeDecodeError as e:
                offset = e.start + len(bom)
                raise ParseError(
                    f"malformed JSON Feed: not valid {codec} at byte {offset}"
                ) from None
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as e:
        first = e
    text = body.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad  # valid non-ASCII characters
    if good < 10 * bad:
        byte = body[first.start]
        raise ParseError(
            f"malformed JSON Feed: not UTF-8 (byte 0x{byte:02X} at offset {first.start})"
        )
    warning = f"not valid UTF-8: dropped {bad} invalid byte(s), read the rest"
    return text.replace("\ufffd", ""), warning


def _loaded(text: str) -> Any:
    """The parsed JSON; one line naming where and why when it is not JSON."""
    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_int=_integer)
        return _without_surrogates(document) if _SURROGATE_ESCAPE.search(text) else document
    except _Refused as e:
        raise ParseError(f"malformed JSON Feed: {e}") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ParseError(f"malformed JSON Feed: not valid JSON at {where}: {e.msg}") from None
    except RecursionError:  # json's reader recurses once per level of nesting
        raise ParseError("malformed JSON Feed: nested too deeply to read") from None


# A "\ud800" escape: JSON may write half a character, which no output can carry.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(document: Any) -> Any:
    """`document` with every lone surrogate dropped from its string values, as characters
    XML forbids are (`text`): an item holding one was skipped whole, as unreadable."""
    stack = [document] if isinstance(document, dict | list) else []  # a bare value: no feed
    while stack:
        node = stack.pop()
        places = node.items() if isinstance(node, dict) else enumerate(node)
        for place, value in list(places):
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    node[place] = _SURROGATE.sub("", value)
            elif isinstance(value, dict | list):
                stack.append(value)
    return document


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON value")


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > _INTEGER_DIGITS:
        raise _Refused(f"a number {len(digits):,} digits long")
    return int(digits)


def _version_note(document: dict[str, Any], declared: bool) -> str | None:
    """None for JSON Feed 1 or 1.1, a warning for a later version (read as 1.1); a
    `ParseError` for JSON without a JSON Feed version (an API's answer, an error page)."""
    version = document.get("version")
    if isinstance(version, str) and version.startswith(_VERSION_URLS):
        number = version.rstrip("/").rpartition("/")[2]
        return (
            None if number in _KNOWN_VERSIONS else f"JSON Feed version {_shown(number)} read as 1.1"
        )
    what = (
        'no "version"'
        if version is None
        else f'"version" is {_shown(version)}, not a jsonfeed.org version URL'
    )
    raise ParseError(
        f"malformed JSON Feed: {what}" if declared else f"got JSON, not a feed: {what}"
    )


@dataclass(frozen=True)
class _Context:
    """What every item of one document is read with."""

    base: str  # relative links resolve against the home page, else the feed's own URL
    zone: tzinfo  # the source's time zone, for dates without one
    author: str | None  # the feed's author: an item without one of its own is by them
    problems: _Problems


def _entries(items: list[Any], context: _Context) -> tuple[list[ParsedEntry], int]:
    """The items as entries, in document order, and how many could not be read at all."""
    entries = []
    skipped = 0
    for index, raw in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(raw, dict):
            context.problems.add(f"{where} is {_kind(raw)}, not an object")
            continue
        if all(raw.get(key) is None for key in _SHOWN_KEYS):
            continue  # nothing to show (a document of a million "{}"s costs no entries)
        try:
            entry = _entry(raw, where, context)
        except (ValueError, OverflowError, TypeError):
            skipped += 1  # one absurd item (a broken URL) must not lose the rest
            continue
        if entry.title or entry.link or entry.summary_html:
            entries.append(entry)  # an item with nothing in it is no item
    return entries, skipped


def _entry(raw: dict[str, Any], where: str, context: _Context) -> ParsedEntry:
    problems = context.problems
    link = absolute_url(
        bounded_link(problems.string(raw, "url", where))
        or bounded_link(problems.string(raw, "external_url", where)),
        context.base,
    )
    title = problems.string(raw, "title", where)
    summary = problems.string(raw, "summary", where)  # plain text, as content_text
    content_html = problems.string(raw, "content_html", where)
    content_text = problems.string(raw, "content_text", where)
    return make_entry(
        ItemFields(
            raw_id=problems.identifier(raw, where),
            title=plain_title(None, title) if title else "",
            link=link,
            summary_html=_escaped(summary),
            content_html=(
                cap_length(content_html, CONTENT_LIMIT) if content_html else _escaped(content_text)
            ),
            content_base=link or context.base,
            author=problems.author(raw, where) or context.author,
            categories=category_terms(problems.tags(raw, where)),
            published=problems.date(raw, "date_published", where, context.zone),
            updated=problems.date(raw, "date_modified", where, context.zone),
        )
    )


def _escaped(text: str | None) -> str:
    """Plain text as HTML (its line breaks read as spaces, as Atom's type="text" does)."""
    return html.escape(cap_length(text, CONTENT_LIMIT), quote=False) if text else ""


class _Problems:
    """Reads fields by the types JSON Feed gives them, and remembers what was wrong.

    A field of another type counts as absent, and is named: the first few problems of a
    document are shown, the others counted.
    """

    def __init__(self) -> None:
        self.count = 0
        self._shown: list[str] = []

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self._shown) < _PROBLEMS_SHOWN:
            self._shown.append(problem)

    def summary(self) -> str:
        more = self.count - len(self._shown)
        return "; ".join(self._shown) + (f" (and {more} more)" if more else "")

    def string(self, obj: dict[str, Any], key: str, where: str) -> str | None:
        """`obj[key]` when it is a string; None when it is absent, null or of another type."""
        value = obj.get(key)
        if value is None or isinstance(value, str):
            return value
        self.add(f"{_path(where, key)} is {_kind(value)}, not a string")
        return None

    def identifier(self, item: dict[str, Any], where: str) -> str:
        """The item's `id` as text: JSON Feed 1.0 readers take a number too ("" if none)."""
        value = item.get("id")
        if value is None or isinstance(value, str):
            return value or ""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return str(int(value)) if value.is_integer() else repr(value)
        self.add(f"{where}.id is {_kind(value)}, not a string")
        return ""

    def date(self, item: dict[str, Any], key: str, where: str, zone: tzinfo) -> datetime | None:
        """An RFC 3339 date (RFC 822 read too), in UTC; zone-less ones are in `zone`."""
        raw = self.string(item, key, where)
        if raw is None:
            return None
        value = date_from_text(raw, zone)
        if value is None:
            self.add(f"{where}.{key} is not a date: {_shown(raw)}")
        return value

    def author(self, obj: dict[str, Any], where: str) -> str | None:
        """The first named author: `authors` (1.1), else `author` (1.0)."""
        if obj.get("authors") is not None:
            authors = obj["authors"]
            if not isinstance(authors, list):
                self.add(f"{_path(where, 'authors')} is {_kind(authors)}, not an array")
                return None
            for index, person in enumerate(authors[:_AUTHORS_READ]):
                name = self._person(person, f"{_path(where, 'authors')}[{index}]")
                if name:
                    return name
            return None
        if obj.get("author") is not None:
            return self._person(obj["author"], _path(where, "author"))
        return None

    def _person(self, person: Any, where: str) -> str | None:
        if not isinstance(person, dict):
            self.add(f"{where} is {_kind(person)}, not an object")
            return None
        name = self.string(person, "name", where)
        return name_text(name) if name else None

    def tags(self, item: dict[str, Any], where: str) -> Iterator[str]:
        """The item's tags that are strings (others are no tag), in order."""
        tags = item.get("tags")
        if tags is None:
            return iter(())
        if not isinstance(tags, list):
            self.add(f"{where}.tags is {_kind(tags)}, not an array")
            return iter(())
        return (tag for tag in tags if isinstance(tag, str))


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: object) -> str:
    """What a JSON value is, for a message: "a number", "an array", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


def _shown(value: object) -> str:
    """A value for a one-line message: a string quoted and cut short, else its kind."""
    if not isinstance(value, str):
        return _kind(value)
    return repr(value) if len(value) <= _SHOWN_VALUE else f"{value[:_SHOWN_VALUE]!r}…"

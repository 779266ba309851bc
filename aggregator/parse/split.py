"""An RSS 2.0 or Atom document cut, at the byte level, into its header, its items and its
tail, or refused: the cut must be certain, or the document is parsed whole.

`parse.partial` hands feedparser the header, the items that changed and the tail, so the
cut must leave every item read exactly as in the whole document. It is certain only for
a plain shape: an `<rss>` root with its items directly in `<channel>`, or a `<feed>` root
with its entries directly in it; items one after the other with only whitespace between
them; namespaces declared on the root alone before the items (feedparser keeps them for the
rest of the document; an item may set the XHTML default namespace on its content, which it
keeps no state for); no DOCTYPE, no processing instruction before the last item, no
`xml:base` on an item, no CDATA section or comment holding something that looks like an
item's tag, no item-like element after the items. Anything else is refused with the
reason (RSS 1.0 too: its items stand beside the channel that lists them). The tail is
parsed with every part and follows every item, so it is only searched for another item;
an ill-formed one makes the parse unclean, and so whole. One linear pass: between tags
nothing is read, inside an item only the few markers that could end it early.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = rb"[A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?"
# A start tag with its attributes; a quoted value holds no "<" in well-formed XML.
_START_TAG = re.compile(
    rb"<(" + _NAME + rb")((?:\s+" + _NAME + rb"\s*=\s*(?:\"[^\"<]*\"|'[^'<]*'))*)\s*(/?)>"
)
_END_TAG = re.compile(rb"</(" + _NAME + rb")\s*>")
_ATTRIBUTE = re.compile(rb"(" + _NAME + rb")\s*=\s*(?:\"[^\"<]*\"|'[^'<]*')")
_NAMESPACE_ATTRIBUTE = re.compile(rb"xmlns(?::|$)")
_XHTML_DEFAULT = re.compile(rb"""\s*=\s*["']http://www\.w3\.org/1999/xhtml["']""")
# Names that give the document its shape, in any case and with any prefix: feedparser
# lower-cases names, so `<Item>` is an item to it too.
_STRUCTURE = rb"(?:[\w.\-]+:)?(?:item|entry|channel|rss|feed|rdf)"
_STRUCTURAL = re.compile(rb"<\s*/?\s*" + _STRUCTURE + rb"(?![\w.\-])", re.IGNORECASE)
_STRUCTURAL_START = re.compile(rb"<" + _STRUCTURE + rb"(?![\w.\-:])", re.IGNORECASE)
# Inside an item: a tag that could end it early, or make the cut uncertain. It starts with
# a literal "<", so the search skips from one "<" to the next in C.
_ITEM_MARKER = re.compile(rb"<(?:!--|!\[CDATA\[|[?!]|/?(?i:" + _STRUCTURE + rb")(?![\w.\-:]))")
# Attributes that would make an item read differently without the items before it (a
# namespace) or that the cut refuses on items (xml:base). Looked for only in an item that
# holds "xml" at all.
_ITEM_ATTRIBUTE = re.compile(rb"\sxmlns(?::[\w.\-]+)?\s*=|\sxml:base\s*=", re.IGNORECASE)
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_TAG_NAME_ENDS = (b" ", b"\t", b"\r", b"\n", b"/", b">")
# The formats whose shape is certain: root name → the elements between it and the items.
_SHAPES = {b"rss": ((b"rss", b"channel"), b"item"), b"feed": ((b"feed",), b"entry")}


@dataclass(frozen=True)
class Split:
    """A document as `header + items (whitespace between) + tail`."""

    header: bytes  # the prolog, the root's and channel's start tags, the feed's own elements
    items: tuple[bytes, ...]  # each item element, whole, in document order
    tail: bytes  # whatever follows the last item (feed elements too), to the end
    frame: bytes  # the XML declaration and the start tags that enclose every item

    def document(self, items: list[bytes]) -> bytes:
        """The document with only `items` (some of `self.items`) in it."""
        return self.header + b"\n".join(items) + self.tail


@dataclass(frozen=True)
class Refused:
    """Why a document cannot be cut with certainty (and is parsed whole)."""

    reason: str


class _Uncertain(Exception):
    """The cut is not certain; carries the reason."""


def split_document(body: bytes, *, max_items: int) -> Split | Refused:
    """`body` cut into header, items and tail, or why not (see the module)."""
    try:
        return _Cutter(body).cut(max_items)
    except _Uncertain as e:
        return Refused(str(e))


class _Cutter:
    """One pass over one document."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def cut(self, max_items: int) -> Split:
        declaration, start = self._prolog()
        root = self._start_tag(start)
        name = root.group(1)
        if name.lower() == b"rdf:rdf":
            raise _Uncertain("an RSS 1.0 (RDF) document")
        if name not in _SHAPES:
            raise _Uncertain(f"a <{_text(name)}> document, neither RSS 2.0 nor Atom")
        if root.group(3):
            raise _Uncertain("a document without items")
        path, item = _SHAPES[name]
        first, frame = self._header(root, path, item)
        items, end = self._items(first, item, max_items)
        self._tail(end)
        return Split(self.body[:first], items, self.body[end:], declaration + frame)

    # -- the parts ---------------------------------------------------------------------

    def _prolog(self) -> tuple[bytes, int]:
        """The XML declaration (if any) and where the root element starts."""
        body = self.body
        position = 3 if body.startswith(b"\xef\xbb\xbf") else 0
        declaration = b""
        while True:
            position = _skip_whitespace(body, position)
            if body.startswith(b"<?", position):
                end = self._closing(b"?>", position, "processing instruction")
                if body.startswith(b"<?xml", position) and not declaration:
                    declaration = body[position:end]
                position = end
            elif body.startswith(b"<!--", position):
                position = self._closing(b"-->", position, "comment")
            elif body.startswith(b"<!", position):
                raise _Uncertain("a DOCTYPE or other declaration")
            elif body.startswith(b"<", position):
                return declaration, position
            else:
                raise _Uncertain("text before the root element")

    def _header(
        self, root: re.Match[bytes], path: tuple[bytes, ...], item: bytes
    ) -> tuple[int, bytes]:
        """Where the first item starts, and the start tags enclosing it (root first)."""
        open_tags = [root.group(1)]
        channel = b""
        position = root.end()
        while True:
            start = self._next_tag(position, "before its first item")
            tag = self._start_tag(start) if self.body[start + 1 : start + 2] != b"/" else None
            if tag is None:
                position = self._end_tag(start, open_tags)
                if not open_tags:
                    raise _Uncertain("a document without items")
                continue
            name = tag.group(1)
            structural = _STRUCTURAL.fullmatch(b"<" + name) is not None
            # (Compared only at the depths that matter: a deep header stays linear.)
            if structural and name == item and _at(open_tags, path):
                return start, root.group(0) + channel
            if structural and name == path[-1] and _at(open_tags, path[:-1]) and not channel:
                channel = tag.group(0)  # encloses every item
            elif structural:
                raise _Uncertain(f"a <{_text(name)}> where the document's shape has none")
            if tag.group(2):  # attributes
                _no_namespaces(tag)
            if not tag.group(3):
                open_tags.append(name)
            position = tag.end()

    def _items(self, first: int, item: bytes, max_items: int) -> tuple[tuple[bytes, ...], int]:
        """Every item, from the first one on, and where the last one ends."""
        body = self.body
        items = []
        start = first
        while True:
            tag = self._start_tag(start)
            if tag.group(2):  # attributes
                _no_namespaces(tag)
                if b":base" in tag.group(2).lower() and any(
                    name.lower() == b"xml:base" for name, _ in _attributes(tag)
                ):
                    raise _Uncertain("xml:base on an item")
            end = tag.end() if tag.group(3) else self._item_end(tag.end(), item)
            items.append(body[start:end])
            if len(items) > max_items:
                raise _Uncertain(f"more than {max_items} items")
            following = _skip_whitespace(body, end)
            if not _starts_element(body, following, item):
                return tuple(items), end
            start = following

    def _item_end(self, start: int, item: bytes) -> int:
        """Just past the end tag of the item whose content starts at `start`."""
        body = self.body
        position = start
        while True:
            marker = _ITEM_MARKER.search(body, position)
            if marker is None:
                raise _Uncertain("an item that is never closed")
            found = marker.group(0)
            if found == b"<!--":
                position = self._closing(b"-->", marker.start(), "comment", checked=True)
            elif found == b"<![CDATA[":
                position = self._closing(b"]]>", marker.start(), "CDATA section", checked=True)
            elif found in (b"<?", b"<!"):
                raise _Uncertain("a processing instruction or declaration inside an item")
            elif found == b"</" + item and (end := _END_TAG.match(body, marker.start())):
                self._check_attributes(start, end.start())
                return end.end()
            else:
                raise _Uncertain(f"a {_text(found)} inside an item")

    def _check_attributes(self, start: int, end: int) -> None:
        """Refuse an item whose content declares a namespace (but the XHTML default, which
        feedparser keeps no state for) or carries xml:base."""
        body = self.body
        if body.find(b"xml", start, end) < 0 and body.find(b"XML", start, end) < 0:
            return
        for found in _ITEM_ATTRIBUTE.finditer(body, start, end):
            name = found.group(0).strip().rstrip(b"=").strip().lower()
            if name == b"xml:base":
                raise _Uncertain("xml:base inside an item")
            if name != b"xmlns" or not _XHTML_DEFAULT.match(body, found.end() - 1):
                raise _Uncertain("a namespace declared inside an item")

    def _tail(self, position: int) -> None:
        """Refuse another item (or anything shaped like one) after the items. The rest of
        the tail is parsed with every part of the document, and follows every item, so it
        cannot change how one reads; an ill-formed one makes the parse unclean (whole)."""
        found = _STRUCTURAL_START.search(self.body, position)
        if found is not None:
            raise _Uncertain(f"a {_text(found.group(0))}> after the items")

    # -- tokens --------------------------------------------------------------------------

    def _next_tag(self, position: int, where: str) -> int:
        """Where the next element tag starts; comments and CDATA skipped, nothing else."""
        body = self.body
        while True:
            start = body.find(b"<", position)
            if start < 0:
                raise _Uncertain(f"the document ends {where}")
            if body.startswith(b"<!--", start):
                position = self._closing(b"-->", start, "comment", checked=True)
            elif body.startswith(b"<![CDATA[", start):
                position = self._closing(b"]]>", start, "CDATA section", checked=True)
            elif body.startswith((b"<?", b"<!"), start):
                raise _Uncertain("a processing instruction or declaration inside the root")
            else:
                return start

    def _closing(self, closer: bytes, start: int, what: str, *, checked: bool = False) -> int:
        """Just past `closer`, which ends the comment or section at `start`. `checked`: the
        section must hold nothing that looks like an item's tag (the cut could not be
        told from a reader's mistake)."""
        end = self.body.find(closer, start + 2)
        if end < 0:
            raise _Uncertain(f"a {what} that is never closed")
        if checked and _STRUCTURAL.search(self.body, start + 4, end):
            raise _Uncertain(f"a {what} holding something like an item's tag")
        return end + len(closer)

    def _start_tag(self, start: int) -> re.Match[bytes]:
        tag = _START_TAG.match(self.body, start)
        if tag is None:
            raise _Uncertain("a tag that cannot be read")
        return tag

    def _end_tag(self, start: int, open_tags: list[bytes]) -> int:
        tag = _END_TAG.match(self.body, start)
        if tag is None or not open_tags or tag.group(1) != open_tags[-1]:
            raise _Uncertain("an end tag that does not match")
        open_tags.pop()
        return tag.end()


def _at(open_tags: list[bytes], path: tuple[bytes, ...]) -> bool:
    return len(open_tags) == len(path) and tuple(open_tags) == path


def _attributes(tag: re.Match[bytes]) -> list[tuple[bytes, bytes]]:
    return [(a.group(1), a.group(0)) for a in _ATTRIBUTE.finditer(tag.group(2))]


def _no_namespaces(tag: re.Match[bytes]) -> None:
    """Namespaces declared below the root: feedparser keeps them for the rest of the
    document, so an item could be read differently without the items before it."""
    if b"xmlns" not in tag.group(2).lower():
        return
    for name, _ in _attributes(tag):
        if _NAMESPACE_ATTRIBUTE.match(name.lower()):
            raise _Uncertain(f"a namespace declared on <{_text(tag.group(1))}>, not the root")


def _starts_element(body: bytes, position: int, name: bytes) -> bool:
    after = position + 1 + len(name)
    return body.startswith(b"<" + name, position) and body[after : after + 1] in _TAG_NAME_ENDS


def _skip_whitespace(body: bytes, position: int) -> int:
    return _WHITESPACE.match(body, position).end()  # type: ignore[union-attr]  # matches ""


def _text(value: bytes) -> str:
    return value[:40].decode("utf-8", "replace")

"""Reading anyone's OPML 2.0 subscription list (http://opml.org/spec2.opml), for `import-opml`.

`parse_opml` reads untrusted files, so its XML parser
loads no DTD, resolves no entities and never touches the network; a document that declares
entities is refused outright. Only http(s) feed URLs come out: a list from elsewhere must
not point the aggregator at local files.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any

from lxml import etree

from aggregator.errors import OpmlError
from aggregator.text import clean_text, collapse_whitespace, web_url

# Looked for in the prolog, before anything is parsed: a file declaring entities is refused.
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)
_PROLOG_END = re.compile(rb"<[A-Za-z_]")


# What one feed may carry of a list's categories: enough for any reader's folders, and a
# bound on what a hostile list can write into feeds.toml.
MAX_TAGS = 20
MAX_TAG_CHARS = 100


@dataclass(frozen=True)
class OpmlFeed:
    """One subscription: the feed's URL, the title the list gives it, if any, and its tags:
    the folders (outlines) enclosing it, outermost first, then its `category` attribute."""

    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedOutline:
    """An outline that is not imported: its URL (else its title) and why, for the operator."""

    what: str
    reason: str


@dataclass(frozen=True)
class OpmlList:
    """What an OPML file subscribes to, and the outlines left out of it, in document order."""

    feeds: tuple[OpmlFeed, ...]
    skipped: tuple[SkippedOutline, ...]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _local(element: etree._Element) -> str:
    """An element's name without namespace, lower-case; "" for comments and the like."""
    return etree.QName(element).localname.lower() if isinstance(element.tag, str) else ""


def _attribute(element: etree._Element, name: str) -> str | None:
    """An attribute by name, whatever its case (`xmlUrl`, `xmlurl` and `XMLURL` all occur)."""
    value: str | bytes | None = element.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in element.attrib.items() if str(k).lower() == wanted), None)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = " ".join(value.split()) if value else ""
    return text or None


def _outlines(body: etree._Element) -> Iterator[tuple[etree._Element, tuple[str, ...]]]:
    """Every `<outline>` below `body`, in document order, at any depth, with the names of
    the folders (outlines holding outlines) enclosing it, outermost first. A loop, not
    recursion: the parser bounds the depth, and a deep list costs no Python stack."""
    stack: list[tuple[etree._Element, tuple[str, ...]]] = [(c, ()) for c in reversed(body)]
    while stack:
        node, folders = stack.pop()
        if _local(node) == "outline":
            yield node, folders
            if name := _folder_name(node):
                folders = (*folders, name)
        stack.extend((child, folders) for child in reversed(node))


def _folder_name(outline: etree._Element) -> str | None:
    """The name of an outline that is a folder (no feed of its own, outlines inside)."""
    if _attribute(outline, "xmlUrl") or not any(_local(c) == "outline" for c in outline):
        return None
    return _tag(_attribute(outline, "text") or _attribute(outline, "title") or "")


def _tag(text: str) -> str | None:
    """A folder or category name as a tag: printable, one line, at most `MAX_TAG_CHARS`."""
    tag = collapse_whitespace(clean_text(text))[:MAX_TAG_CHARS].strip()
    return tag or None


def _tags(folders: tuple[str, ...], category: str | None) -> tuple[str, ...]:
    """A feed's tags: its folders, then its `category` attribute's categories (OPML 2.0:
    comma-separated, each a tag or a slash-delimited path like "/Boston/Weather", kept
    as "Boston/Weather"), each once, at most `MAX_TAGS`."""
    categories = (_tag(c.strip().strip("/")) for c in (category or "").split(","))
    every = (*folders, *(c for c in categories if c))
    return tuple(dict.fromkeys(every))[:MAX_TAGS]


def parse_opml(data: bytes) -> list[OpmlFeed]:
    """The feeds an OPML file subscribes to (`read_opml(data).feeds`)."""
    return list(read_opml(data).feeds)


def read_opml(data: bytes) -> OpmlList:
    """The feeds an OPML file subscribes to, in document order, each URL once, and the
    outlines skipped, each with its reason.

    Categories (outlines nesting outlines) are flattened, each becoming a tag of the feeds
    inside it, as its `category` attribute's categories do. An outline is a feed when it has
    an `xmlUrl`, whatever its `type`; its title is `text` (what readers show), else `title`.
    A leaf outline without one is skipped (a category holds other outlines: it is no skip).
    A feed listed again (in another folder) is read once, with the tags of both.
    Raises `OpmlError` (an `AggregatorError`), one line for the operator, when it is not OPML.
    """
    body = _body(data)
    feeds: dict[str, OpmlFeed] = {}
    skipped: list[SkippedOutline] = []
    for outline, folders in _outlines(body):
        url = _attribute(outline, "xmlUrl")
        title = _attribute(outline, "text") or _attribute(outline, "title")
        tags = _tags(folders, _attribute(outline, "category")) if url else ()
        reason = _why_skipped(outline, url, feeds.keys())
        if reason:
            skipped.append(SkippedOutline(url or title or "an untitled outline", reason))
            if url in feeds:  # the same feed in another folder: it has that tag too
                first = feeds[url]
                feeds[url] = replace(
                    first, tags=tuple(dict.fromkeys((*first.tags, *tags)))[:MAX_TAGS]
                )
        elif url:
            feeds[url] = OpmlFeed(url, title, tags)
    return OpmlList(tuple(feeds.values()), tuple(skipped))


def _why_skipped(outline: etree._Element, url: str | None, seen: Collection[str]) -> str | None:
    """Why a feed outline is left out, None for a feed (or a category: not a skip)."""
    if not url:
        is_category = any(_local(child) == "outline" for child in outline)
        return None if is_category else "no xmlUrl: not a feed subscription"
    if " " in url or not web_url(url):
        return "not an http(s) URL"
    if url in seen:
        return "a duplicate of an earlier outline in the file"
    return None


def _body(data: bytes) -> etree._Element:
    """The `<body>` of an OPML document; `OpmlError` when there is none to read."""
    prolog = data[: m.start()] if (m := _PROLOG_END.search(data)) else data
    if _ENTITY_DECLARATION.search(prolog):
        raise OpmlError("refusing an OPML file that declares XML entities (<!ENTITY>)")
    if not data.strip():
        raise OpmlError("not an OPML file: it is empty")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        raise OpmlError(f"not an OPML file: not well-formed XML: {e.msg}") from e
    # The prolog scan cannot read a UTF-16 file; the parsed DTD can (lxml-stubs lack entities()).
    dtd: Any = root.getroottree().docinfo.internalDTD
    if dtd is not None and list(dtd.entities()):
        raise OpmlError("refusing an OPML file that declares XML entities (<!ENTITY>)")
    if _local(root) != "opml":
        name = etree.QName(root).localname
        raise OpmlError(f"not an OPML file: the root element is <{name}>, not <opml>")
    body = next((child for child in root if _local(child) == "body"), None)
    if body is None:
        raise OpmlError("not an OPML file: <opml> has no <body>")
    return body

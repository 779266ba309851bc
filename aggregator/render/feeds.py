"""Timeline → RSS 2.0 and Atom 1.0 bytes, with feedgen.

Pure and deterministic: the same timeline gives the same bytes, so an unchanged feed keeps
its ETag. Nothing here reads the clock: the feed's date is the newest item's date.
feedgen's own `<source>` lacks what Atom wants and its RSS `<author>` demands an e-mail
address, so a small feedgen extension writes the source credit and `dc:creator` instead.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from aggregator import PROJECT_URL, __version__
from aggregator.archive import ArchiveDay, archive_name
from aggregator.render import ATOM_FILE, RSS_FILE
from aggregator.settings import SiteSettings
from aggregator.text import make_teaser, web_url
from aggregator.timeline import source_id
from aggregator.types import SourceCredit, Timeline, TimelineItem
from aggregator.urls import as_uri, entry_link, public_url

DC_NS = "http://purl.org/dc/elements/1.1/"
ATOM_NS = "http://www.w3.org/2005/Atom"
FH_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005: feed paging and archiving
# An empty timeline still needs a date; callers normally give one (see publish.py).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TITLE_FALLBACK_LENGTH = 80
# Item HTML in one feed document (rss.xml, atom.xml, feed.json), counted as the bytes it takes
# there. Each item's HTML is capped (parse.CONTENT_LIMIT) but not their sum: 200 items of 512
# KiB made a 102 MB rss.xml and a 204 MB feed.json. Real timelines stay far below (200 items
# of 20 KB are 4 MB); past the budget items carry their teaser, as readers show it anyway.
CONTENT_BUDGET = 8 * 1024 * 1024
# What escaping adds to one character, at most, in XML text (lxml: "&amp;", "&lt;", "&gt;",
# "&#13;") or in a JSON string (a backslash before a quote, backslash, newline or tab).
_ESCAPE_GROWTH = {"&": 4, "<": 3, ">": 3, "\r": 4, '"': 1, "\\": 1, "\n": 1, "\t": 1}


class _ArchiveFeed(BaseExtension):  # type: ignore[misc]
    """`<fh:archive/>`: marks an archive document (RFC 5005 §4), whose entries are stable."""

    def extend_ns(self) -> dict[str, str]:
        return {"fh": FH_NS}

    def extend_atom(self, feed: Any) -> Any:
        etree.SubElement(feed, f"{{{FH_NS}}}archive")
        return feed


class _CreditFeed(BaseExtension):  # type: ignore[misc]
    """Declares the Dublin Core namespace once, on the root element; in RSS, names the
    feed's WebSub hubs beside its self link (feedgen writes only that one atom:link)."""

    def __init__(self) -> None:
        self.hubs: tuple[str, ...] = ()

    def extend_ns(self) -> dict[str, str]:
        return {"dc": DC_NS}

    def extend_rss(self, rss: Any) -> Any:
        channel = rss.find("channel")
        self_link = channel.find(f"{{{ATOM_NS}}}link")
        at = list(channel).index(self_link) + 1 if self_link is not None else len(channel)
        for offset, hub in enumerate(self.hubs):
            link = etree.Element(f"{{{ATOM_NS}}}link", href=hub, rel="hub")
            channel.insert(at + offset, link)
        return rss


class _CreditEntry(BaseEntryExtension):  # type: ignore[misc]
    """Writes who carried the entry: RSS `<source url>` + `dc:creator`, Atom `<source>`."""

    def __init__(self) -> None:
        self.credit: SourceCredit | None = None
        self.author: str | None = None
        self.updated: datetime | None = None
        self.also: tuple[SourceCredit, ...] = ()

    def extend_rss(self, item: Any) -> Any:
        if self.author:
            etree.SubElement(item, f"{{{DC_NS}}}creator").text = self.author
        feed_url = _public_feed_url(self.credit)
        if self.credit and feed_url:
            etree.SubElement(item, "source", url=feed_url).text = self.credit.title
        return item

    def extend_atom(self, entry: Any) -> Any:
        # feedgen writes Atom elements without a namespace under a literal xmlns attribute;
        # ours must match, or lxml would give them a prefix.
        if self.credit:
            feed_url = _public_feed_url(self.credit)
            source = etree.SubElement(entry, "source")
            etree.SubElement(source, "id").text = (
                _usable_id(_public(self.credit.feed_id)) or feed_url or source_id(self.credit.name)
            )
            etree.SubElement(source, "title").text = self.credit.title
            # The publisher as the source's author: Atom wants an author for every entry.
            author = etree.SubElement(source, "author")
            etree.SubElement(author, "name").text = self.credit.title
            if self.updated is not None:
                # The source feed was updated at least when this entry was.
                etree.SubElement(source, "updated").text = self.updated.isoformat()
            site_url = _public(self.credit.site_url)
            if site_url:
                etree.SubElement(source, "link", rel="alternate", href=site_url)
            if feed_url:
                etree.SubElement(source, "link", rel="self", href=feed_url)
        for other in self.also:
            # The same story from other sources: Atom's "via" names where it also came from.
            href = _public(other.site_url) or _public_feed_url(other)
            if href:
                etree.SubElement(entry, "link", rel="via", href=href, title=other.title)
        return entry


# A publisher's feed id is repeated only when it is plainly a valid IRI; a broken one
# ("urn:b") would make our own feed invalid.
_VALID_ID = re.compile(
    r"^(?:https?://[^\s<>\"]+"
    r"|tag:[A-Za-z0-9.@-]+,\d{4}(?:-\d{2}(?:-\d{2})?)?:[^\s<>\"]*"
    r"|urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|urn:(?!uuid:)[A-Za-z0-9][A-Za-z0-9-]{1,31}:[^\s<>\"]+)$"
)


def _usable_id(value: str | None) -> str | None:
    return value if value and _VALID_ID.match(value) else None


def _public_feed_url(credit: SourceCredit | None) -> str | None:
    """A source's feed URL as readers may see it: never a local file path, never a secret."""
    url = web_url(credit.feed_url) if credit is not None else None
    return as_uri(public_url(url)) if url else None


def _public(url: str | None) -> str | None:
    """A URL naming a source (its site, its id), without user info or credentials."""
    return as_uri(public_url(url)) if url else None


def published_size(markup: str) -> int:
    """An upper bound of the bytes `markup` takes in any of the feeds, escaped, as UTF-8."""
    size = len(markup.encode("utf-8"))
    return size + sum(growth * markup.count(ch) for ch, growth in _ESCAPE_GROWTH.items())


def with_full_content(items: Sequence[TimelineItem], budget: int = CONTENT_BUDGET) -> list[bool]:
    """For each item, newest first, whether its HTML goes into a feed document in full.

    The newest items do while their HTML adds up to at most `budget`; from the first that
    does not fit on, items carry only their teaser. Pure, so every render of one timeline
    makes the same choice (the same bytes, the same ETag), and all three feeds make it alike.
    """
    total = 0
    full: list[bool] = []
    for item in items:
        total += published_size(item.entry.summary_html)
        full.append(total <= budget)
        if total > budget:
            break
    return full + [False] * (len(items) - len(full))


def _generator(
    site: SiteSettings,
    timeline: Timeline,
    self_url: str,
    *,
    title: str | None = None,
    links: Sequence[tuple[str, str]] = (),
    hubs: Sequence[str] | None = None,
) -> FeedGenerator:
    """A feed of `timeline`; `links`: more (rel, href) pairs, such as RFC 5005's; `hubs`:
    its WebSub hubs (default: the site's)."""
    hubs = tuple(site.hubs if hubs is None else hubs)
    fg = FeedGenerator()
    fg.register_extension("credit", _CreditFeed, _CreditEntry)
    # The id is the self link, a URI: an IRI `base_url`'s id failed the W3C validator
    # ("IRI found where URL expected"). An ASCII one is the same id byte for byte.
    self_uri = as_uri(self_url)
    fg.id(self_uri)
    fg.title(title or site.title)
    fg.subtitle(site.description)
    fg.description(site.description)
    fg.link(href=self_uri, rel="self")
    hubs = tuple(as_uri(hub) for hub in hubs)
    for hub in hubs:  # WebSub: where to subscribe to this feed
        fg.link(href=hub, rel="hub")
    fg.credit.hubs = hubs
    for rel, href in links:
        fg.link(href=as_uri(href), rel=rel)
    # Last, because feedgen's RSS <link> is the last link.
    fg.link(href=as_uri(site.link), rel="alternate")
    if site.language:
        fg.language(site.language)
    fg.generator("aggregator", version=__version__, uri=PROJECT_URL)
    fg.updated(timeline.updated or _EPOCH)
    return fg


def _entries(timeline: Timeline) -> Iterator[FeedEntry]:
    """The timeline's entries, made one at a time (see `_document`)."""
    for item, full in zip(timeline.items, with_full_content(timeline.items), strict=True):
        yield _entry(item, full_content=full)


def _as_is(piece: bytes) -> bytes:
    return piece


# Where the entries go: the split of a document made with a marker in their place.
_MARKER = "aggregator-entries-go-here"


def _document(
    root: Any, parent: Any, elements: Iterable[Any], fix: Callable[[bytes], bytes] = _as_is
) -> bytes:
    """`root`'s document, pretty-printed as UTF-8 with an XML declaration, with `elements`
    appended to `parent` (the root, or RSS's `<channel>`): the bytes feedgen would write
    with them all in the tree, made with one element in it at a time. An archive day of
    2,000 entries held ~11 MB of lxml nodes at once, and its serialization 5 MB more, at
    the peak of every publish that built an archive; now one entry's nodes, the pieces
    and their join (twice the document's bytes).

    Pretty-printing indents an element by its depth alone (every child of `parent` is an
    element, so none of them is mixed content): each element's bytes are what it
    serializes to in the document, found between the document's head (up to the line
    where the elements begin) and its tail (from there to its end). `fix` is applied to
    each piece (it must not change across an element's boundary)."""

    def serialized() -> bytes:
        data: bytes = etree.tostring(
            root.getroottree(), pretty_print=True, encoding="UTF-8", xml_declaration=True
        )
        return data

    marker = etree.SubElement(parent, _MARKER)
    marked = serialized()
    parent.remove(marker)
    empty = serialized()
    at = marked.rfind(b"<" + _MARKER.encode() + b"/>")
    head = marked[: marked.rfind(b"\n", 0, at) + 1]
    tail = empty[len(head) :]
    if at < 0 or not head or not empty.startswith(head) or not marked.endswith(tail):
        # Not split as expected (an lxml that serializes otherwise): the whole tree at once.
        for element in elements:
            parent.append(element)
        return fix(serialized())
    pieces = [fix(head)]
    for element in elements:
        parent.append(element)
        whole = serialized()
        parent.remove(element)
        pieces.append(fix(whole[len(head) : len(whole) - len(tail)]))
    pieces.append(fix(tail))
    return b"".join(pieces)


def _atom(fg: FeedGenerator, timeline: Timeline) -> bytes:
    """`fg` (no entries in it) as Atom, with `timeline`'s entries."""
    root, _ = fg._create_atom()  # feedgen's own tree of the feed (its `atom_str` uses it)
    return _document(root, root, (entry.atom_entry() for entry in _entries(timeline)))


def _entry(item: TimelineItem, *, full_content: bool = True) -> FeedEntry:
    entry = item.entry
    fe = FeedEntry()
    fe.register_extension("credit", _CreditEntry)
    fe.id(item.uid)
    link = entry_link(entry.link, item.source.feed_url)
    title = entry.title or make_teaser(entry.teaser, _TITLE_FALLBACK_LENGTH) or link or item.uid
    fe.title(title)
    if link:
        fe.link(href=as_uri(link), rel="alternate")
    fe.published(item.published)
    fe.updated(item.updated)
    # Every entry gets textual content: readers show it, and Atom asks for it.
    # Past the document's content budget, the teaser stands for the HTML (see CONTENT_BUDGET).
    summary = (entry.summary_html if full_content else "") or html.escape(
        entry.teaser or title, quote=False
    )
    if link:
        fe.summary(summary, type="html")  # also the RSS <description>
    else:
        # Atom needs an alternate link or a content element; without a link, content it is.
        fe.content(summary, type="html")
    if entry.author:
        fe.author(name=entry.author)
    for term in entry.categories:
        fe.category(term=term)
    fe.credit.credit = item.source
    fe.credit.author = entry.author
    fe.credit.updated = item.updated
    fe.credit.also = item.also
    return fe


# RSS leaves it open whether "&amp;" in a title is text or markup; the RSS Advisory Board's
# answer (and the W3C validator's) is hexadecimal references for "&" and "<" in plain text.
_RSS_PLAIN_TEXT = re.compile(rb"(<(?:title|source|dc:creator|category)(?:\s[^>]*)?>)([^<]*)(</)")


def _hex_references(match: re.Match[bytes]) -> bytes:
    text = match.group(2).replace(b"&amp;", b"&#x26;").replace(b"&lt;", b"&#x3C;")
    return match.group(1) + text + match.group(3)


def render_rss(timeline: Timeline, site: SiteSettings) -> bytes:
    """RSS 2.0, UTF-8, newest item first."""
    fg = _generator(site, timeline, site.base_url + RSS_FILE)
    root, _ = fg._create_rss()  # feedgen's own tree of the feed (its `rss_str` uses it)
    items = (entry.rss_entry() for entry in _entries(timeline))
    return _document(root, root.find("channel"), items, _plain_text_references)


def _plain_text_references(data: bytes) -> bytes:
    return _RSS_PLAIN_TEXT.sub(_hex_references, data)


def render_atom(
    timeline: Timeline, site: SiteSettings, newest_archive: date | None = None
) -> bytes:
    """Atom 1.0, UTF-8, newest entry first; with `newest_archive`, the subscription document
    of an archived feed (RFC 5005 §4): its `prev-archive` leads to that day's document."""
    links = () if newest_archive is None else (("prev-archive", archive_url(site, newest_archive)),)
    fg = _generator(site, timeline, site.base_url + ATOM_FILE, links=links)
    return _atom(fg, timeline)


def archive_url(site: SiteSettings, day: date) -> str:
    """Where the archive document of `day` is served."""
    return site.base_url + archive_name(day)


def render_archive(day: ArchiveDay, site: SiteSettings) -> bytes:
    """One archive day as an Atom archive document (RFC 5005 §4): `fh:archive`, `current`
    (the subscription document), `prev-archive`/`next-archive` where those days exist, and
    the day's items rendered as in atom.xml (same ids, titles, links, teasers). No WebSub
    hub: an archive document is no topic (it does not change; `hub.topics`)."""
    links = [("current", site.base_url + ATOM_FILE)]
    if day.previous is not None:
        links.append(("prev-archive", archive_url(site, day.previous)))
    if day.next is not None:
        links.append(("next-archive", archive_url(site, day.next)))
    fg = _generator(
        site,
        day.timeline,
        archive_url(site, day.day),
        title=f"{site.title} · {day.day.isoformat()}",
        links=links,
        hubs=(),
    )
    fg.register_extension("history", _ArchiveFeed, None, rss=False)
    return _atom(fg, day.timeline)

"""The check that a partial parse gives what a whole parse gives, and the mutations of a
document it is run over (an item added at the top, one edited, one removed, the items
reordered, the header edited). Shared by `test_partial_parse` (the project's documents,
generated feeds) and `test_partial_corpus` (feedparser's own test documents)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.errors import ParseError
from aggregator.parse.feed import parse_feed
from aggregator.parse.fields import ENTRY_LIMIT
from aggregator.parse.partial import parse_changed
from aggregator.parse.split import Split, split_document
from aggregator.types import ItemMemory, ParsedEntry, ParsedFeed

URL = "https://feeds.example.org/feed.xml"

ADDED = {
    b"item": b"<item><title>Added item</title><link>https://added.example.org/1</link>"
    b"<guid>added-1</guid><pubDate>Sat, 12 Jul 2025 10:00:00 GMT</pubDate></item>",
    b"entry": b"<entry><title>Added item</title><id>tag:added.example.org,2025:1</id>"
    b'<link href="https://added.example.org/1"/><updated>2025-07-12T10:00:00Z</updated></entry>',
}
# A feed element and a comment where the header ends (as a feed rebuilt at every change has
# a new lastBuildDate).
HEADER_EDIT = {
    b"item": b"<lastBuildDate>Sun, 13 Jul 2025 12:00:00 GMT</lastBuildDate><!-- built -->\n",
    b"entry": b"<subtitle>Edited</subtitle><!-- built -->\n",
}
EDIT = {b"item": b"<category>edited</category>", b"entry": b'<category term="edited"/>'}


def mutations(body: bytes) -> dict[str, bytes]:
    """The document with an item added at the top, its first edited, its first removed, its
    items reversed, and a comment put at the end of its header; none if it cannot be cut."""
    cut = split_document(body, max_items=ENTRY_LIMIT)
    if not isinstance(cut, Split):
        return {}
    items = list(cut.items)
    name = b"entry" if items[0].startswith(b"<entry") else b"item"
    return {
        "added at the top": cut.document([ADDED[name], *items]),
        "one edited": cut.document([_edited(items[0], name), *items[1:]]),
        "one removed": cut.document(items[1:]),
        "reordered": cut.document(items[::-1]),
        "header edited": Split(
            cut.header + HEADER_EDIT[name], cut.items, cut.tail, cut.frame
        ).document(items),
    }


def _edited(item: bytes, name: bytes) -> bytes:
    if item.endswith(b"/>"):  # <item/>
        return item[:-2].rstrip() + b">" + EDIT[name] + b"</" + name + b">"
    end = item.rindex(b"</")
    return item[:end] + EDIT[name] + item[end:]


@dataclass
class Chain:
    """Successive documents of one source through the partial parse, each checked against
    a whole parse of it; `stored` stands for what the store holds of its entries."""

    headers: Mapping[str, str]
    url: str = URL
    timezone: str = "UTC"
    memory: ItemMemory | None = None
    stored: dict[str, ParsedEntry] | None = None
    reused: int = 0  # items not parsed again, over the chain

    def poll(self, body: bytes) -> ParsedFeed | None:
        """Parse `body` partly with the memory of the chain's last parse; check it agrees
        with a whole parse; None when neither can read it (both raise the same)."""
        try:
            whole = parse_feed(body, self.headers, self.url, timezone=self.timezone)
        except ParseError as e:
            try:
                self._partly(body)
            except ParseError as again:
                assert str(again) == str(e)
                return None
            raise AssertionError("the partial parse read what the whole one refused") from e
        got = self._partly(body)
        check_agrees(got, whole, self.stored or {})
        remembered = parse_changed(body, self.headers, self.url, timezone=self.timezone)
        assert got.memory == remembered.memory  # the same memory as a whole parse leaves
        self.stored = {**(self.stored or {}), **{e.entry_id: e for e in got.entries}}
        self.memory = got.memory
        self.reused += got.items_reused
        return got

    def _partly(self, body: bytes) -> ParsedFeed:
        return parse_changed(
            body, self.headers, self.url, timezone=self.timezone, memory=self.memory
        )


def check_agrees(got: ParsedFeed, whole: ParsedFeed, stored: Mapping[str, ParsedEntry]) -> None:
    """`got` (a partial parse) says what `whole` (a whole parse of the same document) does:
    the same feed fields; the entries it read are the whole parse's, in its order, less
    those it reused, which `stored` holds exactly as the whole parse reads them now."""
    assert _fields(got) == _fields(whole)
    reused = set(got.reused)
    assert len(reused) == len(got.reused)
    if not got.items_reused:
        assert got.entries == whole.entries and not got.reused
        return
    assert whole.warning is None
    assert list(got.entries) == [e for e in whole.entries if e.entry_id not in reused]
    by_id = {e.entry_id: e for e in whole.entries}
    assert reused <= set(by_id)
    for entry_id in reused:
        assert stored[entry_id] == by_id[entry_id], entry_id


def _fields(feed: ParsedFeed) -> tuple[object, ...]:
    return (feed.title, feed.link, feed.feed_id, feed.lifetime, feed.warning)


def check_document(body: bytes, headers: Mapping[str, str], url: str = URL) -> Sequence[str]:
    """The document, then each mutation of it, each after the document itself (the chain
    restarted): the names of the mutations whose parse reused items."""
    reused = []
    for name, mutated in {"unchanged": body, **mutations(body)}.items():
        chain = Chain(headers, url)
        chain.poll(body)
        chain.poll(mutated)
        if chain.reused:
            reused.append(name)
    return reused

"""`parse.split`: an RSS 2.0 or Atom document cut into header, items and tail, or refused.

The cut must be certain: each tricky shape the partial parse must not trust (namespaces or
entities declared below the root, `xml:base` on items, CDATA holding an item's tag,
comments and processing instructions between items, a DOCTYPE, encodings that cannot be
read in parts, nested items, RSS 1.0) is refused here, with its reason, and
`test_partial_parse` shows the parse then reads the whole document.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.parse.partial import refusal
from aggregator.parse.split import Refused, Split, split_document
from tests.feedfactory import Item, atom, rss1, rss2

NOW = datetime(2025, 7, 13, 12, tzinfo=UTC)
HEADERS = {"content-type": "application/xml; charset=utf-8"}


def _items(count: int) -> list[Item]:
    return [
        Item(
            f"Story {k}",
            f"https://a.example.org/{k}",
            f"g{k}",
            NOW - timedelta(hours=k),
            "<p>x</p>",
        )
        for k in range(count)
    ]


def _rss(items: str, *, channel: str = "<channel>", encoding: str = "utf-8") -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0">{channel}'
        f"<title>T</title><link>https://a.example.org/</link>\n{items}\n</channel></rss>\n"
    ).encode(encoding)


ONE = "<item><title>One</title><guid>1</guid></item>"
TWO = "<item><title>Two</title><guid>2</guid></item>"


def _cut(body: bytes) -> Split:
    cut = split_document(body, max_items=100)
    assert isinstance(cut, Split), cut
    return cut


def _reason(body: bytes) -> str:
    cut = split_document(body, max_items=100)
    assert isinstance(cut, Refused), "expected a refusal"
    return cut.reason


@pytest.mark.parametrize("make", [rss2, lambda t, link, items: atom(t, link, "tag:a", items)])
def test_a_feed_is_cut_into_header_items_and_tail_that_make_it_up(make):
    body = make("A", "https://a.example.org/", _items(5))
    cut = _cut(body)
    assert len(cut.items) == 5
    assert body.startswith(cut.header) and body.endswith(cut.tail)
    rest = body[len(cut.header) : len(body) - len(cut.tail)]
    for item in cut.items:  # in order, whitespace between them
        assert rest.startswith(item)
        rest = rest[len(item) :].lstrip()
    assert rest == b""
    assert cut.items[0].startswith((b"<item>", b"<entry>"))
    assert cut.items[-1].endswith((b"</item>", b"</entry>"))


def test_the_frame_is_the_declaration_and_the_tags_around_the_items():
    body = _rss(ONE, channel='<channel xml:base="https://a.example.org/x/">')
    cut = _cut(body)
    assert cut.frame == (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0">'
        b'<channel xml:base="https://a.example.org/x/">'
    )


def test_a_document_with_only_some_items_keeps_header_and_tail():
    cut = _cut(_rss(f"{ONE}\n{TWO}"))
    assert cut.document([cut.items[1]]) == _rss(TWO).replace(b"\n\n", b"\n")


def test_what_items_may_hold_does_not_stop_the_cut():
    cdata = "<item><description><![CDATA[<p>a</p> </b> ]]></description><guid>c</guid></item>"
    comment = "<item><!-- a note --><guid>d</guid></item>"
    empty = "<item/>"
    text = "<item><title>a &lt;item&gt; &amp; more</title></item>"
    attributes = '<item><enclosure url="https://a.example.org/x.mp3" length="1" type="a/b"/></item>'
    assert len(_cut(_rss("\n".join([cdata, comment, empty, text, attributes]))).items) == 5


def test_xhtml_content_in_an_atom_entry_is_cut():
    entry = (
        '<entry><id>x</id><title>T</title><content type="xhtml">'
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div></content></entry>'
    )
    body = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>F</title>{entry}{entry}</feed>'
    assert len(_cut(body.encode()).items) == 2


def test_channel_elements_after_the_items_stay_in_the_tail():
    body = _rss(f"{ONE}{TWO}<ttl>60</ttl><image><url>x</url></image>")
    cut = _cut(body)
    assert b"<ttl>60</ttl>" in cut.tail and len(cut.items) == 2


# The documents the cut must refuse, each with the reason it gives.
REFUSED = {
    "namespace declared on the channel": (
        _rss(ONE, channel='<channel xmlns:media="http://search.yahoo.com/mrss/">'),
        "a namespace declared on <channel>",
    ),
    "namespace declared on an item": (
        _rss('<item xmlns:x="http://x.example.org/"><guid>1</guid></item>'),
        "a namespace declared on <item>",
    ),
    "namespace declared inside an item": (
        _rss('<item><x:a xmlns:x="http://x.example.org/">1</x:a></item>'),
        "a namespace declared inside an item",
    ),
    "default namespace inside an item": (
        _rss('<item><a xmlns="http://x.example.org/">1</a></item>'),
        "a namespace declared inside an item",
    ),
    "DOCTYPE": (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss><channel>'
        + ONE.encode()
        + b"</channel></rss>",
        "a DOCTYPE or other declaration",
    ),
    "xml:base on an item": (
        _rss('<item xml:base="https://b.example.org/"><guid>1</guid></item>'),
        "xml:base on an item",
    ),
    "xml:base inside an item": (
        _rss('<item><description xml:base="https://b.example.org/">x</description></item>'),
        "xml:base inside an item",
    ),
    "CDATA holding an item's tag": (
        _rss("<item><description><![CDATA[</item><item>]]></description></item>"),
        "a CDATA section holding something like an item's tag",
    ),
    "comment holding an item's tag": (
        _rss("<item><!-- <item> --><guid>1</guid></item>"),
        "a comment holding something like an item's tag",
    ),
    "comment between items": (
        _rss(f"{ONE}<!-- ad -->{TWO}"),
        "a <item> after the items",
    ),
    "processing instruction between items": (
        _rss(f"{ONE}<?pi x?>{TWO}"),
        "a <item> after the items",
    ),
    "processing instruction inside an item": (
        _rss("<item><?pi x?><guid>1</guid></item>"),
        "a processing instruction or declaration inside an item",
    ),
    "an item inside an item": (
        _rss("<item><guid>1</guid><item><guid>2</guid></item></item>"),
        "a <item inside an item",
    ),
    "an item inside another element": (
        _rss(f"<group>{ONE}</group>"),
        "a <item> where the document's shape has none",
    ),
    "items outside the channel": (
        b"<rss><channel><title>T</title></channel>" + ONE.encode() + b"</rss>",
        "a <item> where the document's shape has none",
    ),
    "channel elements between items": (
        _rss(f"{ONE}<title>again</title>{TWO}"),
        "a <item> after the items",
    ),
    "an item in capitals": (_rss("<Item><guid>1</guid></Item>"), "a <Item> where"),
    "a prefixed entry": (
        b'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:a="http://www.w3.org/2005/Atom">'
        b"<a:entry><id>1</id></a:entry></feed>",
        "a <a:entry> where the document's shape has none",
    ),
    "a second channel": (
        _rss(ONE).replace(
            b"</channel></rss>", b"</channel><channel>" + TWO.encode() + b"</channel></rss>"
        ),
        "a <channel> after the items",
    ),
    "an empty channel, then another": (
        _rss(ONE, channel="<channel/><channel>"),
        "a <channel> where the document's shape has none",
    ),
    "RSS 1.0": (rss1("A", "https://a.example.org/", _items(2)), "an RSS 1.0 (RDF) document"),
    "a prefixed root": (
        b'<atom:feed xmlns:atom="http://www.w3.org/2005/Atom"><atom:entry/></atom:feed>',
        "a <atom:feed> document, neither RSS 2.0 nor Atom",
    ),
    "an item never closed": (_rss("<item><guid>1</guid>"), "a </channel inside an item"),
    "no items": (_rss(""), "a document without items"),
    "an unreadable tag": (_rss("<item <guid>1</guid></item>"), "a tag that cannot be read"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_shape_the_cut_cannot_be_sure_of_is_refused(case):
    body, reason = REFUSED[case]
    assert _reason(body).startswith(reason)


def test_more_items_than_the_limit_are_refused():
    body = rss2("A", "https://a.example.org/", _items(5))
    assert isinstance(split_document(body, max_items=5), Split)
    assert split_document(body, max_items=4) == Refused("more than 4 items")


# What the parse refuses before the cut: whatever the preparation changes, and encodings in
# which a part might decode differently from the whole.
LATIN = _rss("<item><title>café</title></item>", encoding="iso-8859-1")
# UTF-8 with one invalid byte among many good ones: repaired (the byte dropped) when parsed.
BROKEN_UTF8 = _rss(f"<item><title>{'é' * 20}</title></item>").replace(b"\xc3\xa9", b"\xff", 1)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (
            _rss("<item><title>&e;</title></item>").replace(
                b"<rss", b'<!DOCTYPE rss [<!ENTITY e "x">]><rss'
            ),
            HEADERS,
            "a DOCTYPE or ENTITY declaration",
        ),
        (BROKEN_UTF8, HEADERS, "a DOCTYPE or ENTITY declaration, or invalid UTF-8 repaired"),
        (
            _rss("<item><title>日本</title></item>", encoding="shift_jis"),
            {"content-type": "application/xml"},
            "an encoding",
        ),
        ("<rss/>".encode("utf-16"), {"content-type": "application/xml"}, "an encoding"),
        (
            _rss("<item><title>café</title></item>"),
            {"content-type": "text/xml"},  # read as us-ascii first: overridden
            "an encoding",
        ),
    ],
    ids=["entity", "invalid utf-8", "shift_jis", "utf-16", "text/xml without charset"],
)
def test_what_the_parse_refuses_before_cutting(body, headers, reason):
    assert (refusal(body, headers) or "").startswith(reason)


def test_single_byte_latin_and_ascii_are_cut():
    assert refusal(LATIN, {"content-type": "application/xml"}) is None
    ascii_only = _rss(ONE)
    assert refusal(ascii_only, {"content-type": "text/xml"}) is None
    assert refusal(_rss(ONE), HEADERS) is None


# Each shape at ~4 MB: the cut is one linear pass, so each takes a few seconds at most here
# (feedparser itself takes far longer over such a document); a quadratic step would take
# hours. The bound is generous for a crowded machine.
HOSTILE = {
    "deep header": _rss(ONE, channel="<channel>" + "<a>" * 1_000_000),
    "deep tail": _rss(ONE + "<a>" * 1_000_000),
    "an item of empty elements": _rss("<item>" + "<i/>" * 1_000_000 + "</item>"),
    "an item of comments": _rss("<item>" + "<!---->" * 600_000 + "</item>"),
    "an item of CDATA sections": _rss("<item>" + "<![CDATA[]]>" * 350_000 + "</item>"),
    "a tag of attributes": _rss(ONE, channel="<channel" + ' a="b"' * 700_000 + ">"),
    "an attribute never closed": _rss(ONE, channel='<channel a="' + "b" * 4_000_000 + ">"),
    "many items": _rss("<item/>" * 600_000),
    "whitespace between items": _rss("<item/>" + " " * 4_000_000 + "<item/>"),
    "a comment never closed": _rss("<item><!--" + "-" * 4_000_000 + "</item>"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_cut_of_a_hostile_document_is_linear(case):
    started = time.process_time()
    split_document(HOSTILE[case], max_items=10_000)
    assert time.process_time() - started < 10

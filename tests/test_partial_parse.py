"""`parse.partial`: a changed document parsed only where it changed gives what a whole
parse gives, or is parsed whole.

Over the project's real-world documents (tests/data) and each mutation of them (an item
added at the top, one edited, one removed, the items reordered, the header edited), over
feeds hypothesis makes up and edits at random, and over the tricky documents the cut
refuses: the entries read are the whole parse's, those left unread are the ones the last
parse read from the same bytes, and the feed's own fields and warnings are the same
(`tests.partialcheck`). feedparser's own test corpus goes through the same check in
`test_partial_corpus`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aggregator.parse.partial as partial_module
from aggregator.errors import ParseError
from aggregator.parse.feed import parse_feed
from aggregator.parse.fields import ENTRY_LIMIT
from aggregator.parse.partial import parse_changed
from aggregator.parse.split import Split, split_document
from aggregator.types import ParsedFeed
from tests.partialcheck import Chain, check_document
from tests.test_split import REFUSED

DATA = Path(__file__).parent / "data"
XML = {"content-type": "application/xml"}
HEADERS = {"content-type": "application/rss+xml; charset=utf-8"}
# As tests/test_corpus_regressions serves them.
CONTENT_TYPES = {"charset-header-overrides-declaration.xml": "application/xml; charset=koi8-r"}
DOCUMENTS = sorted(DATA.rglob("*.xml"))
NOW = datetime(2025, 7, 13, 12, tzinfo=UTC)


def _headers(path: Path) -> dict[str, str]:
    return {"content-type": CONTENT_TYPES.get(path.name, "application/xml")}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(DATA)))
def test_each_real_document_and_its_mutations_parse_partly_as_they_do_whole(path: Path):
    body = path.read_bytes()
    reused = check_document(body, _headers(path))
    if "unchanged" in reused:  # a document the cut takes: each mutation keeps an item to reuse
        cut = split_document(body, max_items=ENTRY_LIMIT)
        assert isinstance(cut, Split)
        kept = {"added at the top", "reordered", "header edited"}
        assert set(reused) >= kept | (
            {"one edited", "one removed"} if len(cut.items) > 1 else set()
        )


def test_most_real_documents_are_read_in_part():
    """The check above is not vacuous: the project's plain documents are cut and reused."""
    taken = [p for p in DOCUMENTS if "unchanged" in check_document(p.read_bytes(), _headers(p))]
    assert len(taken) >= len(DOCUMENTS) // 2, taken


# -- 3 new of 50 ---------------------------------------------------------------------------


def _story(k: int, *, undated: bool = False) -> str:
    date = "" if undated else f"<pubDate>{format_datetime(NOW - timedelta(hours=k))}</pubDate>"
    return (
        f"<item><title>Story {k}</title><link>https://a.example.org/{k}</link>"
        f"<guid>tag:a,{k}</guid>{date}<description>&lt;p&gt;Text {k}&lt;/p&gt;</description></item>"
    )


def _channel(items: list[str], *, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>A</title><link>https://a.example.org/</link>{extra}\n"
        + "\n".join(items)
        + "\n</channel></rss>\n"
    ).encode()


def test_three_new_items_of_fifty_are_the_only_ones_parsed():
    before = _channel([_story(k) for k in range(3, 53)])
    after = _channel([_story(k) for k in range(0, 50)])
    chain = Chain(HEADERS)
    first = chain.poll(before)
    assert first is not None and first.items_parsed == 50 and first.memory is not None
    second = chain.poll(after)
    assert second is not None
    assert (second.items_parsed, second.items_reused) == (3, 47)
    assert [e.title for e in second.entries] == ["Story 0", "Story 1", "Story 2"]
    assert len(second.reused) == 47


def test_undated_new_items_keep_their_document_order_among_themselves():
    before = _channel([_story(k, undated=True) for k in range(3, 10)])
    after = _channel([_story(k, undated=True) for k in (0, 3, 1, 4, 2, *range(5, 10))])
    chain = Chain(HEADERS)
    chain.poll(before)
    got = chain.poll(after)
    assert got is not None and [e.title for e in got.entries] == ["Story 0", "Story 1", "Story 2"]


# -- when the memory cannot be trusted, the document is parsed whole ------------------------


def _whole(
    got: ParsedFeed,
    body: bytes,
    headers: dict[str, str] = HEADERS,
    url: str = "https://feeds.example.org/a",
    timezone: str = "UTC",
) -> None:
    whole = parse_feed(body, headers, url, timezone=timezone)
    assert got.entries == whole.entries and got.reused == () and got.items_reused == 0
    assert got.items_parsed == whole.items_parsed


BEFORE = _channel([_story(k) for k in range(1, 6)])


def _memory(body: bytes = BEFORE, **kw):
    first = parse_changed(body, HEADERS, kw.pop("url", "https://feeds.example.org/a"), **kw)
    assert first.memory is not None
    return first.memory


@pytest.mark.parametrize(
    ("case", "after"),
    [
        # A new item that is not well-formed: the whole document may read differently.
        (
            "ill-formed new item",
            _channel(
                ["<item><title>&nbsp;broken</title></item>"] + [_story(k) for k in range(1, 6)]
            ),
        ),
        # The feed's own link is the base of relative links in every item.
        (
            "feed link changed",
            BEFORE.replace(b"https://a.example.org/</link>", b"https://b.example.org/</link>"),
        ),
        # A new item with the guid of an unchanged one: which keeps the plain id depends on both.
        (
            "guid repeated",
            _channel(
                [_story(5).replace("Story 5", "Story 5 again")] + [_story(k) for k in range(1, 6)]
            ),
        ),
        # The frame: the channel's start tag encloses every item.
        ("channel start tag changed", BEFORE.replace(b"<channel>", b'<channel xml:lang="hi">')),
        (
            "declaration changed",
            BEFORE.replace(b'version="1.0" encoding="utf-8"', b'version="1.0"'),
        ),
    ],
)
def test_a_document_whose_unchanged_items_may_read_differently_is_parsed_whole(case, after):
    got = parse_changed(after, HEADERS, "https://feeds.example.org/a", memory=_memory())
    _whole(got, after)


def test_another_url_time_zone_media_type_or_parser_version_parses_whole(monkeypatch):
    memory = _memory()
    _whole(
        parse_changed(BEFORE, HEADERS, "https://feeds.example.org/b", memory=memory),
        BEFORE,
        url="https://feeds.example.org/b",
    )
    _whole(
        parse_changed(
            BEFORE, HEADERS, "https://feeds.example.org/a", timezone="Asia/Kolkata", memory=memory
        ),
        BEFORE,
        timezone="Asia/Kolkata",
    )
    _whole(
        parse_changed(BEFORE, XML, "https://feeds.example.org/a", memory=memory),
        BEFORE,
        headers=XML,
    )
    monkeypatch.setattr(partial_module, "_REVISION", "aggregator 0.2.0/1, feedparser 6.0.14")
    _whole(parse_changed(BEFORE, HEADERS, "https://feeds.example.org/a", memory=memory), BEFORE)


def test_a_parse_that_reads_a_document_whole_leaves_no_memory_when_it_must_be_whole_again():
    repeated = _channel([_story(1), _story(1)])  # a guid twice
    warned = _channel(["<item><title>&nbsp;</title><guid>x</guid></item>", _story(1)])
    trailing = _channel([_story(1)]) + b"text after the root element"
    for body in (repeated, warned, trailing):
        assert parse_changed(body, HEADERS, "https://feeds.example.org/a").memory is None


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_refused_shape_is_parsed_whole(case):
    body, _ = REFUSED[case]
    memory = _memory(_channel(["<item><title>One</title><guid>1</guid></item>"]))
    try:
        whole = parse_feed(body, HEADERS, "https://feeds.example.org/a")
    except ParseError as e:  # not a feed at all: the partial path says the same
        with pytest.raises(ParseError, match=re.escape(str(e))):
            parse_changed(body, HEADERS, "https://feeds.example.org/a", memory=memory)
        return
    got = parse_changed(body, HEADERS, "https://feeds.example.org/a", memory=memory)
    assert got.entries == whole.entries and got.memory is None and got.items_reused == 0


def test_feed_elements_after_the_items_are_read_with_every_part():
    """The tail follows every item, so even a namespace declared there changes none."""
    tail = '<ttl>60</ttl><x:a xmlns:x="http://x.example.org/">1</x:a>'
    chain = Chain(HEADERS)
    chain.poll(_channel([_story(k) for k in range(1, 6)] + [tail]))
    got = chain.poll(_channel([_story(k) for k in range(0, 6)] + [tail]))
    assert got is not None and (got.items_parsed, got.items_reused) == (1, 5)
    assert got.lifetime == timedelta(minutes=60)


# -- generated feeds, edited at random -------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One generated item."""

    serial: int
    title: str
    guid: str | None
    link: str | None  # relative ones are resolved against the feed's link
    published: datetime | None
    updated: datetime | None
    body: str
    cdata: bool


TEXT = st.text(st.sampled_from("ab é&<>\"'क्ष"), max_size=12)
MOMENTS = st.one_of(
    st.none(), st.integers(-48, 48).map(lambda h: NOW + timedelta(hours=h))
)  # some in the future


@st.composite
def specs(draw: st.DrawFn, serial: int) -> Spec:
    has_guid = draw(st.booleans())
    return Spec(
        serial=serial,
        title=draw(TEXT),
        guid=draw(st.sampled_from([f"g{serial}", "g-shared"])) if has_guid else None,
        link=draw(st.sampled_from([None, f"/story/{serial}", f"https://a.example.org/{serial}"])),
        published=draw(MOMENTS),
        updated=draw(MOMENTS),
        body=draw(TEXT),
        cdata=draw(st.booleans()),
    )


def _rss_item(s: Spec) -> str:
    parts = [f"<title>{escape(s.title)}</title>"]
    if s.link:
        parts.append(f"<link>{escape(s.link)}</link>")
    if s.guid:
        parts.append(f'<guid isPermaLink="false">{escape(s.guid)}</guid>')
    if s.published:
        parts.append(f"<pubDate>{format_datetime(s.published)}</pubDate>")
    if s.updated:
        parts.append(f"<atom:updated>{s.updated.isoformat()}</atom:updated>")
    body = (
        f"<![CDATA[<p>{s.body.replace(']]>', '')}</p>]]>" if s.cdata else escape(f"<p>{s.body}</p>")
    )
    parts.append(f"<description>{body}</description>")
    return "<item>" + "".join(parts) + "</item>"


def _atom_entry(s: Spec) -> str:
    parts = [f'<title type="html">{escape(s.title)}</title>']
    if s.guid:
        parts.append(f"<id>{escape(s.guid)}</id>")
    if s.link:
        parts.append(f"<link href={quoteattr(s.link)}/>")
    if s.published:
        parts.append(f"<published>{s.published.isoformat()}</published>")
    if s.updated:
        parts.append(f"<updated>{s.updated.isoformat()}</updated>")
    if s.cdata:
        parts.append(
            '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
            f"<p>{escape(s.body)}</p></div></content>"
        )
    else:
        parts.append(f'<summary type="html">{escape(f"<p>{s.body}</p>")}</summary>')
    return "<entry>" + "".join(parts) + "</entry>"


def _document(atom: bool, items: list[Spec]) -> bytes:
    if atom:
        head = (
            '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
            '<title>G</title><id>tag:g</id><link href="https://a.example.org/"/>\n'
        )
        return (head + "\n".join(map(_atom_entry, items)) + "\n</feed>\n").encode()
    head = (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:atom="http://www.w3.org/2005/Atom"><channel><title>G</title>'
        "<link>https://a.example.org/</link>\n"
    )
    return (head + "\n".join(map(_rss_item, items)) + "\n</channel></rss>\n").encode()


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["add", "edit", "remove", "move", "retitle-all"]), st.integers(0, 30)
    ),
    max_size=4,
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[bool, list[list[Spec]]]:
    """A feed's successive item lists: each the last one with a few random edits."""
    serial = 0
    items = []
    for _ in range(draw(st.integers(1, 8))):
        serial += 1
        items.append(draw(specs(serial)))
    history = [list(items)]
    for _ in range(draw(st.integers(1, 3))):
        for action, where in draw(EDITS):
            at = where % (len(items) + 1)
            if action == "add" or not items:
                serial += 1
                items.insert(at, draw(specs(serial)))
            elif action == "edit":
                index = at % len(items)
                items[index] = replace(items[index], title=draw(TEXT), body=draw(TEXT))
            elif action == "remove":
                items.pop(at % len(items))
            elif action == "move":
                items.insert(draw(st.integers(0, len(items) - 1)), items.pop(at % len(items)))
            else:
                items = [replace(i, title=i.title + "!") for i in items]
        history.append(list(items))
    return draw(st.booleans()), history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_generated_feeds_edited_at_random_parse_partly_as_they_do_whole(history):
    atom, versions = history
    chain = Chain(HEADERS)
    for items in versions:
        chain.poll(_document(atom, items))
    event("some items reused" if chain.reused else "parsed whole throughout")


def test_generated_histories_do_reuse_items():
    """The property above is not vacuous: a plain history reuses most items."""
    items = [Spec(k, f"t{k}", f"g{k}", f"/s/{k}", NOW, None, "b", k % 2 == 0) for k in range(6)]
    for atom in (False, True):
        chain = Chain(HEADERS)
        chain.poll(_document(atom, items))
        chain.poll(_document(atom, [Spec(9, "new", "g9", None, None, None, "x", False), *items]))
        assert chain.reused == 6

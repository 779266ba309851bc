"""render.feeds writes a feed document one entry at a time: the same bytes as feedgen's
document built with every entry in its tree, for any timeline."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.archive import ArchiveDay
from aggregator.render import ATOM_FILE, RSS_FILE
from aggregator.render import feeds as render_feeds
from aggregator.render.feeds import render_archive, render_atom, render_rss
from aggregator.settings import SiteSettings
from aggregator.types import Timeline, TimelineItem
from tests.test_jsonfeed import AMAR, BBC, LOCAL, SITE, T0, item

# Text as items carry it: any character XML allows, markup and newlines among them.
TEXT = st.lists(
    st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),
        st.sampled_from(["\n", "\t", "\r", "&", "<", ">", "]]>", "&amp;", "ख़बर", "😀"]),
    ),
    max_size=20,
).map("".join)
SOURCES = st.sampled_from([BBC, LOCAL, AMAR])


@st.composite
def items(draw: st.DrawFn, n: int) -> TimelineItem:
    return item(
        f"urn:x:{n}",
        title=draw(TEXT),
        link=draw(st.none() | st.just(f"https://www.bbc.com/hindi/articles/{n}")),
        summary_html=draw(TEXT),
        teaser=draw(TEXT),
        author=draw(st.none() | TEXT.filter(bool)),
        categories=tuple(draw(st.lists(TEXT.filter(bool), max_size=3))),
        published=T0 - timedelta(minutes=n),
        source=draw(SOURCES),
        also=tuple(draw(st.lists(SOURCES, max_size=2, unique=True))),
    )


@st.composite
def timelines(draw: st.DrawFn) -> Timeline:
    count = draw(st.integers(0, 8))
    return Timeline(items=tuple(draw(items(n)) for n in range(count)), updated=T0)


def _whole(site: SiteSettings, timeline: Timeline, self_url: str, **kwargs: object) -> object:
    """feedgen's generator with every entry added: how the documents were made before."""
    fg = render_feeds._generator(site, timeline, self_url, **kwargs)  # type: ignore[arg-type]
    full = render_feeds.with_full_content(timeline.items)
    for each, whole in zip(timeline.items, full, strict=True):
        fg.add_entry(render_feeds._entry(each, full_content=whole), order="append")
    return fg


@settings(max_examples=150, deadline=None)
@given(timelines(), st.sampled_from([(), ("https://hub.example/",)]), st.booleans())
def test_atom_and_rss_are_feedgens_documents_byte_for_byte(
    timeline: Timeline, hubs: tuple[str, ...], archived: bool
) -> None:
    site = dataclasses.replace(SITE, hubs=hubs)
    newest = date(2025, 7, 12) if archived else None
    links = (("prev-archive", render_feeds.archive_url(site, newest)),) if newest else ()
    atom = _whole(site, timeline, site.base_url + ATOM_FILE, links=links)
    assert render_atom(timeline, site, newest) == atom.atom_str(pretty=True, encoding="UTF-8")  # type: ignore[attr-defined]
    rss = _whole(site, timeline, site.base_url + RSS_FILE)
    expected = render_feeds._plain_text_references(rss.rss_str(pretty=True, encoding="UTF-8"))  # type: ignore[attr-defined]
    assert render_rss(timeline, site) == expected


@settings(max_examples=50, deadline=None)
@given(timelines())
def test_an_archive_document_is_feedgens_byte_for_byte(timeline: Timeline) -> None:
    day = ArchiveDay(date(2025, 7, 13), timeline, date(2025, 7, 12), None)
    links = [
        ("current", SITE.base_url + ATOM_FILE),
        ("prev-archive", render_feeds.archive_url(SITE, date(2025, 7, 12))),
    ]
    fg = _whole(
        SITE,
        timeline,
        render_feeds.archive_url(SITE, day.day),
        title=f"{SITE.title} · 2025-07-13",
        links=links,
        hubs=(),
    )
    fg.register_extension("history", render_feeds._ArchiveFeed, None, rss=False)  # type: ignore[attr-defined]
    assert render_archive(day, SITE) == fg.atom_str(pretty=True, encoding="UTF-8")  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", ["elements only", "mixed content", "nothing before"])
def test_any_tree_is_serialized_as_a_whole_would_be(shape: str) -> None:
    """`_document` on trees feedgen does not make: text beside the elements (libxml2 then
    does not indent them), and a parent with no children before (its empty serialization is
    `<feed/>`, which the split cannot use: the whole tree is serialized instead)."""

    def tree() -> Any:
        root = etree.Element("feed")
        if shape != "nothing before":
            etree.SubElement(root, "id").text = "urn:x"
        if shape == "mixed content":
            root[0].tail = "text\n"
        return root

    def entries() -> list[Any]:
        made = []
        for n in range(3):
            entry = etree.Element("entry")
            etree.SubElement(entry, "title").text = f"ख़बर {n}\n  <&>"
            made.append(entry)
        return made

    whole = tree()
    for entry in entries():
        whole.append(entry)
    expected = etree.tostring(
        whole.getroottree(), pretty_print=True, encoding="UTF-8", xml_declaration=True
    )
    streamed = tree()
    assert render_feeds._document(streamed, streamed, entries()) == expected


def test_an_iri_base_url_gives_an_atom_id_that_is_a_uri() -> None:
    """With `base_url = "https://समाचार.example/हिंदी/"`, the self link was a URI and the id
    the IRI as written: the W3C validator's "IRI found where URL expected", in every Atom
    document (the main one, each channel's, every archive day)."""
    site = dataclasses.replace(SITE, base_url="https://समाचार.example/हिंदी/")
    timeline = Timeline((item("urn:one", title="एक", source=AMAR),), T0)
    for document in (
        render_atom(timeline, site, None),
        render_archive(ArchiveDay(date(2025, 7, 13), timeline, None, None), site),
    ):
        root = etree.fromstring(document)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        feed_id = str(root.findtext("a:id", namespaces=ns))
        self_link = str(root.find("a:link[@rel='self']", namespaces=ns).get("href"))  # type: ignore[union-attr]
        assert feed_id == self_link and feed_id.isascii(), (feed_id, self_link)
        assert feed_id.startswith("https://xn--61b3bh3a5ab.example/%E0%A4%B9")

"""Our sources as an OPML 2.0 subscription list (`sources.opml`): pure and deterministic.

Sources are grouped by tag, the way feed readers import folders: each source sits once, in
an outline named for its first tag (sources without tags follow at the top level), and its
`category` attribute lists all its tags (OPML 2.0: comma-separated, a tag being a category
without slashes). Nesting is what readers import (Feedly, Inoreader, Miniflux, FreshRSS,
NetNewsWire, Thunderbird all turn folders into their folders or categories); few read
`category`. A source under each of its tags would be subscribed twice, or refused as a
duplicate, by the readers that keep one folder per feed; `category` carries the rest, which
`import-opml` reads back into tags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lxml import etree

from aggregator.settings import SiteSettings
from aggregator.text import web_url
from aggregator.types import SourceCredit
from aggregator.urls import as_uri, public_url

OPML_DOCS = "http://opml.org/spec2.opml"


def render_opml(
    sources: Sequence[SourceCredit],
    site: SiteSettings,
    tags: Mapping[str, Sequence[str]] | None = None,
) -> bytes:
    """An OPML 2.0 list of `sources`, grouped by their `tags` (by source name), in the order
    given; local (non-http) sources are left out."""
    tags = tags or {}
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = site.title
    etree.SubElement(head, "docs").text = OPML_DOCS
    body = etree.SubElement(root, "body")
    listed = [s for s in sources if web_url(s.feed_url)]
    folders: dict[str, etree._Element] = {}
    for source in listed:  # the folders first, in the order their tags first appear
        if (own := tags.get(source.name)) and own[0] not in folders:
            folders[own[0]] = etree.SubElement(body, "outline", text=own[0], title=own[0])
    for source in listed:
        own = tags.get(source.name) or ()
        _feed_outline(folders[own[0]] if own else body, source, own)
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data


def _feed_outline(parent: etree._Element, source: SourceCredit, tags: Sequence[str]) -> None:
    outline = etree.SubElement(parent, "outline")
    outline.set("type", "rss")
    outline.set("text", source.title)
    outline.set("title", source.title)
    # Published to readers: never the user info or ?token=... the source is fetched with.
    outline.set("xmlUrl", as_uri(public_url(source.feed_url)))
    if source.site_url and web_url(source.site_url):
        outline.set("htmlUrl", as_uri(public_url(source.site_url)))
    if categories := [t for t in tags if "," not in t]:  # a comma would split a tag in two
        outline.set("category", ",".join(categories))

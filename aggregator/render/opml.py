"""Our sources as an OPML 2.0 subscription list (`sources.opml`): pure and deterministic."""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from aggregator.settings import SiteSettings
from aggregator.text import web_url
from aggregator.types import SourceCredit
from aggregator.urls import public_url

OPML_DOCS = "http://opml.org/spec2.opml"


def render_opml(sources: Sequence[SourceCredit], site: SiteSettings) -> bytes:
    """An OPML 2.0 list of `sources` in the order given; local (non-http) sources are left out."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = site.title
    etree.SubElement(head, "docs").text = OPML_DOCS
    body = etree.SubElement(root, "body")
    for source in sources:
        if not web_url(source.feed_url):
            continue
        outline = etree.SubElement(body, "outline")
        outline.set("type", "rss")
        outline.set("text", source.title)
        outline.set("title", source.title)
        # Published to readers: never the user info or ?token=... the source is fetched with.
        outline.set("xmlUrl", public_url(source.feed_url))
        if source.site_url and web_url(source.site_url):
            outline.set("htmlUrl", public_url(source.site_url))
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data

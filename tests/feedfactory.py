"""Real RSS 2.0, Atom 1.0, RSS 1.0 and JSON Feed documents from plain item specs, for tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class Item:
    title: str
    link: str
    guid: str
    date: datetime
    summary_html: str = ""
    author: str | None = None
    categories: tuple[str, ...] = ()
    updated: datetime | None = None


def rss2(
    title: str, link: str, items: list[Item], *, language: str = "hi", encoding: str = "utf-8"
) -> bytes:
    out = [
        f'<?xml version="1.0" encoding="{encoding}"?>',
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>',
        f"<title>{escape(title)}</title><link>{escape(link)}</link>",
        f"<description>{escape(title)}</description><language>{language}</language>",
    ]
    for i in items:
        out.append("<item>")
        out.append(f"<title>{escape(i.title)}</title><link>{escape(i.link)}</link>")
        out.append(f'<guid isPermaLink="false">{escape(i.guid)}</guid>')
        out.append(f"<pubDate>{format_datetime(i.date)}</pubDate>")
        if i.summary_html:
            out.append(f"<description>{escape(i.summary_html)}</description>")
        if i.author:
            out.append(f"<dc:creator>{escape(i.author)}</dc:creator>")
        out.extend(f"<category>{escape(c)}</category>" for c in i.categories)
        out.append("</item>")
    out.append("</channel></rss>")
    return "\n".join(out).encode(encoding)


def atom(title: str, link: str, feed_id: str, items: list[Item]) -> bytes:
    newest = max((i.updated or i.date for i in items), default=datetime(2025, 1, 1))
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"<title>{escape(title)}</title><id>{escape(feed_id)}</id>",
        f'<link rel="alternate" href={quoteattr(link)}/><updated>{newest.isoformat()}</updated>',
    ]
    for i in items:
        out.append("<entry>")
        out.append(f"<title>{escape(i.title)}</title><id>{escape(i.guid)}</id>")
        out.append(f'<link rel="alternate" href={quoteattr(i.link)}/>')
        out.append(f"<published>{i.date.isoformat()}</published>")
        out.append(f"<updated>{(i.updated or i.date).isoformat()}</updated>")
        if i.summary_html:
            out.append(f'<summary type="html">{escape(i.summary_html)}</summary>')
        if i.author:
            out.append(f"<author><name>{escape(i.author)}</name></author>")
        out.extend(f"<category term={quoteattr(c)}/>" for c in i.categories)
        out.append("</entry>")
    out.append("</feed>")
    return "\n".join(out).encode("utf-8")


def rss1(title: str, link: str, items: list[Item]) -> bytes:
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
        ' xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">',
        f"<channel rdf:about={quoteattr(link)}><title>{escape(title)}</title>",
        f"<link>{escape(link)}</link><description>{escape(title)}</description>",
        "<items><rdf:Seq>",
        *(f"<rdf:li rdf:resource={quoteattr(i.link)}/>" for i in items),
        "</rdf:Seq></items></channel>",
    ]
    for i in items:
        out.append(f"<item rdf:about={quoteattr(i.link)}>")
        out.append(f"<title>{escape(i.title)}</title><link>{escape(i.link)}</link>")
        out.append(f"<dc:date>{i.date.isoformat()}</dc:date>")
        if i.summary_html:
            out.append(f"<description>{escape(i.summary_html)}</description>")
        if i.author:
            out.append(f"<dc:creator>{escape(i.author)}</dc:creator>")
        out.append("</item>")
    out.append("</rdf:RDF>")
    return "\n".join(out).encode("utf-8")


def json_feed(
    title: str, link: str, items: list[Item], *, version: str = "1.1", language: str = "hi"
) -> bytes:
    """The same items as a JSON Feed: 1.1 (`authors`, `language`) or 1.0 (`author`)."""
    document: dict[str, object] = {
        "version": f"https://jsonfeed.org/version/{version}",
        "title": title,
        "home_page_url": link,
    }
    if version == "1.1":
        document["language"] = language
    entries = []
    for i in items:
        entry: dict[str, object] = {
            "id": i.guid,
            "url": i.link,
            "title": i.title,
            "date_published": i.date.isoformat(),
        }
        if i.updated:
            entry["date_modified"] = i.updated.isoformat()
        if i.summary_html:
            entry["content_html"] = i.summary_html
        if i.author and version == "1.1":
            entry["authors"] = [{"name": i.author}]
        elif i.author:
            entry["author"] = {"name": i.author}
        if i.categories:
            entry["tags"] = list(i.categories)
        entries.append(entry)
    document["items"] = entries
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")

"""Where a source's hub is, and what its topic is called: WebSub §4 (discovery). Pure.

HTTP `Link` headers come first (`<https://hub.example/>; rel="hub"`), then the document's
own `<atom:link rel="hub">` and `rel="self"` (Atom, and RSS with the Atom namespace). A hub
URL comes from a feed, so it is untrusted: only an absolute http(s) URL of bounded length
is taken (where it may point is the subscriber's to check, it needs DNS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from aggregator.types import ParsedFeed

URL_LIMIT = 2_048  # a longer hub or topic URL is no URL
HEADER_LIMIT = 16_384  # of a Link header read: a longer one is read this far


@dataclass(frozen=True)
class Discovery:
    """What one response said about WebSub: its hub (None: it names none) and its topic,
    the URL it calls itself (`rel="self"`; None: unnamed, the fetched URL stands in)."""

    hub: str | None
    topic: str | None = None


def _http_url(href: str, base: str) -> str | None:
    """`href` resolved against `base`, if it is an http(s) URL of bounded length."""
    if not href or len(href) > URL_LIMIT:
        return None
    try:
        url = urljoin(base, href.strip())
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > URL_LIMIT:
        return None
    return url.split("#", 1)[0]


def link_header_links(value: str) -> list[tuple[str, frozenset[str]]]:
    """(target, its rel values) of each link in a `Link` header (RFC 8288), in order.

    One linear scan: commas inside `<…>` or quotes do not split links.
    """
    links: list[tuple[str, frozenset[str]]] = []
    for part in _split_outside(value[:HEADER_LIMIT], ","):
        target, _, params = part.strip().partition(">")
        if not target.startswith("<"):
            continue
        rels: frozenset[str] = frozenset()
        for param in _split_outside(params, ";"):
            name, _, raw = param.strip().partition("=")
            if name.strip().lower() == "rel":
                rels = frozenset(raw.strip().strip('"').lower().split())
        links.append((target[1:].strip(), rels))
    return links


def _split_outside(text: str, separator: str) -> list[str]:
    """`text` split at `separator`, except inside `<…>` or double quotes."""
    parts, start, angle, quoted = [], 0, False, False
    for index, char in enumerate(text):
        if char == '"' and not angle:
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == separator and not angle and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _first(links: Iterable[tuple[str, frozenset[str]]], rel: str, base: str) -> str | None:
    for href, rels in links:
        if rel in rels and (url := _http_url(href, base)) is not None:
            return url
    return None


def from_headers(headers: Mapping[str, str], base: str) -> Discovery | None:
    """The hub and topic a response's `Link` header names; None when it names no hub."""
    links = link_header_links(headers.get("link", ""))
    hub = _first(links, "hub", base)
    return None if hub is None else Discovery(hub, _first(links, "self", base))


def feed_links(links: object, base: str) -> tuple[str | None, str | None]:
    """(hub, self) among a parsed feed's links (feedparser's `feed.links`), resolved
    against `base`, the document's URL."""
    if not isinstance(links, list):
        return None, None
    pairs = [
        (link.get("href") or "", frozenset(str(link.get("rel") or "").lower().split()))
        for link in links[:100]
        if isinstance(link, Mapping) and isinstance(link.get("href"), str)
    ]
    return _first(pairs, "hub", base), _first(pairs, "self", base)


def json_feed_links(document: Mapping[str, object], base: str) -> tuple[str | None, str | None]:
    """(hub, self) of a JSON Feed: its first `hubs` entry of type "WebSub" (any case),
    and its `feed_url`, resolved against `base`, the document's URL."""
    hubs = document.get("hubs")
    pairs = [
        (hub["url"], frozenset({"hub"}))
        for hub in (hubs[:100] if isinstance(hubs, list) else ())
        if isinstance(hub, Mapping)
        and isinstance(hub.get("url"), str)
        and str(hub.get("type", "")).lower() == "websub"
    ]
    feed_url = document.get("feed_url")
    if isinstance(feed_url, str):
        pairs.append((feed_url, frozenset({"self"})))
    return _first(pairs, "hub", base), _first(pairs, "self", base)


def discover(headers: Mapping[str, str], feed: ParsedFeed | None, base: str) -> Discovery | None:
    """What a poll learned: the `Link` header first, then the parsed feed (a `ParsedFeed`,
    or None when the body was not parsed: a 304, the same bytes as last time).

    None: nothing learned (no header hub and no parse), so a subscription stays as it is.
    `Discovery(None)`: the feed was read and names no hub.
    """
    found = from_headers(headers, base)
    if found is not None:
        if found.topic is None and feed is not None and feed.hub == found.hub:
            return Discovery(found.hub, feed.self_url)
        return found
    if feed is None:
        return None
    return Discovery(feed.hub, feed.self_url if feed.hub else None)

"""Find the feed behind a URL: the URL itself if it is a feed, else what its HTML page links to.

Feed autodiscovery reads `<link rel="alternate" type="..." href="...">` in an HTML page
(https://www.rssboard.org/rss-autodiscovery). Atom is preferred, then RSS, then JSON Feed
(`application/feed+json`, or `application/json` titled as a JSON Feed); in each kind the
first link in the page wins. Hrefs are resolved against the page's final URL
(or its `<base href>`), and only http(s) results are accepted.

The feed found is always fetched and parsed before it is returned: `aggregator add` must not
write a source into feeds.toml that answers 404 or is not a feed (a page's stale `<link>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from lxml import etree, html

from aggregator.errors import DiscoveryError, ParseError
from aggregator.fetch import Fetcher
from aggregator.parse.feed import header_charset, parse_feed
from aggregator.types import Failed, Fetched, ParsedFeed

# In order of preference.
FEED_TYPES = ("application/atom+xml", "application/rss+xml", "application/feed+json")
# Plain `application/json` alternates are mostly not feeds (WordPress links every page to its
# REST API this way): one counts, after every other kind, only when its title says JSON Feed.
_JSON = "application/json"
_JSON_FEED_TITLE = re.compile(r"json\s*feed", re.IGNORECASE)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class FoundFeed:
    """A feed that was fetched and parsed: where it is, its own title, the page that led to it."""

    url: str  # where it is now: permanent redirects followed
    title: str | None
    page: str | None = None  # the HTML page whose <link rel="alternate"> named it, if any


def _parsed(page: Fetched) -> ParsedFeed | ParseError:
    """The document as a feed, or why it is not one (a value: not being a feed is expected)."""
    try:
        return parse_feed(page.body, page.headers, page.final_url)
    except ParseError as e:
        return ParseError(" ".join(str(e).split()))  # one line: it ends up in one error line


def _charset(page: Fetched) -> str | None:
    return header_charset(page.headers.get("content-type", ""))


def _looks_like_html(page: Fetched) -> bool:
    content_type = page.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _HTML_TYPES:
        return True
    start = page.body.lstrip()[:1024].lower()
    return start.startswith(b"<!doctype html") or b"<html" in start


def feed_links(body: bytes, page_url: str, charset: str | None = None) -> list[str]:
    """The feeds an HTML page links to, best first: Atom, RSS, JSON Feed, each in page order."""
    try:
        parser = html.HTMLParser(no_network=True, encoding=charset)
    except LookupError:  # an unknown charset in Content-Type: let lxml guess
        parser = html.HTMLParser(no_network=True)
    try:
        document = html.document_fromstring(body, parser=parser)
    except (etree.ParserError, ValueError):
        return []
    base = page_url
    for element in document.iter("base"):
        href = (element.get("href") or "").strip()
        if href:
            base = urljoin(page_url, href)
            break
    found: dict[str, list[str]] = {kind: [] for kind in (*FEED_TYPES, _JSON)}
    for link in document.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").split(";")[0].strip().lower()
        href = (link.get("href") or "").strip()
        if kind == _JSON and not _JSON_FEED_TITLE.search(link.get("title") or ""):
            continue
        if "alternate" not in rel or kind not in found or not href:
            continue
        url = urljoin(base, href).split("#")[0]
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname and url not in found[kind]:
            found[kind].append(url)
    return [url for kind in (*FEED_TYPES, _JSON) for url in found[kind]]


async def _fetched(url: str, fetcher: Fetcher, what: str) -> Fetched:
    outcome = await fetcher.fetch(url)
    if isinstance(outcome, Failed):
        raise DiscoveryError(f"cannot fetch {what}: {outcome.error}")
    if not isinstance(outcome, Fetched):  # NotModified: impossible without validators
        raise DiscoveryError(f"cannot fetch {what}: the server sent no content")
    return outcome


async def discover_feed(url: str, fetcher: Fetcher) -> FoundFeed:
    """The feed at `url` (or where it permanently moved), else the best feed its HTML page
    links to, fetched and parsed either way. Raises `DiscoveryError`, one line, otherwise."""
    outcome = await _fetched(url, fetcher, url)
    parsed = _parsed(outcome)
    if isinstance(parsed, ParsedFeed):
        return FoundFeed(outcome.permanent_redirect or url, parsed.title)
    if _looks_like_html(outcome):
        links = feed_links(outcome.body, outcome.final_url, _charset(outcome))
        if links:
            return await _linked_feed(links[0], url, fetcher)
        raise DiscoveryError(
            f'no feed found at {url}: the page has no <link rel="alternate"> to an RSS, Atom'
            " or JSON feed"
        )
    content_type = outcome.headers.get("content-type", "").split(";")[0].strip() or "unknown"
    raise DiscoveryError(
        f"no feed found at {url}: it is neither a feed nor an HTML page (content type "
        f"{content_type}): {parsed}"
    )


async def _linked_feed(link: str, page: str, fetcher: Fetcher) -> FoundFeed:
    """The feed a page's `<link>` names, checked: a stale link is the page's mistake, and
    adding it would give a source that fails on every poll."""
    what = f"the feed {link} that {page} links to"
    outcome = await _fetched(link, fetcher, what)
    parsed = _parsed(outcome)
    if isinstance(parsed, ParseError):
        raise DiscoveryError(f"{what} is not a feed: {parsed}")
    return FoundFeed(outcome.permanent_redirect or link, parsed.title, page)

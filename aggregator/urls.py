"""Source URLs as they may be shown: without user info or credential-like query parameters.

A source URL such as `https://user:pw@host/feed?token=abc` is used in full only to fetch (and
kept in the store, which stays on this machine). Everything that leaves the machine or lands
in a log uses one of these instead:

- `public_url`: user info and credential parameters removed, so the result is still a valid
  URL to publish (feeds, OPML, HTML, source names).
- `redact_url` / `redact_urls`: the same parts replaced by `***`, so an operator reading a
  log line or `status` (pasted into a bug report) sees that something was hidden.

Pure and linear in its input; the rest of the URL is kept byte for byte, so a URL without
secrets comes out unchanged.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote_plus

MASK = "***"

# A parameter is credential-like when one of its words (split on `_ - . [ ]`, spaces and
# camelCase, then lower-cased) is one of these...
SECRET_WORDS = frozenset(
    {
        "token", "tokens", "key", "keys", "apikey", "secret", "secrets", "password", "passwords",
        "passwd", "pwd", "pass", "passphrase", "passkey", "auth", "authorization", "sig",
        "signature", "session", "sessid", "sessionid", "jsessionid", "phpsessid", "credential",
        "credentials", "jwt",
    }
)  # fmt: skip
# ...or starts with one of these (`tokenid`, `secretkey`, `sessionkey`)...
_SECRET_STARTS = ("token", "secret", "password", "passwd", "session", "credential", "signature")
# ...or ends with one of these, whatever precedes it (`accesstoken`, `clientsecret`)...
_SECRET_ENDS = ("token", "secret", "password", "passwd", "signature", "credential", "credentials")
# ...or is one of these qualifiers glued to `key`, `sig`, `auth`, `pwd` or `pass` (`apikey`,
# `authkey`), which alone end too many words (`monkey`, `compass`) to be matched anywhere.
_QUALIFIERS = frozenset(
    {
        "access", "account", "api", "app", "auth", "bearer", "client", "consumer", "csrf",
        "feed", "id", "license", "login", "master", "oauth", "pass", "private", "refresh",
        "secret", "security", "session", "sign", "user", "xsrf",
    }
)  # fmt: skip
_AMBIGUOUS_ENDS = ("key", "sig", "auth", "pwd", "pass")

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# A URL inside free text: a scheme at the start of a word, "://", then up to a space, "<",
# ">" or a double quote. Not up to a single quote: it may be part of a password, and a URL
# quoted 'like this' (httpx's messages) gets its closing quote back in `redact_urls`. The
# look-behind lets only the first letter of a word start a match, so the search stays
# linear however long a run of letters is.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"]+")


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter's name says its value is a credential (see `SECRET_WORDS`)."""
    for found in _WORD.findall(unquote_plus(name)):
        word = found.lower()
        if word in SECRET_WORDS or word.startswith(_SECRET_STARTS) or word.endswith(_SECRET_ENDS):
            return True
        for end in _AMBIGUOUS_ENDS:
            if word.endswith(end) and word[: -len(end)] in _QUALIFIERS:
                return True
    return False


def public_url(url: str) -> str:
    """`url` with its user info and credential-like query parameters removed."""
    return _clean(url, mask=None)


def redact_url(url: str) -> str:
    """`url` with its user info and credential-like parameter values replaced by `***`."""
    return _clean(url, mask=MASK)


def redact_urls(text: str) -> str:
    """`text` (a log line, an error message) with every URL in it passed through `redact_url`."""
    if "://" not in text:
        return text

    def redact(match: re.Match[str]) -> str:
        url = match.group(0)
        quoted = match.start() > 0 and text[match.start() - 1] == "'" and url.endswith("'")
        return redact_url(url[:-1]) + "'" if quoted else redact_url(url)

    return _URL_IN_TEXT.sub(redact, text)


def entry_link(link: str | None, feed_url: str) -> str | None:
    """An entry's link as published: the publisher's own, left alone, unless it points at the
    source's feed URL (secrets aside), which the source was fetched with: then `public_url`."""
    if not link:
        return link
    public_feed, last_segment = _feed_url_parts(feed_url)
    # Called for every item of every render: most links are told apart by a substring test.
    if link == feed_url or (last_segment in link and public_url(link) == public_feed):
        return public_url(link)
    return link


@functools.lru_cache(maxsize=1024)
def _feed_url_parts(feed_url: str) -> tuple[str, str]:
    """A source's public feed URL, and the last segment of its path (in any link equal to it)."""
    public = public_url(feed_url)
    return public, public.partition("#")[0].partition("?")[0].rpartition("/")[2]


def _clean(url: str, *, mask: str | None) -> str:
    """User info and credential parameters dropped (`mask` None) or replaced by `mask`."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    head, rest = url[:start], url[start:]
    if rest.startswith("//"):
        end = len(rest)
        for delimiter in "/?#":
            found = rest.find(delimiter, 2)
            if found != -1:
                end = min(end, found)
        authority = rest[2:end]
        at = authority.rfind("@")
        if at != -1:
            hidden = f"{mask}@" if mask is not None else ""
            rest = "//" + hidden + authority[at + 1 :] + rest[end:]
    # The fragment first: a "?" inside it starts no query.
    before_hash, hash_, fragment = rest.partition("#")
    before, question, query = before_hash.partition("?")
    if not question:
        return head + rest
    kept = []
    changed = False
    for piece in query.split("&"):
        name, equals, _ = piece.partition("=")
        if equals and is_secret_parameter(name):
            changed = True
            if mask is not None:
                kept.append(f"{name}={mask}")
            continue
        kept.append(piece)
    if not changed:
        return head + rest
    new_query = "?" + "&".join(kept) if kept else ""
    return head + before + new_query + hash_ + fragment

"""Source URLs as they may be shown: without user info or credential-like query parameters.

A source URL such as `https://user:pw@host/feed?token=abc` is used in full only to fetch (and
kept in the store, which stays on this machine). Everything that leaves the machine or lands
in a log uses one of these instead:

- `public_url`: user info and credential parameters removed, so the result is still a valid
  URL to publish (feeds, OPML, HTML, source names).
- `redact_url` / `redact_urls`: the same parts replaced by `***`, so an operator reading a
  log line or `status` (pasted into a bug report) sees that something was hidden.
  `redact_urls` also masks a credential `?name=value` outside any URL (a relative
  `Location` header in an HTTP library's debug line).

Query parameters are separated by `&` or `;` (old servers take either), and a path's
`;name=value` parameters (`;jsessionid=`) and a fragment's `name=value` pairs
(`#access_token=`, an OAuth implicit grant's answer) are parameters too.

Pure and linear in its input; the rest of the URL is kept byte for byte, so a URL without
secrets comes out unchanged.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, unquote_plus

import idna

MASK = "***"

# A parameter is credential-like when one of its words (split on `_ - . [ ]`, spaces and
# camelCase, then lower-cased), or two neighbouring words glued together (`api_key` as
# `apikey`, `session_id` as `sessionid`), is one of these...
SECRET_WORDS = frozenset(
    {
        "token", "tokens", "apikey", "secret", "secrets", "password", "passwords", "passwd",
        "pwd", "pass", "passphrase", "passkey", "auth", "authorization", "sig", "signature",
        "signatures", "sessid", "sessionid", "jsessionid", "phpsessid", "credential",
        "credentials", "jwt",
    }
)  # fmt: skip
# ...or ends with one of these, whatever precedes it (`accesstoken`, `clientsecret`)...
_SECRET_ENDS = ("token", "secret", "password", "passwd", "signature", "credential", "credentials")
# ...or is one of these qualifiers glued to `key`, `sig`, `auth`, `pwd` or `pass` (`apikey`,
# `authkey`), which alone end too many words (`monkey`, `compass`) to be matched anywhere,
# and as a word of their own name ordinary things (`sort_key`, `primary_key`, `piano_keys`)...
_QUALIFIERS = frozenset(
    {
        "access", "account", "api", "app", "auth", "bearer", "client", "consumer", "csrf",
        "feed", "id", "license", "login", "master", "oauth", "pass", "private", "refresh",
        "secret", "security", "session", "sign", "user", "xsrf",
    }
)  # fmt: skip
_AMBIGUOUS_ENDS = ("key", "keys", "sig", "auth", "pwd", "pass")
# ...or is one of these words glued to one of the `_TAILS` or to any word above
# (`tokenid`, `secretkey`, `sessionhash`, `secretaccesskey`). Only these tails: a longer
# word that merely starts the same way is something else (`tokenizer`, `sessions`,
# `secretary`).
_LEADS = ("token", "secret", "password", "passwd", "session", "credential", "signature")
_TAILS = frozenset({"id", "key", "keys", "hash", "value"})
# `key`/`keys` as the whole name is a credential (Google's `?key=`), and so is `session`
# next to an id (`sid.session`; `session_id` is `sessionid` glued). `session` alone or
# `sessions` is a legislative session, a conference's, a page's count.
_WHOLE_NAMES = frozenset({"key", "keys"})
_SESSION_IDS = frozenset({"id", "sid", "key", "token", "hash"})

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# A URL inside free text: a scheme at the start of a word, "://", then up to a space, "<",
# ">" or a double quote. Not up to a single quote: it may be part of a password, and a URL
# quoted 'like this' (httpx's messages) gets its closing quote back in `redact_urls`. The
# look-behind lets only the first letter of a word start a match, so the search stays
# linear however long a run of letters is.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s<>\"]+")
_QUERY_SEPARATOR = re.compile(r"([&;])")
# `;name=value` in a path, up to the next `;`, `/`, `?` or `#`.
_PATH_PARAMETER = re.compile(r";([^;/?#=]*)=([^;/?#]*)")
# `?name=value`, `&name=value` or `;name=value` anywhere in text, a URL or not (a relative
# `Location: /f?access_token=...` in a debug log line). Name and value stop at the next
# separator, so each match attempt is bounded by the run up to it: linear.
_PARAMETER_IN_TEXT = re.compile(r"([?&;#])([^\s?&;=#<>\"']+)=([^\s?&;#<>\"']*)")


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter's name says its value is a credential (see `SECRET_WORDS`).

    Words are judged with their neighbour, not alone: `key` is a secret in `api_key` and a
    column in `sort_key`, and a false alarm costs as much as a miss (a feed published under
    another URL, two sources that get the same derived name)."""
    words = [found.lower() for found in _WORD.findall(unquote_plus(name))]
    if len(words) == 1 and words[0] in _WHOLE_NAMES:
        return True
    for index, word in enumerate(words):
        if _is_secret_word(word):
            return True
        if index + 1 < len(words):
            following = words[index + 1]
            if _is_secret_word(word + following):
                return True
            if "session" in (word, following) and {word, following} & _SESSION_IDS:
                return True
    return False


def _is_secret_word(word: str) -> bool:
    """One lower-case word (or two glued) that names a credential: listed, a listed end, a
    qualifier glued to an ambiguous end, or a lead glued to a tail or to any of those."""
    if _is_plain_secret_word(word):
        return True
    if not word.startswith(_LEADS):  # most words: one test, not one per lead
        return False
    for lead in _LEADS:
        if word.startswith(lead) and len(word) > len(lead):
            rest = word[len(lead) :]
            if rest in _TAILS or _is_plain_secret_word(rest):
                return True
    return False


def _is_plain_secret_word(word: str) -> bool:
    """`word` is listed, ends like a credential, or is a qualifier glued to `key` & co."""
    if word in SECRET_WORDS or word.endswith(_SECRET_ENDS):
        return True
    if not word.endswith(_AMBIGUOUS_ENDS):  # most words: one test, not one per end
        return False
    return any(word.endswith(end) and word[: -len(end)] in _QUALIFIERS for end in _AMBIGUOUS_ENDS)


def public_url(url: str) -> str:
    """`url` with its user info and credential-like query parameters removed."""
    if not any(mark in url for mark in _SECRET_PLACES):
        return url  # no user info, query, path parameter or fragment: nothing to remove
    if len(url) > _REMEMBERED_LENGTH:
        return _clean(url, mask=None)
    return _public_short_url(url)


# Every publish shows each source's site and feed URLs in four files (8,000 calls for 1,000
# sources, ~5 µs each). Most hold none of the characters a secret needs around it and are
# returned as they are; the answers for the others of ordinary length are kept, a bounded
# number of bounded strings (a few MB at most, however long the URLs a feed sends). (Kept
# alone, 1,000 sources' 2,000 URLs went round a cache of 2,048 and missed it every time.)
_SECRET_PLACES = ("@", "?", ";", "#")
_REMEMBERED_LENGTH = 500


@functools.lru_cache(maxsize=2048)
def _public_short_url(url: str) -> str:
    return _clean(url, mask=None)


def redact_url(url: str) -> str:
    """`url` with its user info and credential-like parameter values replaced by `***`."""
    return _clean(url, mask=MASK)


def redact_urls(text: str) -> str:
    """`text` (a log line, an error message) with every URL in it passed through `redact_url`,
    and any other credential-like `?name=value` / `&name=...` / `;name=...` in it masked."""
    if "://" in text:

        def redact(match: re.Match[str]) -> str:
            url = match.group(0)
            quoted = match.start() > 0 and text[match.start() - 1] == "'" and url.endswith("'")
            return redact_url(url[:-1]) + "'" if quoted else redact_url(url)

        text = _URL_IN_TEXT.sub(redact, text)
    if "=" in text:
        text = _PARAMETER_IN_TEXT.sub(_mask_parameter, text)
    return text


def _mask_parameter(match: re.Match[str]) -> str:
    """One `?name=value` of free text, its value masked when the name is credential-like."""
    separator, name, value = match.groups()
    if value == MASK or not is_secret_parameter(name):
        return match.group(0)
    return f"{separator}{name}={MASK}"


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
        end = _authority_end(rest)
        authority = rest[2:end]
        at = authority.rfind("@")
        if at != -1:
            hidden = f"{mask}@" if mask is not None else ""
            rest = "//" + hidden + authority[at + 1 :] + rest[end:]
    authority_end = _authority_end(rest) if rest.startswith("//") else 0
    # The fragment first: a "?" inside it starts no query.
    before_hash, hash_, fragment = rest.partition("#")
    before, question, query = before_hash.partition("?")
    authority_part, path = before[:authority_end], before[authority_end:]
    if ";" in path:  # `/x;jsessionid=...`: path parameters hide secrets as a query does
        path = _PATH_PARAMETER.sub(lambda m: _path_parameter(m, mask), path)
    cleaned = _clean_query(query, mask) if question else query
    if cleaned is None:  # every parameter was a secret: no "?" left either
        question, cleaned = "", ""
    if hash_ and "=" in fragment:
        hash_, fragment = _clean_fragment(fragment, mask)
    return head + authority_part + path + question + cleaned + hash_ + fragment


def _clean_fragment(fragment: str, mask: str | None) -> tuple[str, str]:
    """The "#" and the fragment, its `name=value` parameters cleaned as a query's are: an
    OAuth implicit grant answers `#access_token=...`, and a client-side route carries a
    query of its own (`#/feed?token=...`). Both gone when nothing is left of the fragment."""
    # Up to the first "?": a "?" in a value (`token=a?b`) belongs to the value.
    route, question, query = fragment.partition("?") if "?" in fragment else ("", "", fragment)
    cleaned = _clean_query(query, mask)
    if cleaned is None:
        return ("#", route) if route else ("", "")
    return "#", route + question + cleaned


def _clean_query(query: str, mask: str | None) -> str | None:
    """A query without (or with masked) credential parameters, `&` and `;` both separating
    them (old servers take either); None when nothing is left of it. Unchanged when nothing
    is hidden, byte for byte."""
    pieces = _QUERY_SEPARATOR.split(query)  # [param, sep, param, sep, ..., param]
    # Each parameter with the separator before it. A `;` followed by no "=" is taken as part
    # of the value before it (`token=a;b`), so no piece of a secret is left behind.
    # (Parts joined once at the end: adding to a string in a loop is quadratic.)
    params: list[tuple[str, list[str]]] = [("", [pieces[0]])]
    for index in range(1, len(pieces), 2):
        separator, piece = pieces[index], pieces[index + 1]
        if separator == ";" and "=" not in piece:
            params[-1][1].extend((separator, piece))
        else:
            params.append((separator, [piece]))
    kept: list[str] = []  # separator, parameter, separator, parameter, ...
    changed = False
    for separator, parts in params:
        piece = "".join(parts)
        name, equals, _ = piece.partition("=")
        if equals and is_secret_parameter(name):
            changed = True
            if mask is None:
                continue
            piece = f"{name}={mask}"
        kept += [separator, piece]
    if not changed:
        return query
    return "".join(kept[1:]) if kept else None  # the first one's separator goes


def _authority_end(rest: str) -> int:
    """Where the authority of `rest` ("//host...") ends: at its first "/", "?" or "#"."""
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter, 2)
        if found != -1:
            end = min(end, found)
    return end


def _path_parameter(match: re.Match[str], mask: str | None) -> str:
    """One `;name=value` of a path, dropped or masked when its name is credential-like."""
    if not is_secret_parameter(match.group(1)):
        return match.group(0)
    return "" if mask is None else f";{match.group(1)}={mask}"


# -- as a feed's link must be written ----------------------------------------------------------

# What a URI may hold (RFC 3986), "%" included; a "%" must also start an escape (`_STRAY_PERCENT`).
_NOT_IN_A_URI = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SUB_DELIMS = "!$&'()*+,;="
_PATH_SAFE = _SUB_DELIMS + ":@/%~"
_QUERY_SAFE = _PATH_SAFE + "?"


def as_uri(url: str) -> str:
    """`url` as a URI (RFC 3986), which an RSS `<link>` must be and an Atom `href` must be
    as far as ASCII goes: an IRI's non-ASCII characters percent-encoded as UTF-8 (RFC 3987
    section 3.1), its host in IDNA, and the ASCII no URI holds (`"`, `<`, `|`, `{`, `^`, a
    second `#`, a `%` that starts no escape, `[` outside the host) percent-encoded too. A
    publisher's links are stored as written (`समाचार/लेख-1` is the same story either way):
    this is how they are published. A URI already comes out unchanged, byte for byte."""
    if not _NOT_IN_A_URI.search(url) and _plain(url):
        return url
    scheme, rest = _scheme_and_rest(url)
    authority = ""
    if rest.startswith("//"):
        end = _authority_end(rest)
        authority, rest = "//" + _host_as_uri(rest[2:end]), rest[end:]
    before_hash, hash_, fragment = rest.partition("#")
    path, question, query = before_hash.partition("?")
    return (
        scheme
        + authority
        + _escaped(path, _PATH_SAFE)
        + question
        + _escaped(query, _QUERY_SAFE)
        + hash_
        + _escaped(fragment, _QUERY_SAFE)
    )


def _plain(url: str) -> bool:
    """No escape to mend, no second "#", and no "[" or "]" but around an IPv6 host."""
    if "%" in url and _STRAY_PERCENT.search(url):
        return False
    if url.count("#") > 1:
        return False
    if "[" in url or "]" in url:
        rest = _scheme_and_rest(url)[1]
        after = rest[_authority_end(rest) :] if rest.startswith("//") else rest
        return "[" not in after and "]" not in after
    return True


def _scheme_and_rest(url: str) -> tuple[str, str]:
    """`url`'s scheme with its ":", and the rest; no scheme ("", url) for a relative one."""
    scheme, colon, rest = url.partition(":")
    if not colon or not scheme.isascii() or not scheme.isalnum():
        return "", url
    return scheme + colon, rest


def _escaped(part: str, safe: str) -> str:
    # surrogatepass: total on any text (a stored link never holds a lone surrogate).
    return quote(_STRAY_PERCENT.sub("%25", part), safe=safe, errors="surrogatepass")


def _host_as_uri(authority: str) -> str:
    """User info, host and port as a URI holds them: a non-ASCII host as browsers write it
    (IDNA, UTS 46 non-transitional: `straße.de` is `xn--strae-oqa.de`, not `strasse.de`),
    percent-encoded where IDNA refuses it; escapes already there are kept."""
    userinfo, at, hostport = authority.rpartition("@")
    host, port = hostport, ""
    if not hostport.endswith("]") and ":" in hostport:
        host, colon, digits = hostport.rpartition(":")
        port = colon + digits
    if not host.isascii():
        host = _idna(host)
    return (
        _escaped(userinfo, _SUB_DELIMS + ":%")
        + at
        + _escaped(host, _SUB_DELIMS + "[]:%")
        + _escaped(port, ":%")
    )


def _idna(host: str) -> str:
    """`host` in IDNA, or as it is (to be percent-encoded) when IDNA refuses it. A host no
    DNS name can be (a label over 63 characters, 253 in all) is refused before encoding:
    punycode takes time quadratic in a label, and a link may be 8,192 characters."""
    if len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        return host
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return host

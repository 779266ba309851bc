"""Text handling shared by the stages: HTML to text, sanitizing, teasers, Unicode hygiene.

Pure: no I/O. Every function is linear in its input (a pattern that backtracks over feed
text can take minutes on one hostile title), or works on a capped prefix. Teasers are cut
on grapheme clusters (the `regex` module's `\\X`), never on code points, so a Devanagari
consonant keeps its matra, virama and nukta, and an emoji its modifiers. A cluster is no
bound on size, though ("a" and a million combining marks is one), so clusters and runs of
combining marks are also capped in code points.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import nh3
import regex

ELLIPSIS = "…"

# Characters XML 1.0 forbids, plus C1 controls (U+0080-U+009F): XML allows those but HTML
# forbids them, and they only ever come from a mis-decoded feed. The standard `re` wherever
# it will do: on these patterns it is several times faster than `regex`, and every item's
# every field passes through them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_ANY_WHITESPACE = re.compile(r"\s")
_GRAPHEME = regex.compile(r"\X")
# Block-level boundaries become spaces so "<p>a</p><p>b</p>" reads "a b", not "ab".
# Linear: a tag ends at the next "<" or ">", so no character is scanned from two tag starts
# (`[^>]*>` rescanned the rest of the text from every "<p" of a text with no ">"), and no
# optional whitespace before the name (`<\s*/?\s*` backtracked over every run of spaces).
_BLOCK_BOUNDARY = re.compile(
    r"</?(?:br|p|div|li|ul|ol|h[1-6]|tr|td|th|blockquote|pre|hr|section|article|figure"
    r"|figcaption|header|footer|dd|dt|table)\b[^<>]*>",
    re.IGNORECASE,
)
# Explicit embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they reorder
# how a title is displayed, so "gpj.exe" can be made to read "exe.jpg". The marks U+200E and
# U+200F stay: Arabic and Urdu text needs them, and they cannot reorder other text.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_CUT_WINDOW = 64
# Code points kept of one grapheme cluster in a teaser, title or name. Real clusters are far
# shorter (a family emoji is 7, a Devanagari conjunct with matra 5 or 6); longer ones are
# zalgo or an endless ZWJ or jamo chain, and keep their first code points.
CLUSTER_LIMIT = 32
# Combining marks (Unicode category M*) kept in one run, for the same reason and one more:
# CPython's NFC puts a run of marks in canonical order by insertion sort, quadratic in the run
# (two runs of 32,000 reordered marks took 6.8 s). Possessive: the scan never backs up.
MARK_RUN_LIMIT = 32
_LONG_MARK_RUN = regex.compile(rf"(\p{{M}}{{{MARK_RUN_LIMIT}}})\p{{M}}++")
# A teaser of `n` clusters has at most this many times `n` code points: real text averages
# under two code points a cluster in every script.
CODE_POINTS_PER_CLUSTER = 4
# The longest teaser an operator may ask for (`[publish] teaser_length`), in clusters. The
# store keeps each entry's text only as far as such a teaser can reach (`teaser_text`).
TEASER_LENGTH_LIMIT = 2_000
_PUNCTUATION_OR_SYMBOLS = regex.compile(r"[\p{P}\p{S}]+")
# Left dangling before "…" these read as noise: "कहा,…" becomes "कहा…".
_TRAILING = frozenset(",;:-–—(/.।॥")

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "cite", "code", "dd", "del", "div", "dl", "dt",
        "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
        "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strong",
        "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    "time": {"datetime"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "blockquote": {"cite"},
    "q": {"cite"},
}
_URL_ATTRIBUTES = frozenset({"href", "src", "cite"})


def clean_text(value: str) -> str:
    """NFC-normalize and drop the characters XML cannot carry; long mark runs are cut first."""
    if not value.isascii():
        value = cap_mark_runs(value)
    if not unicodedata.is_normalized("NFC", value):
        value = unicodedata.normalize("NFC", value)
    return _XML_ILLEGAL.sub("", value) if _XML_ILLEGAL.search(value) else value


def cap_mark_runs(value: str) -> str:
    """`value` with every run of combining marks cut to its first `MARK_RUN_LIMIT` marks.

    Linear, so that NFC (quadratic in a run of reordered marks) never sees a long run.
    """
    return _LONG_MARK_RUN.sub(r"\1", value)


def strip_bidi_controls(value: str) -> str:
    """`value` without the bidi embedding, override and isolate controls (marks are kept)."""
    return value.translate(_BIDI_CONTROLS)


def cap_length(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters (plus "…" when cut), never inside a cluster.

    The early cap on a raw feed field, before any pattern or parser sees it. Only the clusters
    around the cut are segmented (a window of 64 code points: segmentation resynchronizes
    within a cluster or two), so the cost is that of a slice, whatever the input.
    """
    if len(value) <= limit:
        return value
    start = max(0, limit - _CUT_WINDOW)
    end = start
    for cluster in _GRAPHEME.finditer(value, start, limit + _CUT_WINDOW):
        if cluster.end() > limit:
            break
        end = cluster.end()
    return value[:end] + ELLIPSIS


def has_forbidden_characters(value: str) -> bool:
    """Whether `value` holds a character XML 1.0 cannot carry."""
    return _XML_ILLEGAL.search(value) is not None


def collapse_whitespace(value: str) -> str:
    """One space between words, none at the ends (whitespace as `str.split` knows it)."""
    return " ".join(value.split())


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment: tags removed, entities decoded, whitespace collapsed."""
    if "<" not in markup and "&" not in markup:
        return collapse_whitespace(clean_text(markup))
    spaced = _BLOCK_BOUNDARY.sub(" ", markup)
    stripped = nh3.clean(spaced, tags=set(), attributes={}, strip_comments=True)
    return collapse_whitespace(clean_text(html.unescape(stripped)))


def absolute_url(url: str | None, base: str | None) -> str | None:
    """`url` resolved against `base`; None when empty or unsafe (javascript:, data:)."""
    if not url or not url.strip():
        return None
    try:
        resolved = _XML_ILLEGAL.sub("", urljoin(base, url.strip()) if base else url.strip())
        scheme = urlsplit(resolved).scheme.lower()
    except ValueError:  # e.g. "http://[oops/": not a URL at all
        return None
    if scheme not in SAFE_SCHEMES:
        return None
    if _ANY_WHITESPACE.search(resolved) is None:
        return resolved
    return _ANY_WHITESPACE.sub(lambda m: quote(m.group(0)), resolved)


def web_url(url: str | None) -> str | None:
    """`url` when it is an absolute http(s) address, fit to publish; else None.

    Never `javascript:`, `data:`, a relative path or a local source's file:// URL.
    """
    if not url:
        return None
    url = url.strip()
    scheme, sep, rest = url.partition(":")
    if sep and scheme.lower() in ("http", "https") and rest.startswith("//") and len(rest) > 2:
        return url
    return None


def sanitize_html(markup: str, base_url: str | None) -> str:
    """Safe HTML for any output: an allow-list of tags, links made absolute, unsafe URLs dropped."""
    if not markup.strip():
        return ""

    def keep_attribute(element: str, attribute: str, value: str) -> str | None:
        if attribute in _URL_ATTRIBUTES:
            return absolute_url(value, base_url)
        return value

    cleaned = nh3.clean(
        clean_text(markup),
        tags=set(_ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in _ALLOWED_ATTRIBUTES.items()},
        attribute_filter=keep_attribute,
        url_schemes=set(SAFE_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    # nh3 decodes character references, so "&#1;" comes out as a raw U+0001: clean again.
    return clean_text(cleaned).strip()


def make_teaser(text: str, length: int) -> str:
    """At most `length` grapheme clusters of `text`, cut at a word boundary, `…` only when cut.

    A single word longer than the limit is cut between grapheme clusters rather than dropped.
    Size is bounded too, not just clusters: a cluster keeps at most `CLUSTER_LIMIT` code points
    (zalgo, endless ZWJ chains) and the whole at most `CODE_POINTS_PER_CLUSTER * length`, so
    "a" and 255,000 combining marks is no 510 KB "one-line" teaser. Only that many code points
    of `text` are ever segmented. A trimmed cluster keeps its start: no lone mark.
    """
    text = collapse_whitespace(text)
    code_points = CODE_POINTS_PER_CLUSTER * length
    # Only as many clusters as can be kept, plus one to tell whether anything was cut.
    clusters = _first_clusters(text, length + 1, code_points + 1)
    if len(clusters) <= length and len(text) <= code_points and len("".join(clusters)) == len(text):
        return text  # nothing cut, nothing trimmed
    if length <= 1:
        return ELLIPSIS[:length]
    head = _within(clusters[: length - 1], code_points - 1)  # room for the ellipsis
    following = clusters[len(head)] if len(head) < len(clusters) else None
    kept = head
    if following is not None and not following.isspace():
        # Back up to the last space so no word is cut in half (unless it is the only word).
        last_space = next((i for i in range(len(head) - 1, 0, -1) if head[i].isspace()), 0)
        if last_space > 0:
            kept = head[:last_space]
    kept = _trim(kept, _TRAILING) or _trim(kept, frozenset()) or head
    return "".join(kept) + ELLIPSIS


def teaser_text(text: str, longest: int = TEASER_LENGTH_LIMIT) -> str:
    """The start of `text` that every teaser of at most `longest` clusters is cut from.

    What the store keeps, so the cut happens when rendering, with the `teaser_length` of
    that moment: `make_teaser(teaser_text(t), n) == make_teaser(t, n)` for every `n` up to
    `longest`. `make_teaser(t, n)` reads only the first `CODE_POINTS_PER_CLUSTER * n + 1`
    code points of the collapsed text (and whether there are more), so one more than that
    (a trailing space is collapsed away) is enough, and bounds what is stored.
    """
    return collapse_whitespace(text)[: CODE_POINTS_PER_CLUSTER * longest + 2]


# A source's own "read more" link after its summary: a last <a> whose whole text is one of
# these phrases, followed by nothing but closing tags, line breaks, whitespace and arrows.
# Only the end of a summary is looked at (`_MORE_TAIL` code points), and one candidate link in
# it, so the cost is bounded whatever the input; NFC, as `html_to_text` leaves the text.
_MORE_TAIL = 4096
_MORE_TEXT_LIMIT = 200  # clusters of the link's text, roughly
_LINK_START = re.compile(r"<a[\s>]", re.IGNORECASE)
_LINK_END = re.compile(r"</a\s*>", re.IGNORECASE)
_AFTER_LAST_LINK = re.compile(
    r"(?:\s|&nbsp;|&#160;|</?(?:p|div|span|em|strong|b|i|small|br)\b[^<>]*>|[\]).»›→…|-])*",
    re.IGNORECASE,
)
_MORE_PHRASE = re.compile(
    unicodedata.normalize(
        "NFC",
        r"[\s\[(…»›.]*(?:"
        r"read more|read the (?:full|rest of the) (?:story|article|post)"
        r"|read full (?:story|article)"
        r"|continue reading|keep reading|full story|more|more (?:on|at|from) .+"
        r"|read more (?:on|at) .+|continue reading .+"
        r"|और पढ़ें|आगे पढ़ें|पूरी ख़?बर पढ़ें|पूरा पढ़ें|विस्तार से पढ़ें|यहाँ पढ़ें|यहां पढ़ें"
        r")[\s\]).»›→…:!]*",
    ),
    re.IGNORECASE,
)


def drop_trailing_more_link(markup: str) -> str:
    """`markup` without a final "Read more" / "और पढ़ें" link the source appended, if any.

    Many feeds end each summary with a link of their own ("… more on X", "Continue reading",
    "और पढ़ें"): it says nothing, and in a one-line teaser it takes the room of the news.
    Only a separate, last `<a>` whose whole text is such a phrase, followed by nothing but
    closing tags, spaces and arrows, is dropped; a phrase in running text stays. Bounded:
    only the last `_MORE_TAIL` code points are looked at, each once or twice.
    """
    tail = max(0, len(markup) - _MORE_TAIL)
    starts = [match.start() for match in _LINK_START.finditer(markup, tail)]
    if not starts:
        return markup
    opened = markup.find(">", starts[-1])
    closed = _LINK_END.search(markup, opened) if opened >= 0 else None
    if closed is None or closed.start() - opened > _MORE_TEXT_LIMIT * 4:
        return markup
    if not _AFTER_LAST_LINK.fullmatch(markup, closed.end()):
        return markup
    if not _MORE_PHRASE.fullmatch(html_to_text(markup[opened + 1 : closed.start()])):
        return markup
    return markup[: starts[-1]]


def entry_text(summary_html: str) -> str:
    """The text a stored entry's teasers are cut from, made again from its stored summary:
    what a store migration fills in for entries stored with a teaser cut at parse time."""
    return teaser_text(html_to_text(drop_trailing_more_link(summary_html)))


def _within(clusters: list[str], code_points: int) -> list[str]:
    """The longest prefix of `clusters` with at most `code_points` code points in all."""
    total = 0
    for index, cluster in enumerate(clusters):
        total += len(cluster)
        if total > code_points:
            return clusters[:index]
    return clusters


def _first_clusters(text: str, count: int, code_points: int) -> list[str]:
    """The first `count` grapheme clusters of the first `code_points` code points of `text`.

    A longer cluster is cut to `CLUSTER_LIMIT` code points and ends the list; a cluster cut
    short by the window is simply shorter (the caller never keeps all of the window). Below
    U+0300 (Latin, before the combining marks) every code point is a cluster of its own, so
    such text is split by code point; other text is segmented only within the window.
    """
    end = min(count, code_points)
    if not text[: end + 1] or max(text[: end + 1]) < "\u0300":
        return list(text[:end])
    clusters: list[str] = []
    for match in _GRAPHEME.finditer(text, 0, code_points):
        cluster = match.group()
        if len(cluster) > CLUSTER_LIMIT:
            # The last one: what follows could join the cut one (after a ZWJ, a virama).
            clusters.append(cluster[:CLUSTER_LIMIT])
            break
        clusters.append(cluster)
        if len(clusters) == count:
            break
    return clusters


def _trim(clusters: list[str], also: frozenset[str]) -> list[str]:
    """`clusters` without trailing whitespace and trailing clusters in `also` (whole clusters)."""
    end = len(clusters)
    while end and (clusters[end - 1].isspace() or clusters[end - 1] in also):
        end -= 1
    return clusters[:end]


# Query parameters that only say where a click came from; two links differing only in these
# are the same story.
_TRACKING_PARAMETER = regex.compile(
    r"^(?:utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|mc_cid|mc_eid|igshid|_ga|_gl"
    r"|ref_src|ref_url|cmpid|ocid|spm)$",
    regex.IGNORECASE,
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def link_key(url: str) -> str:
    """A link normalized for comparing stories: scheme ignored, host lower-cased, default port,
    trailing slash, fragment and tracking parameters (utm_*, fbclid, ...) removed, query sorted.
    """
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not _TRACKING_PARAMETER.match(k)
    )
    return f"//{host}{path}" + (f"?{urlencode(query)}" if query else "")


def story_keys(link: str | None, title: str) -> tuple[str | None, str | None]:
    """(link key, title key) of an item, None where it has no link or no title to compare."""
    return (link_key(link) if link else None), (title_key(title) or None)


def title_key(title: str) -> str:
    """A title normalized for comparing stories: NFC, case folded, punctuation ignored."""
    folded = unicodedata.normalize("NFC", title).casefold()
    return collapse_whitespace(_PUNCTUATION_OR_SYMBOLS.sub(" ", folded))

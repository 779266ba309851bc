"""aggregator.page: the timeline as an HTML page of dated briefs, grouped by local day."""

from __future__ import annotations

import html
import json
import os
import struct
import subprocess
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest

from aggregator.render.context import babel_locale, group_by_day
from aggregator.render.page import render_html
from aggregator.settings import SiteSettings
from aggregator.text import web_url
from aggregator.types import SourceCredit, StoredEntry, Timeline, TimelineItem

CHROMIUM = Path("/usr/bin/chromium")
BASE_URL = "http://127.0.0.1:8080/"

SITE_HI = SiteSettings(
    title="हिंदी समाचार",
    link=BASE_URL,
    description="हर स्रोत से ताज़ा ख़बरें",
    language="hi",
    timezone="Asia/Kolkata",
    base_url=BASE_URL,
)
SITE_EN = SiteSettings(
    title="News & <Views>",
    link=BASE_URL,
    description="The latest from every source",
    language="en",
    timezone="Asia/Kolkata",
    base_url=BASE_URL,
)

JAGRAN = SourceCredit(
    name="jagran",
    title="दैनिक जागरण",
    feed_url="https://jagran.example/rss.xml",
    site_url="https://jagran.example/",
)
BBC = SourceCredit(name="bbc", title="बीबीसी हिंदी", feed_url="https://bbc.example/hindi.xml")
AMAR = SourceCredit(name="amar", title="अमर उजाला", feed_url="https://amar.example/feed")

GAZA = "ग़ज़ा में पानी भरने का इंतज़ार कर रहे छह बच्चों की इसराइली हवाई हमले में मौत"
GAZA_TEASER = (
    "ग़ज़ा में आपातकालीन सेवा अधिकारियों के अनुसार, रविवार को सेंट्रल ग़ज़ा में पानी भरने गए छह बच्चों समेत दस लोगों"
)
NIKAM = "राज्यसभा के लिए नामित हुए उज्ज्वल निकम, पीएम मोदी ने मराठी में फोन कर दी जानकारी"
BIHAR = "बिहार में चुनाव आयोग की ये प्रक्रिया सवालों के घेरे में क्यों?"
SUKANYA = "33,000 सालाना जमा करें और पाएं ₹15 लाख से ज्यादा! जानें Sukanya Yojana का पूरा प्लान"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def item(
    title: str,
    published: str,
    *,
    source: SourceCredit = JAGRAN,
    also: tuple[SourceCredit, ...] = (),
    link: str | None = "https://news.example/story",
    teaser: str = "",
) -> TimelineItem:
    when = at(published)
    entry = StoredEntry(
        source=source.name,
        entry_id=f"{source.name}:{published}:{title}",
        title=title,
        link=link,
        summary_html="",
        teaser=teaser,
        author=None,
        categories=(),
        published=when,
        updated=when,
        first_seen=when,
        sort_date=when,
    )
    return TimelineItem(
        uid=f"urn:test:{source.name}:{published}",
        entry=entry,
        source=source,
        published=when,
        updated=when,
        also=also,
    )


def timeline(*items: TimelineItem) -> Timeline:
    ordered = tuple(sorted(items, key=lambda i: i.published, reverse=True))
    return Timeline(items=ordered, updated=ordered[0].updated if ordered else None)


def hindi_two_days() -> Timeline:
    return timeline(
        # 2025-07-12T20:00Z is 01:30 on 13 July in Kolkata (+05:30).
        item(GAZA, "2025-07-12T20:00:00", teaser=GAZA_TEASER, also=(BBC, AMAR)),
        item(NIKAM, "2025-07-13T06:15:00", source=BBC, link="https://bbc.example/nikam"),
        # 18:29Z is 23:59 on 12 July in Kolkata: the last minute of the day before.
        item(BIHAR, "2025-07-12T18:29:00", source=AMAR, teaser="विपक्षी दलों और चुनाव आयोग"),
        item(SUKANYA, "2025-07-12T03:00:00", link=None, teaser="सिर्फ ₹33,000 सालाना निवेश"),
    )


def parse(page: bytes) -> lxml.html.HtmlElement:
    # lxml's HTML parser collects what it had to repair; a well-formed page has nothing.
    parser = lxml.html.HTMLParser(encoding="utf-8", recover=False)
    root = lxml.html.document_fromstring(page, parser=parser)
    assert not [e for e in parser.error_log if e.level_name != "WARNING"], parser.error_log
    return root


def texts(root: lxml.html.HtmlElement, xpath: str) -> list[str]:
    return [e.text_content().strip() for e in root.xpath(xpath)]


# --- grouping and order --------------------------------------------------------------------


def test_days_follow_the_site_time_zone():
    groups = group_by_day(hindi_two_days(), "Asia/Kolkata")
    assert [(day.isoformat(), [i.entry.title for i in items]) for day, items in groups] == [
        ("2025-07-13", [NIKAM, GAZA]),
        ("2025-07-12", [BIHAR, SUKANYA]),
    ]
    # In UTC the same 20:00 item is still on the 12th.
    utc = group_by_day(hindi_two_days(), "UTC")
    assert [(day.isoformat(), len(items)) for day, items in utc] == [
        ("2025-07-13", 1),
        ("2025-07-12", 3),
    ]


def test_hindi_page_headings_times_and_order():
    root = parse(render_html(hindi_two_days(), SITE_HI))
    assert texts(root, "//main//h2") == ["13 जुलाई 2025", "12 जुलाई 2025"]
    assert root.xpath("//main//h2/time/@datetime") == ["2025-07-13", "2025-07-12"]
    sections = root.xpath("//main/section")
    assert [texts(s, ".//h3") for s in sections] == [[NIKAM, GAZA], [BIHAR, SUKANYA]]
    # Each item's <time> is the local time, in ISO for machines and Babel's short form for people.
    assert root.xpath("//article//time/@datetime") == [
        "2025-07-13T11:45:00+05:30",
        "2025-07-13T01:30:00+05:30",
        "2025-07-12T23:59:00+05:30",
        "2025-07-12T08:30:00+05:30",
    ]
    assert texts(root, "//article//time") == ["11:45 am", "1:30 am", "11:59 pm", "8:30 am"]


def test_english_heading_and_time():
    page = render_html(timeline(item("Hello", "2025-07-12T20:00:00")), SITE_EN)
    root = parse(page)
    assert texts(root, "//main//h2") == ["July 13, 2025"]
    assert texts(root, "//article//time") == ["1:30\u202fAM"]
    assert root.get("lang") == "en"


@pytest.mark.parametrize("language", [None, "xx", "not a language", ""])
def test_unknown_or_missing_language_falls_back_to_english(language):
    site = SiteSettings(
        title="t",
        link=BASE_URL,
        description="d",
        language=language,
        timezone="Asia/Kolkata",
        base_url=BASE_URL,
    )
    root = parse(render_html(timeline(item("Hello", "2025-07-12T20:00:00")), site))
    assert texts(root, "//main//h2") == ["July 13, 2025"]
    assert root.get("lang") == (language or "en")


def test_region_subtags_reach_babel():
    assert str(babel_locale("hi-IN")) == "hi_IN"
    assert str(babel_locale("en_GB")) == "en_GB"
    assert str(babel_locale(None)) == "en"


def test_items_with_equal_dates_keep_timeline_order():
    first = item("first", "2025-07-12T10:00:00")
    second = item("second", "2025-07-12T10:00:00")
    root = parse(render_html(Timeline(items=(first, second), updated=first.updated), SITE_EN))
    assert texts(root, "//h3") == ["first", "second"]


# --- content ---------------------------------------------------------------------------------


def test_devanagari_bytes_are_exact_utf8():
    page = render_html(hindi_two_days(), SITE_HI)
    assert "13 जुलाई 2025".encode() in page
    assert GAZA.encode() in page
    assert GAZA_TEASER.encode() in page
    assert "दैनिक जागरण".encode() in page
    assert b'<meta charset="utf-8">' in page
    assert page.startswith(b'<!DOCTYPE html>\n<html lang="hi" dir="ltr">\n')
    assert page.decode("utf-8").encode("utf-8") == page


def test_headline_links_source_and_also():
    root = parse(render_html(hindi_two_days(), SITE_HI))
    gaza = root.xpath("//article[.//h3[normalize-space()=$t]]", t=GAZA)[0]
    assert gaza.xpath(".//h3/a/@href") == ["https://news.example/story"]
    meta = gaza.xpath(".//p[@class='meta']")[0].text_content()
    assert meta == "1:30 am · दैनिक जागरण (अन्य स्रोत: बीबीसी हिंदी, अमर उजाला)"
    # The source links to its site when it has one.
    assert gaza.xpath(".//p[@class='meta']/a/@href") == ["https://jagran.example/"]
    assert texts(gaza, ".//p[@class='teaser']") == [GAZA_TEASER]
    # Without a link the headline is plain text; without "also" there is no "also".
    sukanya = root.xpath("//article[.//h3[normalize-space()=$t]]", t=SUKANYA)[0]
    assert sukanya.xpath(".//h3/a") == []
    assert "अन्य स्रोत" not in sukanya.text_content()


def test_untitled_entry_gets_a_headline_from_its_teaser():
    root = parse(render_html(timeline(item("", "2025-07-12T10:00:00", teaser="Words")), SITE_EN))
    assert texts(root, "//h3") == ["Words"]


def test_hostile_text_is_escaped():
    hostile = item(
        "<script>alert(1)</script>",
        "2025-07-12T10:00:00",
        teaser="<img src=x onerror=\"alert(2)\"> & 'quoted'",
        source=SourceCredit(name="evil", title='Evil "<b>Source</b>"', feed_url="https://e.x/f"),
        also=(SourceCredit(name="e2", title="<i>also</i>", feed_url="https://e.x/g"),),
    )
    page = render_html(timeline(hostile), SITE_EN)
    assert b"<script" not in page
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert b"<img" not in page and b"<b>" not in page and b"<i>" not in page
    assert b"&lt;img src=x onerror=&#34;alert(2)&#34;&gt; &amp; &#39;quoted&#39;" in page
    assert b"<title>News &amp; &lt;Views&gt;</title>" in page
    root = parse(page)
    assert texts(root, "//h3") == ["<script>alert(1)</script>"]
    assert texts(root, "//p[@class='teaser']") == ["<img src=x onerror=\"alert(2)\"> & 'quoted'"]
    assert root.xpath("//script | //img | //b | //i") == []


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        " JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/relative/path",
        "//evil.example/",
        "http:",
        "https://",
    ],
)
def test_only_web_links_become_links(link):
    assert web_url(link) is None
    root = parse(render_html(timeline(item("t", "2025-07-12T10:00:00", link=link)), SITE_EN))
    assert root.xpath("//h3/a") == []
    assert texts(root, "//h3") == ["t"]


def test_web_url_keeps_http_and_https():
    assert web_url("https://a.example/x?y=1&z=2") == "https://a.example/x?y=1&z=2"
    assert web_url("HTTP://a.example/") == "HTTP://a.example/"
    assert web_url(None) is None


def test_query_string_ampersands_are_escaped_in_href():
    page = render_html(
        timeline(item("t", "2025-07-12T10:00:00", link="https://a.example/?a=1&b=2")), SITE_EN
    )
    assert b'href="https://a.example/?a=1&amp;b=2"' in page
    assert parse(page).xpath("//h3/a/@href") == ["https://a.example/?a=1&b=2"]


# --- page shell ------------------------------------------------------------------------------


def test_alternate_links_and_footer():
    root = parse(render_html(hindi_two_days(), SITE_HI))
    alternates = {
        link.get("type"): link.get("href") for link in root.xpath("//head/link[@rel='alternate']")
    }
    assert alternates == {
        "application/atom+xml": BASE_URL + "atom.xml",
        "application/rss+xml": BASE_URL + "rss.xml",
        "application/feed+json": BASE_URL + "feed.json",
    }
    footer_links = root.xpath("//footer//a/@href")
    assert footer_links == [BASE_URL + "atom.xml", BASE_URL + "rss.xml", BASE_URL + "feed.json"]


def test_head_title_viewport_and_no_javascript():
    page = render_html(hindi_two_days(), SITE_HI)
    root = parse(page)
    assert root.get("lang") == "hi"
    assert texts(root, "//head/title") == ["हिंदी समाचार"]
    assert texts(root, "//h1") == ["हिंदी समाचार"]
    assert root.xpath("//meta[@name='viewport']/@content") == [
        "width=device-width, initial-scale=1"
    ]
    assert root.xpath("//meta/@charset") == ["utf-8"]
    style = texts(root, "//head/style")
    assert len(style) == 1 and '"Noto Sans Devanagari"' in style[0]
    assert "max-width" in style[0]
    assert root.xpath("//script") == []
    assert not any(name.startswith("on") for e in root.iter() for name in e.attrib)


def test_rendering_is_deterministic():
    first = render_html(hindi_two_days(), SITE_HI)
    assert render_html(hindi_two_days(), SITE_HI) == first
    assert render_html(hindi_two_days(), SITE_HI) == first


def test_empty_timeline_is_a_valid_page():
    page = render_html(Timeline(), SITE_HI)
    root = parse(page)
    assert texts(root, "//h1") == ["हिंदी समाचार"]
    assert root.xpath("//main//section | //main//article") == []
    assert "अभी यहाँ कुछ नहीं है" in texts(root, "//main")[0]
    assert len(root.xpath("//head/link[@rel='alternate']")) == 3


# --- a real browser --------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium fonts-noto-core)",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-proxy-server",
            f"--user-data-dir={profile}",
            *args,
        ],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered rows of an 8-bit RGB or RGBA, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + previous[x]) >> 1)) & 0xFF
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = previous[x], previous[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


@pytest.fixture
def hindi_page(tmp_path: Path) -> Path:
    page = tmp_path / "index.html"
    page.write_bytes(render_html(hindi_two_days(), SITE_HI))
    return page


@pytest.mark.slow
@needs_chromium
def test_chromium_screenshot_is_not_blank(tmp_path: Path, hindi_page: Path):
    shot = tmp_path / "page.png"
    started = time.monotonic()
    result = chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=412,915", hindi_page.as_uri()
    )
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    assert time.monotonic() - started < 20
    data = shot.read_bytes()
    assert len(data) > 5000
    width, height, rows = png_pixels(data)
    assert (width, height) == (412, 915)
    assert len(set(rows)) > 100, "the screenshot is (nearly) uniform"
    bpp = len(rows[0]) // width
    dark = sum(1 for row in rows for x in range(0, len(row), bpp) if sum(row[x : x + 3]) < 3 * 100)
    # Text on a light background: some dark pixels, but far from all of them.
    assert 0.005 < dark / (width * height) < 0.5
    keep = os.environ.get("AGGREGATOR_KEEP_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(data)


@pytest.mark.slow
@needs_chromium
def test_chromium_dom_has_the_hindi_day_and_headlines(tmp_path: Path, hindi_page: Path):
    result = chromium(tmp_path, "--dump-dom", hindi_page.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    dom = result.stdout.decode("utf-8")
    assert "13 जुलाई 2025" in dom
    assert "12 जुलाई 2025" in dom
    assert GAZA in dom
    assert dom.index("13 जुलाई 2025") < dom.index(GAZA) < dom.index("12 जुलाई 2025")
    root = lxml.html.document_fromstring(result.stdout)
    assert texts(root, "//h2") == ["13 जुलाई 2025", "12 जुलाई 2025"]


# The page has no script; the test adds one to a copy, which measures the laid-out page in
# the real browser and writes what it found into the DOM that `--dump-dom` prints. The copy
# is shown in a frame of the width under test (headless Chromium lays a window out at least
# 500 px wide), as `srcdoc` so that the frame may write into its parent's document.
MEASURE = """<script>
(() => {
  const px = (e, p) => parseFloat(getComputedStyle(e)[p]);
  const teaser = document.querySelector("p.teaser");
  const out = {
    viewport: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    widest: Math.max(...[...document.querySelectorAll("h3, p")].map(
      e => e.getBoundingClientRect().right)),
    day: px(document.querySelector("main h2"), "fontSize"),
    headline: px(document.querySelector("h3"), "fontSize"),
    body: px(document.body, "fontSize"),
    teaser: px(teaser, "fontSize"),
    teaserLines: Math.round(teaser.getBoundingClientRect().height / px(teaser, "lineHeight")),
    headlineDecoration: getComputedStyle(document.querySelector("h3 a")).textDecorationLine,
    footerLink: getComputedStyle(document.querySelector("footer p a")).color,
    meta: getComputedStyle(document.querySelector("p.meta")).color,
    text: getComputedStyle(document.querySelector("p.teaser")).color,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  parent.document.body.append(pre);
})();
</script>
"""


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_briefs_page_at_desktop_and_phone_widths(tmp_path: Path, width: int, height: int):
    """The reworked page in a real browser: it renders, nothing is wider than the screen,
    the day heading stands out, headlines are not underlined until hovered, metadata is
    muted and the footer's links are the theme's colour, not the default blue."""
    sources = (JAGRAN, BBC, AMAR)
    page = render_html(hindi_two_days(), SITE_HI, sources).decode("utf-8")
    framed = html.escape(page.replace("</body>", MEASURE + "</body>"), quote=True)
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><iframe style="border:0;display:block"'
        f' width="{width}" height="{height}" srcdoc="{framed}"></iframe></body></html>',
        encoding="utf-8",
    )
    result = chromium(tmp_path, f"--window-size={max(width, 500)},{height}", "--dump-dom",
                      measured_page.as_uri())  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    root = lxml.html.document_fromstring(result.stdout)
    found = json.loads(texts(root, "//pre[@id='measured']")[0])
    assert found["viewport"] == width
    assert found["scrollWidth"] <= width, found  # no horizontal scroll
    assert found["widest"] <= width, found
    assert found["day"] >= 1.25 * found["body"] and found["day"] > found["headline"], found
    assert found["headlineDecoration"] == "none"
    assert found["footerLink"] not in ("rgb(0, 0, 238)", "rgb(0, 0, 255)"), found
    assert found["meta"] != found["text"], found  # muted, not the body's colour
    if width >= 1280:
        # The seed's brief: a ~110-character teaser is one line on a desktop.
        assert found["teaserLines"] == 1, found

    shot = tmp_path / f"page-{width}.png"
    plain = tmp_path / "index.html"
    plain.write_text(page, encoding="utf-8")
    result = chromium(tmp_path, f"--screenshot={shot}", f"--window-size={width},{height}",
                      "--hide-scrollbars", plain.as_uri())  # fmt: skip
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    shot_width, shot_height, rows = png_pixels(shot.read_bytes())
    assert (shot_width, shot_height) == (width, height)
    assert len(set(rows)) > 100, "the screenshot is (nearly) uniform"
    if width >= 1280:
        # The right margin stays background: no line of text runs off the screen.
        bpp = len(rows[0]) // width
        edge = {row[(width - 4) * bpp : (width - 1) * bpp] for row in rows}
        assert len(edge) == 1, "something is drawn at the right edge"

"""Day pages (`archive/YYYY/MM/DD.html`), the main page's "earlier days" link, and the
root's list of channels: localized like the main page, linked relatively, and seen in a
real browser (headless Chromium), like the main page in tests/test_page.py."""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from aggregator.render import PAGE_FILE, day_page_file
from aggregator.render.context import ChannelInfo
from aggregator.render.page import DayPage, render_day_page, render_html
from aggregator.types import Timeline
from tests.test_page import (
    BASE_URL,
    BBC,
    GAZA,
    JAGRAN,
    NIKAM,
    SITE_EN,
    SITE_HI,
    chromium,
    hindi_two_days,
    needs_chromium,
    parse,
    png_pixels,
    texts,
)

NEWS = ChannelInfo("news", "समाचार चैनल", "देश-दुनिया की ख़बरें")
SPORT = ChannelInfo("sport", "खेल", "")


def thirteenth() -> Timeline:
    """The items of 13 July (Kolkata) from the two-day Hindi timeline."""
    full = hindi_two_days()
    return replace(full, items=tuple(i for i in full.items if i.entry.title in (GAZA, NIKAM)))


def hindi_day(prev: str | None = "2025-07-12", next_day: str | None = "2025-07-14") -> bytes:
    page = DayPage("2025-07-13", prev=prev, next=next_day)
    return render_day_page(thirteenth(), SITE_HI, page, (JAGRAN, BBC))


def test_day_page_file_names_the_date():
    assert day_page_file("2025-07-13") == "archive/2025/07/13.html"
    assert day_page_file("0999-01-02") == "archive/0999/01/02.html"


def test_a_hindi_day_page_has_its_day_and_localized_neighbours():
    root = parse(hindi_day())
    assert texts(root, "//head/title") == ["13 जुलाई 2025 · हिंदी समाचार"]
    assert texts(root, "//main//h2") == ["13 जुलाई 2025"]
    assert root.xpath("//main//h2/time/@datetime") == ["2025-07-13"]
    assert texts(root, "//main//h3") == [NIKAM, GAZA]
    assert texts(root, "//article//time") == ["11:45 am", "1:30 am"]
    pager = root.xpath("//nav[@class='pager']")[0]
    assert pager.get("aria-label") == "दिन"
    assert texts(pager, ".//a") == [
        "पिछला दिन: 12 जुलाई 2025",
        "ताज़ा ख़बरें",
        "अगला दिन: 14 जुलाई 2025",
    ]
    assert pager.xpath(".//a[@rel='prev']/@href") == ["../../../archive/2025/07/12.html"]
    assert pager.xpath(".//a[@rel='next']/@href") == ["../../../archive/2025/07/14.html"]
    assert pager.xpath(".//li[@class='main']/a/@href") == ["../../../index.html"]
    assert pager.xpath(".//time/@datetime") == ["2025-07-12", "2025-07-14"]
    # The title leads back to the main page; "last updated" is the main page's business.
    assert root.xpath("//h1/a/@href") == ["../../../index.html"]
    assert root.xpath("//p[@class='updated']") == []
    # The same feeds and sources as the main page, absolute.
    assert root.xpath("//head/link[@rel='alternate']/@href")[0] == BASE_URL + "atom.xml"
    assert texts(root, "//footer//section[@class='sources']//li") == [
        "दैनिक जागरण · फ़ीड",
        "बीबीसी हिंदी · फ़ीड",
    ]


def test_the_first_and_last_days_link_only_to_the_neighbour_they_have():
    oldest = parse(hindi_day(prev=None))
    assert oldest.xpath("//a[@rel='prev']") == []
    assert len(oldest.xpath("//a[@rel='next']")) == 1
    newest = parse(hindi_day(next_day=None))
    assert newest.xpath("//a[@rel='next']") == []
    assert texts(newest, "//nav[@class='pager']//a") == ["पिछला दिन: 12 जुलाई 2025", "ताज़ा ख़बरें"]


def test_an_english_day_page():
    root = parse(render_day_page(thirteenth(), SITE_EN, DayPage("2025-07-13", next="2025-07-14")))
    assert texts(root, "//main//h2") == ["July 13, 2025"]
    assert texts(root, "//nav[@class='pager']//a") == ["Latest", "Next day: July 14, 2025"]


def test_a_day_page_at_another_depth_links_from_there():
    page = render_day_page(thirteenth(), SITE_HI, DayPage("2025-07-13", prev="2025-07-12", depth=1))
    assert parse(page).xpath("//a[@rel='prev']/@href") == ["../archive/2025/07/12.html"]


def test_the_main_page_links_to_the_newest_day_page_only_when_there_is_one():
    root = parse(render_html(hindi_two_days(), SITE_HI, earlier="2025-07-11"))
    earlier = root.xpath("//main/p[@class='earlier']/a")
    assert [(a.text_content(), a.get("href")) for a in earlier] == [
        ("पिछले दिनों की ख़बरें", "archive/2025/07/11.html")
    ]
    assert parse(render_html(hindi_two_days(), SITE_HI)).xpath("//p[@class='earlier']") == []


def test_the_root_page_lists_the_channels_and_a_channels_page_is_its_own():
    root = parse(render_html(hindi_two_days(), SITE_HI, channels=(NEWS, SPORT)))
    nav = root.xpath("//nav[@class='channels']")[0]
    assert nav.get("aria-label") == "चैनल"
    assert [(a.text_content(), a.get("href")) for a in nav.xpath(".//a")] == [
        ("समाचार चैनल", BASE_URL + "news/"),
        ("खेल", BASE_URL + "sport/"),
    ]
    # A channel's pages are rendered with its own site (publications.channel_site).
    own_site = replace(SITE_HI, base_url=BASE_URL + "news/")
    channel = parse(render_html(hindi_two_days(), own_site, channel=NEWS))
    assert texts(channel, "//h1") == ["समाचार चैनल"]
    assert channel.xpath("//h1/a/@href") == [BASE_URL + "news/"]
    assert texts(channel, "//header/p")[0] == "देश-दुनिया की ख़बरें"
    assert channel.xpath("//head/link[@rel='alternate']/@href") == [
        BASE_URL + "news/atom.xml",
        BASE_URL + "news/rss.xml",
        BASE_URL + "news/feed.json",
    ]
    assert channel.xpath("//nav[@class='channels']") == []


def _publish_days(output: Path, days: list[str]) -> None:
    """A main page and a day page per day (newest first), as a publish would lay them out."""
    timeline = hindi_two_days()
    (output / PAGE_FILE).write_bytes(render_html(timeline, SITE_HI, earlier=days[0]))
    for n, day in enumerate(days):
        newer = days[n - 1] if n > 0 else None
        older = days[n + 1] if n + 1 < len(days) else None
        page = render_day_page(timeline, SITE_HI, DayPage(day, prev=older, next=newer))
        path = output / day_page_file(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(page)


def test_every_relative_link_of_the_pages_reaches_a_page(tmp_path: Path):
    """Across a month's end: from the main page to the newest day and back, and along the
    days both ways, each link a relative one that opens from a copy of output/ as files."""
    days = ["2025-08-01", "2025-07-31", "2025-07-13"]
    _publish_days(tmp_path, days)
    pages = [tmp_path / PAGE_FILE, *(tmp_path / day_page_file(d) for d in days)]
    reached = set()
    for page in pages:
        for href in parse(page.read_bytes()).xpath("//a/@href"):
            if urlsplit(href).scheme:
                continue  # a story's, a source's or a feed's own address
            target = Path(urlsplit(urljoin(page.as_uri(), href)).path)
            assert target.is_file(), (page, href)
            reached.add(target)
    assert reached == set(pages)


# --- a real browser ---------------------------------------------------------------------------

MEASURE = """<script>
(() => {
  const pager = document.querySelector("nav.pager");
  const out = {
    viewport: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    pagerTop: pager.getBoundingClientRect().top,
    lastArticleBottom: [...document.querySelectorAll("article")].pop()
      .getBoundingClientRect().bottom,
    pagerLinks: [...pager.querySelectorAll("a")].map(a => a.textContent),
    nextRight: pager.querySelector("li.next").getBoundingClientRect().right,
    mainRight: document.querySelector("main").getBoundingClientRect().right,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  parent.document.body.append(pre);
})();
</script>
"""


@pytest.fixture
def day_file(tmp_path: Path) -> Path:
    page = tmp_path / "archive" / "2025" / "07" / "13.html"
    page.parent.mkdir(parents=True)
    page.write_bytes(hindi_day())
    return page


@pytest.mark.slow
@needs_chromium
def test_chromium_screenshot_of_a_day_page_is_not_blank(tmp_path: Path, day_file: Path):
    shot = tmp_path / "day.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=412,915", day_file.as_uri())
    assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (412, 915)
    assert len(set(rows)) > 100, "the screenshot is (nearly) uniform"
    bpp = len(rows[0]) // width
    dark = sum(1 for row in rows for x in range(0, len(row), bpp) if sum(row[x : x + 3]) < 3 * 100)
    assert 0.005 < dark / (width * height) < 0.5


@pytest.mark.slow
@needs_chromium
def test_chromium_dom_of_a_day_page_has_the_hindi_day_and_its_neighbours(
    tmp_path: Path, day_file: Path
):
    result = chromium(tmp_path, "--dump-dom", day_file.as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    root = parse(result.stdout)
    assert texts(root, "//main//h2") == ["13 जुलाई 2025"]
    assert texts(root, "//main//h3") == [NIKAM, GAZA]
    assert texts(root, "//a[@rel='prev']") == ["पिछला दिन: 12 जुलाई 2025"]
    assert texts(root, "//a[@rel='next']") == ["अगला दिन: 14 जुलाई 2025"]


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_a_day_page_lays_out_at_desktop_and_phone_widths(tmp_path: Path, width: int, height: int):
    """Nothing wider than the screen; the day's links below its last brief, the newer day
    at the far end of the row."""
    page = hindi_day().decode("utf-8")
    framed = html.escape(page.replace("</body>", MEASURE + "</body>"), quote=True)
    measured = tmp_path / "measured.html"
    measured.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><iframe style="border:0;display:block"'
        f' width="{width}" height="{height}" srcdoc="{framed}"></iframe></body></html>',
        encoding="utf-8",
    )
    result = chromium(tmp_path, f"--window-size={max(width, 500)},{height}", "--dump-dom",
                      measured.as_uri())  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    found = json.loads(texts(parse(result.stdout), "//pre[@id='measured']")[0])
    assert found["viewport"] == width
    assert found["scrollWidth"] <= width, found
    assert found["pagerTop"] >= found["lastArticleBottom"], found
    assert found["pagerLinks"][1] == "ताज़ा ख़बरें", found
    assert abs(found["nextRight"] - found["mainRight"]) < 1, found  # at the end of the row

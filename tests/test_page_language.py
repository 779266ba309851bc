"""The page speaks the configured language: its own words from the gettext catalogues in
aggregator/render/locale/ (Hindi and English shipped, English the fallback), a "last updated"
time in the site's zone and language, and the list of sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest
import regex
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from aggregator.render.page import render_html
from aggregator.render.theme import LOCALE_DIR
from aggregator.settings import SiteSettings
from aggregator.types import SourceCredit, Timeline
from tests.test_page import (
    AMAR,
    BASE_URL,
    BBC,
    JAGRAN,
    SITE_EN,
    SITE_HI,
    hindi_two_days,
    item,
    parse,
    texts,
    timeline,
)

ROOT = Path(__file__).resolve().parent.parent
# The interface words of the page before it had catalogues, and every msgid since: none may
# show on a Hindi page. Format names (Atom, RSS) are names, the same in every language.
ENGLISH_WORDS = (
    "Subscribe",
    "Nothing here yet",
    "also:",
    "Last updated",
    "Sources",
    "feed",
    "JSON Feed",
    "no source has published",
)
FORMAT_NAMES = frozenset({"Atom", "RSS"})
DEVANAGARI = regex.compile(r"\p{Devanagari}")
LOCAL = SourceCredit(name="local", title="Local notes", feed_url="file:///srv/notes.xml")
SECRET = SourceCredit(
    name="secret",
    title="Members",
    feed_url="https://user:pw@members.example/feed?token=abc&lang=hi",
    site_url="https://members.example/?session_id=xyz",
)


def _catalog(language: str) -> Catalog:
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        return read_po(po, locale=language)


def _template_msgids() -> set[str]:
    with (LOCALE_DIR / "messages.pot").open("rb") as pot:
        return {str(m.id) for m in read_po(pot) if m.id}


def _shown(page: bytes) -> str:
    """Everything a reader sees or hears of the page: its text and its title attributes."""
    root = parse(page)
    return " ".join([root.text_content(), *root.xpath("//@title"), *root.xpath("//@aria-label")])


def _hindi_pages() -> list[bytes]:
    sources = (JAGRAN, BBC, AMAR, LOCAL)
    return [render_html(hindi_two_days(), SITE_HI, sources), render_html(Timeline(), SITE_HI)]


def test_a_hindi_page_shows_no_english_interface_words():
    for page in _hindi_pages():
        shown = _shown(page)
        for word in (*ENGLISH_WORDS, *(_template_msgids() - FORMAT_NAMES)):
            assert word not in shown, word
    full = _shown(_hindi_pages()[0])
    for hindi in ("सदस्यता लें:", "अंतिम अपडेट:", "अन्य स्रोत:", "स्रोत", "फ़ीड", "JSON फ़ीड"):
        assert hindi in full, hindi


def test_an_english_page_shows_no_hindi_words():
    sources = (
        SourceCredit(name="a", title="A Daily", feed_url="https://a.example/f", site_url=None),
        LOCAL,
    )
    also = (SourceCredit(name="b", title="B Times", feed_url="https://b.example/f"),)
    stories = timeline(
        item("Rain in the hills", "2025-07-12T20:00:00", source=sources[0], also=also),
        item("Markets close higher", "2025-07-11T09:00:00", source=sources[0], teaser="Up."),
    )
    for page in (render_html(stories, SITE_EN, sources), render_html(Timeline(), SITE_EN)):
        shown = _shown(page)
        assert not DEVANAGARI.search(shown), DEVANAGARI.findall(shown)
    shown = _shown(render_html(stories, SITE_EN, sources))
    for english in ("Subscribe:", "Last updated:", "(also: B Times)", "Sources", "feed"):
        assert english in shown, english


@pytest.mark.parametrize("language", ["hi-IN", "hi_IN"])
def test_a_region_of_hindi_gets_the_hindi_catalogue(language):
    site = SiteSettings("t", BASE_URL, "d", language, "Asia/Kolkata", BASE_URL)
    assert "सदस्यता लें:" in _shown(render_html(Timeline(), site))


@pytest.mark.parametrize("language", [None, "fr", "xx"])
def test_a_language_without_a_catalogue_falls_back_to_english(language):
    site = SiteSettings("t", BASE_URL, "d", language, "UTC", BASE_URL)
    assert "Subscribe:" in _shown(render_html(Timeline(), site))


def test_last_updated_is_the_timelines_time_in_the_sites_zone_and_language():
    hindi = parse(render_html(hindi_two_days(), SITE_HI))
    # The newest item is 06:15 UTC on 13 July: 11:45 in Kolkata.
    assert texts(hindi, "//header/p[@class='updated']") == [
        "अंतिम अपडेट: 13 जुलाई 2025, 11:45 am GMT+05:30"
    ]
    assert hindi.xpath("//header//time/@datetime") == ["2025-07-13T11:45:00+05:30"]
    english = parse(render_html(hindi_two_days(), SITE_EN))
    assert texts(english, "//header/p[@class='updated']") == [
        "Last updated: July 13, 2025, 11:45\u202fAM GMT+05:30"
    ]
    assert parse(render_html(Timeline(), SITE_EN)).xpath("//p[@class='updated']") == []


def test_sources_are_listed_with_public_links_to_their_sites_and_feeds():
    root = parse(render_html(hindi_two_days(), SITE_HI, (JAGRAN, BBC, SECRET, LOCAL)))
    listed = root.xpath("//footer//section[@class='sources']//li")
    assert [li.text_content() for li in listed] == [
        "दैनिक जागरण · फ़ीड",
        "बीबीसी हिंदी · फ़ीड",
        "Members · फ़ीड",
        "Local notes",  # a local file has no address a reader could open
    ]
    assert [li.xpath(".//a/@href") for li in listed] == [
        ["https://jagran.example/", "https://jagran.example/rss.xml"],
        ["https://bbc.example/hindi.xml"],
        ["https://members.example/", "https://members.example/feed?lang=hi"],
        [],
    ]
    page = render_html(hindi_two_days(), SITE_HI, (SECRET,))
    assert b"token" not in page and b"pw@" not in page and b"session_id" not in page


def test_the_published_page_lists_the_configured_sources(tmp_path: Path) -> None:
    """Through `render_outputs`, as a publish renders it: the credits reach the page."""
    from aggregator.render import PAGE_FILE, render_outputs  # noqa: PLC0415

    files = render_outputs(SITE_HI, hindi_two_days(), {"jagran": JAGRAN, "local": LOCAL})
    root = lxml.html.document_fromstring(files[PAGE_FILE])
    assert texts(root, "//section[@class='sources']//li") == ["दैनिक जागरण · फ़ीड", "Local notes"]


# --- the catalogues themselves ----------------------------------------------------------------


def test_every_interface_string_is_translated_into_hindi():
    hindi = _catalog("hi")
    assert {str(m.id) for m in hindi if m.id} == _template_msgids()
    untranslated = [m.id for m in hindi if m.id and (not m.string or m.fuzzy)]
    assert untranslated == []


@pytest.mark.parametrize("language", ["en", "hi"])
def test_the_shipped_mo_files_are_compiled_from_the_po_files(language):
    """`make messages` compiles them; a .po edited without compiling fails here."""
    with (LOCALE_DIR / language / "LC_MESSAGES" / "messages.mo").open("rb") as mo:
        compiled = {str(m.id): m.string for m in read_mo(mo) if m.id}
    source = {str(m.id): m.string for m in _catalog(language) if m.id and m.string}
    assert compiled == source


def test_the_pot_holds_every_string_the_template_and_code_mark(tmp_path: Path) -> None:
    """Extraction with the project's mappings finds exactly the committed .pot's msgids."""
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    result = subprocess.run(
        [str(pybabel), "extract", "-F", "pyproject.toml", "-o", str(pot), "aggregator/render"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with pot.open("rb") as fresh:
        assert {str(m.id) for m in read_po(fresh) if m.id} == _template_msgids()


@pytest.mark.parametrize(
    ("language", "direction"),
    [("ar", "rtl"), ("he", "rtl"), ("fa-IR", "rtl"), ("ur", "rtl"), ("hi", "ltr"), (None, "ltr")],
)
def test_the_page_runs_in_its_languages_direction(language, direction):
    """An Arabic, Hebrew, Persian or Urdu digest reads right to left: headlines, teasers and
    day headings start at the right edge, as a reader of the language expects."""
    site = SiteSettings("t", BASE_URL, "d", language, "UTC", BASE_URL)
    root = parse(render_html(Timeline(), site))
    assert root.get("dir") == direction

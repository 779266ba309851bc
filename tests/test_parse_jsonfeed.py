"""`parse_feed` on JSON Feed 1.0 and 1.1 documents (`aggregator.parse.jsonfeed`).

The same items read from RSS and from JSON Feed give equal entries (the shared field
rules of `parse.fields`); each JSON Feed field is read by its type; a document that is
not a JSON Feed is one `ParseError` line, a field of the wrong type one named warning;
and no JSON value at all makes the reader raise anything else (hypothesis).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aggregator.parse.fields as fields_module
from aggregator.errors import ParseError
from aggregator.parse.feed import parse_feed
from aggregator.parse.fields import CONTENT_LIMIT, ENTRY_LIMIT, TITLE_LIMIT
from aggregator.parse.jsonfeed import is_json_object
from aggregator.types import ParsedFeed
from tests.feedfactory import Item, json_feed, rss2

URL = "https://example.org/feed.json"
SITE = "https://example.org/news/"
FEED_JSON = {"Content-Type": "application/feed+json"}
PLAIN_JSON = {"Content-Type": "application/json"}
RSS_HEADERS = {"Content-Type": "application/rss+xml; charset=utf-8"}
V1 = "https://jsonfeed.org/version/1"
V11 = "https://jsonfeed.org/version/1.1"
IST = timezone(timedelta(hours=5, minutes=30))
NOW = datetime.now(UTC).replace(microsecond=0)

# Devanagari titles and summaries, a relative link, a trailing "और पढ़ें" (left out of
# teasers), markup a sanitizer must remove, authors, categories, a date a year ahead, a
# repeated guid: each rule the XML path applies, in one list.
ITEMS = [
    Item(
        title="राज्यसभा के लिए नामित हुए उज्ज्वल निकम, पीएम मोदी ने मराठी में फोन कर दी जानकारी",
        link="https://example.org/news/nikam",
        guid="tag:example.org,2025:1",
        date=datetime(2025, 7, 13, 10, 0, tzinfo=IST),
        summary_html=(
            "<p>देश के वरिष्ठ और चर्चित विशेष लोक अभियोजक उज्ज्वल निकम को राष्ट्रपति ने "
            "<b>नामित</b> किया है।</p><p><a href='/more/1'>और पढ़ें</a></p>"
        ),
        author="संवाददाता",
        categories=("देश", "राजनीति", "देश"),
    ),
    Item(
        title="“रुई बेचते-बेचते एक्टिंग सीखी है मैंने” – जानिए ‘पंचायत’ के बिनोद का सफर",
        link="https://example.org/news/binod",
        guid="tag:example.org,2025:2",
        date=datetime(2025, 7, 12, 23, 59, tzinfo=UTC),
        summary_html=(
            '<p onclick="x()">क्षत्रिय श्रृंगार <script>alert(1)</script>'
            '<a href="javascript:alert(1)">ख़बर</a> 👩‍🔬</p>'
        ),
    ),
    Item(
        title="अगले साल की ख़बर",
        link="https://example.org/news/future",
        guid="tag:example.org,2025:3",
        date=NOW + timedelta(days=365),
    ),
    Item(
        title="एक ही guid, दूसरी ख़बर",
        link="https://example.org/news/again",
        guid="tag:example.org,2025:3",
        date=datetime(2025, 7, 11, 8, 0, tzinfo=UTC),
        summary_html="<p>दूसरी</p>",
    ),
]


def document(items: list[Any], **feed: Any) -> bytes:
    document = {"version": V11, "title": "समाचार", **feed, "items": items}
    return json.dumps(document, ensure_ascii=False).encode()


def parsed(items: list[Any], *, zone: str = "UTC", **feed: Any) -> ParsedFeed:
    return parse_feed(document(items, **feed), FEED_JSON, URL, timezone=zone)


@pytest.mark.parametrize("version", ["1.1", "1"])
def test_the_same_items_read_from_rss_and_from_json_feed_are_equal_entries(version: str) -> None:
    from_rss = parse_feed(rss2("समाचार", SITE, ITEMS), RSS_HEADERS, URL, timezone="Asia/Kolkata")
    from_json = parse_feed(
        json_feed("समाचार", SITE, ITEMS, version=version),
        FEED_JSON,
        URL,
        timezone="Asia/Kolkata",
    )
    assert from_json.entries == from_rss.entries  # every field, ids and hashes included
    assert (from_json.title, from_json.link, from_json.warning) == (
        from_rss.title,
        from_rss.link,
        from_rss.warning,
    )
    nikam, binod, future, again = from_json.entries
    assert nikam.teaser.endswith("किया है।")  # the trailing "और पढ़ें" link is no teaser
    assert 'href="https://example.org/more/1"' in nikam.summary_html  # made absolute
    assert nikam.categories == ("देश", "राजनीति")
    assert "script" not in binod.summary_html and "javascript" not in binod.summary_html
    assert "onclick" not in binod.summary_html
    assert future.published == NOW + timedelta(days=365)  # kept; the update rules clamp it
    assert future.entry_id != again.entry_id  # a repeated id gives two items


def test_a_json_feed_1_0_with_author_is_read() -> None:
    body = json.dumps(
        {
            "version": V1,
            "title": "Blog",
            "home_page_url": SITE,
            "author": {"name": "Feed Author"},
            "items": [
                {
                    "id": 42,
                    "url": "a",
                    "title": "A",
                    "content_text": "x",
                    "author": {"name": "Ann"},
                },
                {"id": 7.0, "url": "b", "title": "B", "content_text": "y"},
            ],
        }
    ).encode()
    feed = parse_feed(body, PLAIN_JSON, URL)
    assert [(e.entry_id, e.link, e.author) for e in feed.entries] == [
        ("42", "https://example.org/news/a", "Ann"),
        ("7", "https://example.org/news/b", "Feed Author"),  # the feed's author is the item's
    ]
    assert feed.warning is None


def test_every_item_field_of_json_feed_1_1_is_read() -> None:
    feed = parsed(
        [
            {
                "id": "urn:x:1",
                "url": "https://example.org/p/1",
                "external_url": "https://elsewhere.example/story",
                "title": "शीर्षक &amp; <b>मोटा</b>",
                "content_html": "<p>पूरा <em>लेख</em></p>",
                "summary": "सार: 3 < 5",
                "date_published": "2025-07-13t10:00:00z",
                "date_modified": "2025-07-13T10:30:00",
                "authors": [{"url": "https://x.example/"}, {"name": "दूसरी लेखिका"}],
                "author": {"name": "ignored in 1.1 when authors has one"},
                "tags": ["खेल", 5, "खेल", "क्रिकेट"],
                "image": "https://example.org/i.png",
            },
            {"url": "https://elsewhere.example/only-external", "content_text": "a\n\nb <i>"},
            {"external_url": "https://elsewhere.example/linked", "title": "Linked"},
            {"title": "कोई पहचान नहीं", "content_html": "<p>बस पाठ</p>"},
        ],
        zone="Asia/Kolkata",
        home_page_url=SITE,
        language="hi",
        icon="https://example.org/icon.png",
        description="desc",
        feed_url=URL,
    )
    first, external, linked, bare = feed.entries
    assert feed.title == "समाचार" and feed.link == SITE
    assert first.entry_id == "urn:x:1" and first.link == "https://example.org/p/1"
    assert first.title == "शीर्षक & मोटा"  # markup is read as RSS titles' is
    assert first.summary_html == "सार: 3 &lt; 5"  # the summary, escaped, as Atom's is used
    assert first.teaser == "सार: 3 < 5"
    assert first.published == datetime(2025, 7, 13, 10, 0, tzinfo=UTC)
    assert first.updated == datetime(2025, 7, 13, 5, 0, tzinfo=UTC)  # zone-less: the source's
    assert first.author == "दूसरी लेखिका"  # the first author with a name
    assert first.categories == ("खेल", "क्रिकेट")
    assert external.entry_id == "https://elsewhere.example/only-external"  # id → url
    assert external.summary_html == "a\n\nb &lt;i&gt;" and external.teaser == "a b <i>"
    assert linked.link == "https://elsewhere.example/linked"  # external_url when no url
    assert bare.entry_id.startswith("sha256:") and bare.link is None  # id → url → hash
    assert feed.warning is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-07-13T10:00:00Z", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),
        ("2025-07-13T15:30:00+05:30", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),
        ("2025-07-13T10:00:00.123456789-04:00", datetime(2025, 7, 13, 14, 0, 0, 123456, UTC)),
        ("2025-07-13 15:30:00+05:30", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),
        ("2025-07-13T15:30:00", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),  # Asia/Kolkata
        ("Sun, 13 Jul 2025 10:00:00 GMT", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),
        ("Sun, 13 Jul 2025 15:30:00", datetime(2025, 7, 13, 10, 0, tzinfo=UTC)),
        ("0001-01-01T00:00:00+05:30", None),  # before year 1 in UTC: no date
        ("0001-01-01T00:00:00Z", None),  # a placeholder (.NET's): no date
        ("1970-01-01T00:00:00Z", None),  # Unix time 0: no date
        ("2025-07-13T10:00:00Z" + " " * 300, None),  # over the date cap
    ],
)
def test_dates_are_rfc_3339_in_utc_and_zone_less_ones_in_the_sources_zone(
    raw: str, expected: datetime | None
) -> None:
    feed = parsed([{"id": "1", "title": "t", "date_published": raw}], zone="Asia/Kolkata")
    assert feed.entries[0].published == expected
    assert (feed.warning is None) == (expected is not None)


def test_caps_are_those_of_rss() -> None:
    feed = parsed(
        [
            {
                "id": "x" * 5_000,
                "title": "शब्द " * 5_000,
                "content_html": "<p>" + "क" * (CONTENT_LIMIT + 10) + "</p>",
                "url": "https://example.org/" + "a" * 9_000,
                "tags": [f"t{n}" for n in range(5_000)],
            }
        ]
    )
    (entry,) = feed.entries
    assert len(entry.entry_id) <= 2_048 and entry.link is None
    assert entry.title.endswith("…") and len(entry.title) < TITLE_LIMIT * 4
    assert len(entry.summary_html) <= CONTENT_LIMIT + 20
    assert len(entry.categories) == 50


def test_a_document_of_too_many_items_keeps_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENTRY_LIMIT == 10_000
    monkeypatch.setattr(fields_module, "ENTRY_LIMIT", 100)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    items = [
        {"id": str(n), "title": f"t{n}", "date_published": (start + timedelta(hours=n)).isoformat()}
        for n in range(150)
    ]
    feed = parsed(items)
    assert [e.title for e in feed.entries] == [f"t{n}" for n in range(50, 150)]
    assert feed.warning == "kept the newest 100 of its 150 items"


VERSION = b'{"version": "' + V11.encode() + b'"'
# What the document is, what its Content-Type says, the error: one line each.
NOT_JSON_FEEDS = {
    "truncated": (VERSION + b', "items": [', FEED_JSON,
                  "malformed JSON Feed: not valid JSON at line 1, column 59: Expecting value"),
    "extra-data": (VERSION + b', "items": []} trailing', FEED_JSON,
                   "malformed JSON Feed: not valid JSON at line 1, column 62: Extra data"),
    "bare-version": (b'{"version": "1.1", "items": []}', FEED_JSON,
                     "malformed JSON Feed: \"version\" is '1.1', not a jsonfeed.org version URL"),
    "no-version": (b'{"items": []}', FEED_JSON, 'malformed JSON Feed: no "version"'),
    "api-answer": (b'{"error": {"code": 503}}', PLAIN_JSON, 'got JSON, not a feed: no "version"'),
    "version-number": (b'{"version": 1.1, "items": []}', {},
                       'got JSON, not a feed: "version" is a number, not a jsonfeed.org version'
                       " URL"),
    "no-items": (VERSION + b"}", FEED_JSON, 'malformed JSON Feed: no "items" array'),
    "items-object": (VERSION + b', "items": {"id": 1}}', FEED_JSON,
                     'malformed JSON Feed: "items" is an object, not an array'),
    "nan": (VERSION + b', "items": [NaN]}', FEED_JSON,
            "malformed JSON Feed: NaN is not a JSON value"),
    "infinity": (b'{"version": -Infinity}', FEED_JSON,
                 "malformed JSON Feed: -Infinity is not a JSON value"),
    "huge-number": (b'{"n": ' + b"9" * 5_000 + b"}", FEED_JSON,
                    "malformed JSON Feed: a number 5,000 digits long"),
    "deep-nesting": (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", FEED_JSON,
                     "malformed JSON Feed: nested too deeply to read"),
    "latin-1": ('{"title": "café"}'.encode("latin-1"), FEED_JSON,
                "malformed JSON Feed: not UTF-8 (byte 0xE9 at offset 14)"),
    "bad-utf-16": (b"\xff\xfe{\x00\x00\xd8", FEED_JSON,
                   "malformed JSON Feed: not valid utf-16-le at byte 4"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(NOT_JSON_FEEDS))
def test_a_document_that_is_no_json_feed_is_one_clear_error(kind: str) -> None:
    body, headers, error = NOT_JSON_FEEDS[kind]
    with pytest.raises(ParseError) as caught:
        parse_feed(body, headers, URL)
    assert str(caught.value) == error


# One field of an item of the wrong type, and the problem named.
WRONG_TYPES = [
    ({"title": 5}, "items[0].title is a number, not a string"),
    ({"url": ["x"]}, "items[0].url is an array, not a string"),
    ({"id": True}, "items[0].id is a boolean, not a string"),
    ({"id": {"a": 1}}, "items[0].id is an object, not a string"),
    ({"date_published": "कल"}, "items[0].date_published is not a date: 'कल'"),
    ({"date_modified": 1752400000}, "items[0].date_modified is a number, not a string"),
    ({"content_html": {"html": "x"}}, "items[0].content_html is an object, not a string"),
    ({"authors": "Ann"}, "items[0].authors is a string, not an array"),
    ({"authors": ["Ann"]}, "items[0].authors[0] is a string, not an object"),
    ({"author": {"name": 3}}, "items[0].author.name is a number, not a string"),
    ({"tags": "a,b"}, "items[0].tags is a string, not an array"),
]


@pytest.mark.parametrize(("field", "problem"), WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_left_out_and_named(
    field: dict[str, Any], problem: str
) -> None:
    item = {"id": "1", "title": "t", "content_text": "पाठ", **field}
    feed = parsed([item, {"id": "2", "title": "ठीक"}])
    assert feed.warning == f"malformed JSON Feed, read what could be read: {problem}"
    assert len(feed.entries) == 2 and feed.entries[1].entry_id == "2"


def test_items_that_are_no_objects_are_named_and_many_problems_are_counted() -> None:
    feed = parsed(["x", None, *([{"id": 1, "title": 2}] * 1_000), {"id": "ok", "title": "ठीक"}])
    assert feed.warning == (
        "malformed JSON Feed, read what could be read: items[0] is a string, not an object; "
        "items[1] is null, not an object; items[2].title is a number, not a string "
        "(and 999 more)"
    )
    assert [e.title for e in feed.entries] == ["ठीक"]  # the others have nothing in them


def test_feed_level_fields_of_the_wrong_type_are_left_out() -> None:
    feed = parsed([{"id": "1", "title": "t"}], title=["x"], home_page_url=3, authors={})
    assert (feed.title, feed.link) == (None, None)
    assert feed.warning == (
        "malformed JSON Feed, read what could be read: home_page_url is a number, not a "
        "string; title is an array, not a string; authors is an object, not an array"
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xef\xbb\xbf" + document([{"id": "1", "title": "बीओएम"}]), "application/json"),
        (("\ufeff" + document([{"id": "1", "title": "बीओएम"}]).decode()).encode("utf-16-le"),
         "application/json"),
        (b"\n\t " + document([{"id": "1", "title": "बीओएम"}]), "text/plain"),
        (document([{"id": "1", "title": "बीओएम"}]), "application/rss+xml"),
    ],
    ids=["utf-8-bom", "utf-16-bom", "leading-space-text-plain", "labelled-rss"],
)  # fmt: skip
def test_a_json_feed_is_recognized_by_its_first_byte_whatever_its_label(
    body: bytes, content_type: str
) -> None:
    assert is_json_object(body)
    feed = parse_feed(body, {"Content-Type": content_type}, URL)
    assert [e.title for e in feed.entries] == ["बीओएम"]


def test_a_few_invalid_bytes_in_utf_8_are_dropped_with_a_warning() -> None:
    body = document([{"id": "1", "title": "नमस्ते दुनिया, नमस्ते दुनिया"}])
    body = body.replace("दुनिया,".encode(), "दुनिया".encode() + b"\xff,", 1)
    feed = parse_feed(body, FEED_JSON, URL)
    assert feed.entries[0].title == "नमस्ते दुनिया, नमस्ते दुनिया"
    assert feed.warning == "not valid UTF-8: dropped 1 invalid byte(s), read the rest"


def test_duplicate_keys_take_the_last_value_and_a_later_version_is_read_as_1_1() -> None:
    body = b'{"version": "https://jsonfeed.org/version/2", "items": [{"title": "a", "title": "b"}]}'
    feed = parse_feed(body, FEED_JSON, URL)
    assert [e.title for e in feed.entries] == ["b"]  # as JavaScript's JSON.parse reads it
    assert feed.warning == "JSON Feed version '2' read as 1.1"


def test_lone_surrogates_and_control_characters_are_dropped() -> None:
    body = b'{"version": "' + V11.encode() + (
        b'", "items": [{"id": "\\ud800' + b"x" * 3_000 + b'", "title": "a\\u0000b\\udfff",'
        b' "content_html": "<p>c\\u0001d</p>", "tags": ["\\ud83d"]}]}'
    )  # fmt: skip
    (entry,) = parse_feed(body, FEED_JSON, URL).entries
    assert entry.title == "ab" and entry.summary_html == "<p>cd</p>" and entry.categories == ()
    assert entry.entry_id.encode("utf-8")  # storable: no surrogate left


# -- any JSON at all ----------------------------------------------------------------------------

ITEM_KEYS = (
    "id", "url", "external_url", "title", "content_html", "content_text", "summary",
    "date_published", "date_modified", "authors", "author", "tags", "image",
)  # fmt: skip
# Lone surrogates included (JSON can carry "\ud800"), and strings shaped like the values
# the fields expect, so that the reader's deeper paths are reached too.
TEXT = st.text(st.characters(exclude_categories=()))
SHAPED = st.sampled_from(
    ["2025-07-13T10:00:00Z", "2025-07-13", "https://example.org/x", "/relative", "<p>x</p>", ""]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | SHAPED,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from((*ITEM_KEYS, "name")) | TEXT, children, max_size=4)
    ),
    max_leaves=20,
)
FEED_KEYS = ("title", "home_page_url", "feed_url", "authors", "author", "items", "version")


def _assert_sound(feed: ParsedFeed) -> None:
    for entry in feed.entries:
        for text in (entry.entry_id, entry.title, entry.summary_html, entry.teaser):
            text.encode("utf-8")  # no lone surrogate: the store could not keep it
        assert entry.published is None or entry.published.tzinfo is UTC
    assert feed.warning is None or "\n" not in feed.warning


def _parse_any(body: bytes) -> None:
    try:
        feed = parse_feed(body, FEED_JSON, URL, timezone="Asia/Kolkata")
    except ParseError as e:
        assert "\n" not in str(e)
        return
    _assert_sound(feed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_value_as_the_document_is_a_feed_or_one_parse_error(value: Any) -> None:
    _parse_any(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(ITEM_KEYS), JSON_VALUES),
    st.dictionaries(st.sampled_from(FEED_KEYS), JSON_VALUES),
)
def test_any_json_value_in_any_field_is_read_or_left_out(
    item: dict[str, Any], feed: dict[str, Any]
) -> None:
    _parse_any(json.dumps({"version": V11, "items": [item], **feed}).encode())
    _parse_any(json.dumps({**feed, "version": V1, "items": [item, item]}).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_after_a_brace_are_a_feed_or_one_parse_error(tail: bytes) -> None:
    _parse_any(b"{" + tail)


def test_a_json_feeds_websub_hub_and_feed_url_are_its_hub_and_self() -> None:
    document = {
        "version": V11,
        "title": "हब",
        "feed_url": "/feed.json",
        "hubs": [
            {"type": "rssCloud", "url": "https://cloud.example.org/"},
            {"type": "websub", "url": "https://hub.example.org/"},
            {"type": "WebSub", "url": "https://second.example.org/"},
        ],
        "items": [],
    }
    feed = parse_feed(json.dumps(document).encode(), FEED_JSON, URL)
    assert (feed.hub, feed.self_url) == ("https://hub.example.org/", URL)
    for hubs in (None, "https://hub.example.org/", [{"type": "WebSub", "url": "ftp://x/"}], [7]):
        feed = parse_feed(json.dumps({**document, "hubs": hubs}).encode(), FEED_JSON, URL)
        assert feed.hub is None, hubs


def test_a_lone_surrogate_is_dropped_not_the_item() -> None:
    """JSON may write half a character ("\\ud800"); an item holding one in its id, title or
    link was skipped whole, as unreadable. The half character is dropped, as characters
    XML forbids are; an escaped backslash before "ud800" is text, and stays."""
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "T\\ud800", "items": ['
        b'{"id": "j\\ud800-1", "url": "https://j.example/1\\udfff", "title": "Lone \\udc00one",'
        b' "content_text": "a \\\\ud800 b \\ud83d\\ude00"}]}'
    )
    feed = parse_feed(body, FEED_JSON, "https://j.example/feed.json")
    [entry] = feed.entries
    assert (entry.entry_id, entry.title, entry.link) == ("j-1", "Lone one", "https://j.example/1")
    assert "\\ud800" in entry.teaser and "\U0001f600" in entry.teaser
    assert feed.warning is None

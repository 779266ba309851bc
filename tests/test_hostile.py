"""The real CLI against a hostile server: every misbehaviour ends as one clear line.

Each case runs `aggregator once` in a subprocess on a feeds.toml naming that case alone (a 3 s
timeout) and checks what an operator sees (exit 0, the source's line: `error: …` naming the
problem, or `N new`), what the store recorded, and what was published (exact titles in
feed.json, Atom and RSS; sanitized summaries; at most `max_items` items). One run takes every
case at once, plus two good feeds, under a memory and time bound, and its outputs go through
the W3C feed validator. The unresolvable host runs in a fresh network namespace, so no DNS
query can leave the machine. Everything else is on 127.0.0.1 (tests/hostile.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from aggregator.parse.fields import TITLE_LIMIT, looks_like_markup
from aggregator.store import SourceState
from aggregator.store.sqlite import SqliteStore
from aggregator.text import make_teaser
from bench.measure import become_subreaper, run_measured
from tests import hostile
from tests.conftest import ROOT, run_cli
from tests.feedfactory import Item, atom, rss2
from tests.feedserver import FeedServer
from tests.hostile import HostileServer
from tests.published import published_bytes
from tests.test_w3c_validator import VALIDATOR, VALIDATOR_PYTHON, _assert_clean

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ATOM = "{http://www.w3.org/2005/Atom}"
TIMEOUT = 3.0  # [poll] timeout, seconds
MAX_ITEMS = 200  # [publish] max_items, the default
MARGIN = 60.0  # a bound for "the run ends", not a benchmark
MEMORY_LIMIT = 300 * 1024 * 1024
_LINE = re.compile(r"^(\S+)\s{2,}(.*)$")
# An exception's class name or a Python repr in a message means an error was not translated.
_UNTRANSLATED = re.compile(r"\b\w+(?:Error|Exception)\b|Traceback|bytearray\(|\bb'|\bb\"")


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


def _name(path: str) -> str:
    return path.strip("/")


def write_config(root: Path, feeds: Sequence[tuple[str, str]]) -> Path:
    lines = [
        "[aggregator]",
        'base_url = "http://127.0.0.1:8080/"',
        "[poll]",
        f'timeout = "{TIMEOUT:g}s"',
        # Parse budgets are tests/test_parse_budget.py's; here a crowded machine (tests in
        # parallel) must not fail a 10,000-item feed's parse for want of CPU.
        'parse_timeout = "120s"',
        "[publish]",
        'max_age = "100000d"',
    ]
    for name, url in feeds:
        lines += ["[[feeds]]", f'name = "{name}"', f'url = "{url}"']
    root.mkdir(parents=True, exist_ok=True)
    config = root / "feeds.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@dataclass
class Run:
    """One `aggregator once`: what it printed, and accessors for what it stored and published."""

    root: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    lines: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for line in self.stdout.splitlines():
            match = _LINE.match(line)
            if match:
                assert match.group(1) not in self.lines, f"two lines for {match.group(1)}"
                self.lines[match.group(1)] = match.group(2)

    @property
    def output(self) -> Path:
        return self.root / "output"

    def items(self) -> list[dict[str, Any]]:
        feed = json.loads((self.output / "feed.json").read_text(encoding="utf-8"))
        items: list[dict[str, Any]] = feed["items"]
        return items

    def titles(self) -> list[str]:
        return sorted(i.get("title", "") for i in self.items())

    def atom_entries(self) -> list[etree._Element]:
        return etree.fromstring((self.output / "atom.xml").read_bytes()).findall(f"{ATOM}entry")

    def rss_items(self) -> list[etree._Element]:
        return etree.fromstring((self.output / "rss.xml").read_bytes()).findall("channel/item")

    def state(self, name: str) -> SourceState:
        store = SqliteStore.open(self.root / "state" / "aggregator.db")
        try:
            state = store.source_state(name)
        finally:
            store.close()
        assert state is not None, f"the store does not know {name}"
        return state

    def published_strings(self) -> list[str]:
        """Every title and summary as published in feed.json, Atom and RSS (XML unescaped)."""
        out: list[str] = []
        for entry in self.items():
            out += [str(entry.get(key, "")) for key in ("title", "content_html", "summary")]
        for element in self.atom_entries():
            out += ["".join(str(t) for t in element.itertext())]
        for element in self.rss_items():
            out += ["".join(str(t) for t in element.itertext())]
        return out

    def published_summaries(self) -> list[str]:
        """Every summary as published: feed.json HTML and teaser, Atom and RSS (unescaped)."""
        out = [str(i.get(k, "")) for i in self.items() for k in ("content_html", "summary")]
        for entry in self.atom_entries():
            out += [e.text or "" for e in entry if e.tag in (f"{ATOM}summary", f"{ATOM}content")]
        out += [i.findtext("description") or "" for i in self.rss_items()]
        return out


def once(root: Path, feeds: Sequence[tuple[str, str]], *, timeout: float = 120) -> Run:
    config = write_config(root, feeds)
    started = time.monotonic()
    result = run_cli("once", "--config", str(config), timeout=timeout)
    run = Run(root, result.returncode, result.stdout, result.stderr, time.monotonic() - started)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert "internal error" not in run.stdout + run.stderr, run.stdout + run.stderr
    names = [name for name, _ in feeds]
    assert sorted(run.lines) == sorted(names), run.stdout
    assert run.stdout.splitlines()[-1].startswith("published "), run.stdout
    return run


def once_on(server: HostileServer, root: Path, path: str) -> Run:
    return once(root, [(_name(path), server.url(path))])


def assert_one_clear_line(message: str) -> None:
    assert "\n" not in message and "\r" not in message
    assert 0 < len(message) <= 200, message
    assert message == message.strip(), f"stray whitespace: {message!r}"
    assert not message.endswith(":"), f"a detail is missing after the colon: {message!r}"
    assert not _UNTRANSLATED.search(message), f"not a message for an operator: {message!r}"


def assert_published_xml_is_well_formed(run: Run) -> None:
    for name in ("rss.xml", "atom.xml"):
        etree.fromstring((run.output / name).read_bytes())  # raises if not well-formed
    json.loads((run.output / "feed.json").read_text(encoding="utf-8"))


# -- failures: one line that names the problem ------------------------------------------------

FAILURES = {
    "/gzip-bomb": "too large",
    "/deflate-bomb": "too large",
    "/brotli-bomb": "too large",
    "/huge": "too large",
    "/huge-chunked": "too large",
    "/drip": "timed out",
    "/drip-headers": "timed out",
    "/html": "HTML page",
    "/empty": "empty",
    "/json": "JSON",
    "/reset": "connection (lost|reset)",
    "/reset-mid-body": "connection (lost|reset)",
    "/not-http": "HTTP",
    "/redirect-loop": "redirects",
    "refused": "connection refused",
}


@pytest.mark.parametrize("path", list(FAILURES))
def test_failure_is_one_clear_line(server: HostileServer, tmp_path: Path, path: str) -> None:
    url = server.refused_url if path == "refused" else server.url(path)
    name = _name(path)
    requests_before = server.requests(path)
    run = once(tmp_path, [(name, url)])
    line = run.lines[name]
    assert line.startswith("error: "), line
    message = line.removeprefix("error: ")
    assert re.search(FAILURES[path], message), f"{path}: {message!r}"
    assert_one_clear_line(message)
    state = run.state(name)
    assert (state.last_outcome, state.last_error, state.entries) == ("failed", message, 0)
    assert state.failures == 1
    assert f"{name}: {message}" in run.stderr  # logged once, naming the source
    assert run.items() == []
    assert_published_xml_is_well_formed(run)
    # The deadline holds: a dripping server cannot keep a cycle busy.
    assert run.seconds < TIMEOUT + 20, f"{path} took {run.seconds:.1f}s"
    if path == "/redirect-loop":
        assert 2 <= server.requests(path) - requests_before <= 10


# -- entities: never expanded, never fetched --------------------------------------------------


def test_billion_laughs_is_not_expanded(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/billion-laughs")
    line = run.lines["billion-laughs"]
    assert re.fullmatch(r"1 new|error: .*", line), line
    if line.startswith("error: "):
        assert_one_clear_line(line.removeprefix("error: "))
    published = "".join(run.published_strings())
    assert "lollol" not in published
    assert max((len(s) for s in run.published_strings()), default=0) < 10_000
    assert (run.output / "rss.xml").stat().st_size < 100_000
    assert run.seconds < 30


def test_external_entities_are_never_resolved(server: HostileServer, tmp_path: Path) -> None:
    probes_before = server.requests("/xxe-probe")
    run = once_on(server, tmp_path, "/external-entity")
    line = run.lines["external-entity"]
    assert re.fullmatch(r"1 new|error: .*", line), line
    assert server.requests("/xxe-probe") == probes_before, "the parser fetched an external entity"
    secret = Path("/etc/passwd").read_text(encoding="utf-8").splitlines()[0]
    for name, data in published_bytes(run.output).items():
        text = data.decode("utf-8")
        assert secret not in text and "root:x:" not in text, name
        assert "fetched by the parser" not in text, name
    state = run.state("external-entity")
    assert "root:x:" not in (state.title or "")


# -- a document cut short ---------------------------------------------------------------------


def test_truncated_feed_keeps_the_complete_items(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/truncated")
    line = run.lines["truncated"]
    match = re.fullmatch(r"(\d+) new", line)
    assert match, line
    titles = run.titles()
    assert set(hostile.TRUNCATED_COMPLETE) <= set(titles), titles
    assert "Never seen" not in titles
    assert int(match.group(1)) == len(titles) == run.state("truncated").entries
    # What was cut off is no item: nothing published without a title or a link.
    for entry in run.items():
        assert entry.get("title") or entry.get("url"), f"an empty item was published: {entry}"
    assert "truncated: feed is not well-formed" in run.stderr  # the operator is told
    assert_published_xml_is_well_formed(run)


# -- encodings: exact text, or at least a warning ----------------------------------------------

DECODED = {
    "/charset-xml-only": hostile.RUSSIAN,
    "/charset-header-only": hostile.FRENCH,
    "/charset-wrong": hostile.RUSSIAN,  # the header says utf-8; the bytes cannot be UTF-8
    "/gb2312": hostile.CHINESE,
    "/utf8-bom": hostile.HINDI,
    # RFC 7303 makes a BOM authoritative over the charset parameter (so do browsers).
    "/utf8-bom-latin1-header": hostile.HINDI,
}


def assert_titles_everywhere(run: Run, expected: Sequence[str]) -> None:
    want = sorted(expected)
    assert run.titles() == want
    assert sorted(e.findtext(f"{ATOM}title") or "" for e in run.atom_entries()) == want
    assert sorted(e.findtext("title") or "" for e in run.rss_items()) == want


@pytest.mark.parametrize("path", list(DECODED))
def test_text_is_decoded_exactly(server: HostileServer, tmp_path: Path, path: str) -> None:
    run = once_on(server, tmp_path, path)
    expected = DECODED[path]
    assert run.lines[_name(path)] == f"{len(expected)} new"
    assert_titles_everywhere(run, expected)
    # Each description repeats its title: the teasers must be exact too.
    assert sorted(i.get("summary", "") for i in run.items()) == sorted(expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/charset-none", hostile.JAPANESE), ("/charset-wrong-reverse", hostile.RUSSIAN)],
)
def test_undecidable_encoding_is_exact_or_reported(
    server: HostileServer, tmp_path: Path, path: str, expected: Sequence[str]
) -> None:
    """Shift_JIS with no declaration at all, or UTF-8 bytes labelled windows-1251 by the header.

    What is achievable: a document with no BOM, no charset and no encoding declaration must be
    UTF-8 by the XML spec, so Shift_JIS there is strictly malformed; exact text takes detection
    (feedparser uses chardet when it is installed, and then finds CP932; without chardet it reads
    windows-1252, silently). In the second case the bytes are valid UTF-8 and the XML
    declaration says so, but RFC 7303 lets the header win. Either way the operator can always be
    told: silently publishing mojibake is the one wrong outcome.
    """
    run = once_on(server, tmp_path, path)
    name = _name(path)
    line = run.lines[name]
    if run.titles() == sorted(expected):
        assert line == f"{len(expected)} new"
        return
    warned = [
        log for log in run.stderr.splitlines() if name in log and re.search("encod|charset", log)
    ]
    assert warned or line.startswith("error: "), (
        f"{path}: published {run.titles()} instead of {sorted(expected)}, "
        f"and said nothing about the encoding (line: {line!r}, stderr: {run.stderr!r})"
    )


def test_control_characters_are_removed(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/control-chars")
    assert run.lines["control-chars"] == "3 new"
    expected = [*hostile.CONTROL_TITLES.values(), "Summary with controls"]
    assert_titles_everywhere(run, expected)
    summaries = [i["content_html"] for i in run.items() if i["title"] == "Summary with controls"]
    assert summaries == [hostile.CONTROL_SUMMARY[1]]
    for name, data in published_bytes(run.output).items():
        assert b"\x00" not in data and b"\x0b" not in data, name
    assert_published_xml_is_well_formed(run)


def test_invalid_utf8_bytes_spoil_only_their_item(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/invalid-bytes")
    assert run.lines["invalid-bytes"] == "3 new"
    titles = run.titles()
    for title in hostile.HINDI:
        assert title in titles, f"a clean item's title was garbled: {titles}"
    dirty = [t for t in titles if t not in hostile.HINDI]
    assert len(dirty) == 1, titles
    assert dirty[0].startswith(hostile.INVALID_HEAD), dirty
    assert dirty[0].endswith(hostile.INVALID_TAIL), dirty
    assert_published_xml_is_well_formed(run)


# -- hostile markup ----------------------------------------------------------------------------

FORBIDDEN = ("<script", "<style", "<iframe", "<form", "<object", "<embed", "<svg", "<base",
             "<meta", "onclick", "onerror", "onload", "javascript:", "data:", "style=")  # fmt: skip


def test_markup_is_sanitized_and_links_absolute(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/markup")
    assert run.lines["markup"] == "3 new"
    by_url = {i.get("url"): i for i in run.items()}
    assert sorted(by_url, key=str) == sorted(
        [hostile.MARKUP_STORY, hostile.MARKUP_RELATIVE_STORY, None], key=str
    ), "relative item links are made absolute; a javascript: link is no link"
    html = " ".join(i["content_html"] for i in run.items())
    for url in hostile.MARKUP_ABSOLUTE_URLS:
        assert f'"{url}"' in html, f"{url} not in {html}"
    for attribute in re.findall(r'(?:href|src)="([^"]*)"', html):
        assert attribute.startswith(("https://", "http://")), attribute
    # The item whose only link was javascript: has no link in any output.
    assert by_url[None]["title"] == "Javascript-only link"
    (entry,) = [
        e for e in run.atom_entries() if e.findtext(f"{ATOM}title") == "Javascript-only link"
    ]
    assert entry.xpath("a:link[not(@rel) or @rel='alternate']", namespaces={"a": ATOM[1:-1]}) == []
    (item,) = [i for i in run.rss_items() if i.findtext("title") == "Javascript-only link"]
    assert item.find("link") is None
    guid = item.find("guid")
    assert guid is None or guid.get("isPermaLink") == "false"
    for text in run.published_summaries():
        squeezed = text.lower().replace("\t", "").replace(" ", "")
        for bad in FORBIDDEN:
            assert bad not in squeezed, f"{bad!r} published in {text!r}"
    page = (run.output / "index.html").read_text(encoding="utf-8").lower()
    for bad in ("<script", "<iframe", "<form", "onclick", "javascript:", "data:"):
        assert bad not in page, f"{bad!r} in index.html"
    # Titles are plain text: markup is gone, whatever the tag (the W3C validator warns about
    # an RSS title containing HTML, and some readers render RSS titles as HTML).
    assert_titles_everywhere(run, list(hostile.MARKUP_TITLES.values()))


# -- absurd but legal feeds --------------------------------------------------------------------


def test_ten_thousand_items_are_stored_and_max_items_published(
    server: HostileServer, tmp_path: Path
) -> None:
    run = once_on(server, tmp_path, "/ten-thousand")
    assert run.lines["ten-thousand"] == f"{hostile.MANY_ITEMS} new"
    status = run_cli("status", "--json", "--config", str(tmp_path / "feeds.toml"))
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)
    assert (row["name"], row["items"], row["outcome"]) == (
        "ten-thousand",
        hostile.MANY_ITEMS,
        "updated",
    )
    items = run.items()
    assert len(items) == MAX_ITEMS
    assert len(run.atom_entries()) == MAX_ITEMS
    assert len(run.rss_items()) == MAX_ITEMS
    # The newest are the ones published, newest first.
    assert [i["title"] for i in items[:3]] == [f"Item {n} of many" for n in range(3)]


def test_hundred_thousand_character_title_is_cut_at_a_word(
    server: HostileServer, tmp_path: Path
) -> None:
    run = once_on(server, tmp_path, "/long-title")
    assert run.lines["long-title"] == "1 new"
    title = make_teaser(hostile.LONG_TITLE, TITLE_LIMIT)
    assert title.endswith("…") and hostile.LONG_TITLE.startswith(title[:-1])
    assert hostile.LONG_TITLE[len(title) - 1] == " "  # the cut fell between words
    assert run.titles() == [title]
    assert [e.findtext(f"{ATOM}title") for e in run.atom_entries()] == [title]
    assert [e.findtext("title") for e in run.rss_items()] == [title]
    assert_published_xml_is_well_formed(run)
    if VALIDATOR_PYTHON.exists() and (VALIDATOR / "src" / "feedvalidator").is_dir():
        _assert_clean(run.output)


def test_rss_titles_that_decode_to_markup_are_published_without_tags(
    server: HostileServer, tmp_path: Path
) -> None:
    """A reader that puts an RSS <title> into innerHTML sees no tag; text about a tag stays."""
    run = once_on(server, tmp_path, "/double-escaped")
    expected = sorted(hostile.DOUBLE_ESCAPED.values())
    assert sorted(str(e.findtext("title")) for e in run.rss_items()) == expected
    assert sorted(run.titles()) == expected
    assert [looks_like_markup(str(e.findtext("title"))) for e in run.rss_items()] == [False] * 5
    rss = (run.output / "rss.xml").read_bytes()
    for tag in (b"b", b"i", b"em"):  # however the renderer escapes "<" and ">"
        assert not re.search(rb"(&lt;|&#x3C;|&#60;)/" + tag + rb"(&gt;|>)", rss, re.IGNORECASE)


def test_bidi_controls_are_published_in_no_title(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/bidi")
    assert sorted(run.titles()) == sorted([hostile.BIDI_TITLE[1], hostile.BIDI_URDU[1]])
    controls = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    atom = etree.fromstring((run.output / "atom.xml").read_bytes())
    titles = [str(t.text) for t in atom.iter(f"{ATOM}title")]  # the sources' titles too
    titles += [str(e.findtext("title")) for e in run.rss_items()]
    assert "Bidi feed" in titles and not controls & set("".join(titles))
    assert "\u200f" in (run.output / "feed.json").read_text(encoding="utf-8")  # marks stay


@pytest.mark.parametrize(
    ("path", "titles"),
    [("/no-dates", hostile.NO_DATE_TITLES), ("/no-guids", hostile.NO_GUID_TITLES)],
)
def test_items_keep_their_identity_across_runs(
    server: HostileServer, tmp_path: Path, path: str, titles: Sequence[str]
) -> None:
    name = _name(path)
    first = once_on(server, tmp_path, path)
    assert first.lines[name] == f"{len(titles)} new"
    assert first.titles() == sorted(titles)
    for entry in first.items():
        assert entry["date_published"]
    published = published_bytes(first.output)
    second = once_on(server, tmp_path, path)
    assert second.lines[name] == "no new items"
    assert published_bytes(second.output) == published


def test_items_sharing_one_guid_stay_distinct(server: HostileServer, tmp_path: Path) -> None:
    run = once_on(server, tmp_path, "/shared-guid")
    assert run.lines["shared-guid"] == f"{hostile.SHARED_GUID_ITEMS} new"
    assert run.state("shared-guid").entries == hostile.SHARED_GUID_ITEMS
    items = run.items()
    assert len(items) == hostile.SHARED_GUID_ITEMS
    assert len({i["id"] for i in items}) == hostile.SHARED_GUID_ITEMS
    assert run.titles() == sorted(
        f"Shared guid story {n}" for n in range(hostile.SHARED_GUID_ITEMS)
    )


# -- everything at once: bounded memory and time ----------------------------------------------

# Newer than every hostile item, so the good items are among the `max_items` published.
GOOD_NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
GOOD_RSS = [
    Item(f"अच्छी खबर संख्या {n}", f"https://good-rss.example.org/{n}", f"good-rss-{n}",
         GOOD_NOW - timedelta(hours=n), "<p>सब ठीक है</p>")
    for n in range(3)
]  # fmt: skip
GOOD_ATOM = [
    Item(f"Good Atom story {n}", f"https://good-atom.example.org/{n}",
         f"tag:good-atom.example.org,2025:{n}", GOOD_NOW - timedelta(hours=n, minutes=30),
         "<p>All is well</p>")
    for n in range(3)
]  # fmt: skip


@dataclass(frozen=True)
class Measured:
    run: Run
    names: list[str]
    peak_rss: int  # bytes
    status: list[dict[str, Any]]


@pytest.fixture(scope="module")
def everything(
    server: HostileServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Measured]:
    good = FeedServer().start()
    try:
        good.add("/good.rss", rss2("अच्छा स्रोत", "https://good-rss.example.org/", GOOD_RSS))
        good.add(
            "/good.atom",
            atom("Good source", "https://good-atom.example.org/", "tag:good-atom", GOOD_ATOM),
        )
        feeds = [(_name(p), server.url(p)) for p in hostile.CASES]
        feeds += [
            ("refused", server.refused_url),
            ("good-rss", good.url("/good.rss")),
            ("good-atom", good.url("/good.atom")),
        ]
        root = tmp_path_factory.mktemp("everything")
        config = write_config(root, feeds)
        env = {**os.environ, "PYTHONUTF8": "1", "NO_COLOR": "1", "COLUMNS": "200"}
        out, err = root / "stdout.txt", root / "stderr.txt"
        # The whole process tree counts (parsing runs in worker processes): each process's
        # own peak RSS, summed.
        become_subreaper()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            code, usage = run_measured(
                [sys.executable, "-m", "aggregator", "once", "--config", str(config)],
                ROOT,
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        seconds = usage.wall
        run = Run(
            root,
            code,
            out.read_text(encoding="utf-8"),
            err.read_text(encoding="utf-8"),
            seconds,
        )
        peak = int(usage.peak_mb * 2**20)
        print(
            f"\nall {len(feeds)} sources at once: peak RSS {peak / 2**20:.1f} MiB, "
            f"wall time {seconds:.1f} s (timeout {TIMEOUT:g} s)"
        )
        status = run_cli("status", "--json", "--config", str(config))
        assert status.returncode == 0, status.stderr
        yield Measured(run, [n for n, _ in feeds], peak, json.loads(status.stdout))
    finally:
        good.stop()


def test_all_cases_at_once_in_bounded_memory_and_time(everything: Measured) -> None:
    run = everything.run
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert sorted(run.lines) == sorted(everything.names), run.stdout
    for name, line in run.lines.items():
        assert re.fullmatch(r"\d+ new|error: .+", line), f"{name}: {line}"
    assert everything.peak_rss < MEMORY_LIMIT, f"peak RSS {everything.peak_rss / 2**20:.0f} MiB"
    assert run.seconds < TIMEOUT + MARGIN, f"{run.seconds:.1f}s"
    titles = set(run.titles())
    for good in (*GOOD_RSS, *GOOD_ATOM):
        assert good.title in titles
    assert run.lines["good-rss"] == "3 new" and run.lines["good-atom"] == "3 new"
    assert len(run.items()) <= MAX_ITEMS
    # Every source's poll was recorded, with its outcome.
    rows = {row["name"]: row for row in everything.status}
    assert sorted(rows) == sorted(everything.names)
    for name, line in run.lines.items():
        row = rows[name]
        if line.startswith("error: "):
            assert (row["outcome"], row["error"]) == ("failed", line.removeprefix("error: "))
        else:
            assert row["outcome"] == "updated" and row["error"] is None, row
    unclear = []
    for name, line in run.lines.items():
        try:
            if line.startswith("error: "):
                assert_one_clear_line(line.removeprefix("error: "))
        except AssertionError as e:
            unclear.append(f"{name}: {e}".splitlines()[0])
    assert unclear == [], "\n".join(unclear)


def test_all_cases_at_once_publish_valid_feeds(everything: Measured) -> None:
    if not (VALIDATOR / "src" / "feedvalidator").is_dir() or not VALIDATOR_PYTHON.exists():
        pytest.skip(f"W3C feed validator not found at {VALIDATOR} (set FEEDVALIDATOR; see README)")
    _assert_clean(everything.run.output)


# -- an unresolvable host, with no way for a DNS query to leave ---------------------------------


def test_unresolvable_host_in_a_network_namespace(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {probe.stderr.decode().strip()}")
    config = write_config(tmp_path, [("nowhere", "http://feeds.nonexistent.invalid/feed.xml")])
    env = {**os.environ, "PYTHONUTF8": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [unshare, "-rn", sys.executable, "-m", "aggregator", "once", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    run = Run(tmp_path, result.returncode, result.stdout, result.stderr, 0.0)
    assert run.lines["nowhere"] == "error: cannot resolve host feeds.nonexistent.invalid"
    state = run.state("nowhere")
    assert state.last_error == "cannot resolve host feeds.nonexistent.invalid"

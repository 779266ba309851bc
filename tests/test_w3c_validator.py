"""The published RSS and Atom pass the W3C feed validator with no errors and no warnings.

The validator is not vendored: set FEEDVALIDATOR to a checkout of w3c/feedvalidator whose
`.venv/bin/python` has its requirements (lxml, html5lib, rdflib) — README, "Validating the
output". Without one these tests are skipped and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.feedfactory import Item, atom, rss1, rss2
from tests.feedserver import FeedServer

VALIDATOR = Path(os.environ.get("FEEDVALIDATOR", "/opt/feedvalidator"))
VALIDATOR_PYTHON = VALIDATOR / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not (VALIDATOR / "src" / "feedvalidator").is_dir() or not VALIDATOR_PYTHON.exists(),
    reason=f"W3C feed validator not found at {VALIDATOR} (set FEEDVALIDATOR; see README)",
)


def _validate(path: Path, base: str) -> list[str]:
    result = subprocess.run(
        [
            str(VALIDATOR_PYTHON),
            str(ROOT / "tests" / "w3c_validate.py"),
            str(VALIDATOR),
            base,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def _assert_clean(output: Path, directory: str = "") -> None:
    """`directory`: a channel's ("hindi/"), whose feeds are served under it."""
    for name in ("rss.xml", "atom.xml"):
        problems = _validate(output / directory / name, f"http://127.0.0.1:8080/{directory}{name}")
        assert problems == [], f"{directory}{name}: " + "\n".join(problems)


def test_offline_example_feeds_are_valid(tmp_path: Path) -> None:
    example = tmp_path / "offline"
    shutil.copytree(
        ROOT / "examples" / "offline", example, ignore=shutil.ignore_patterns("output", "state")
    )
    result = run_cli("once", "--config", str(example / "feeds.toml"))
    assert result.returncode == 0, result.stderr
    for directory in ("", "hindi/", "english/"):  # the root and the example's two channels
        _assert_clean(example / "output", directory)


def test_awkward_input_still_gives_valid_feeds(tmp_path: Path, feed_server: FeedServer) -> None:
    """No author, no title, control characters, entities, scripts, a future date, a bad feed id."""
    now = datetime.now(UTC).replace(microsecond=0)
    items = [
        Item("", "https://a.example/1", "g1", now - timedelta(hours=1), "<p>बिना शीर्षक की ख़बर</p>"),
        Item(
            "Control\x0bchars & <entities> in a title",
            "https://a.example/2",
            "g2",
            now - timedelta(hours=2),
        ),
        Item(
            "From the future", "https://a.example/3", "g3", now + timedelta(days=3), "<b>soon</b>"
        ),
        Item(
            "Script",
            "https://a.example/4",
            "g4",
            now - timedelta(hours=3),
            "<script>x()</script><a href='javascript:x()'>x</a>",
        ),
    ]
    feed_server.add("/a.xml", rss2("A & B", "https://a.example/", items).replace(b"\x0b", b"&#11;"))
    others = [
        Item("Atom & friends", "https://b.example/1", "urn:b:1", now - timedelta(hours=4)),
        Item("", "https://b.example/2", "urn:b:2", now - timedelta(hours=5), "<p>untitled</p>"),
    ]
    feed_server.add("/b.atom", atom("B", "https://b.example/", "urn:b", others))
    rdf = [Item("RDF ✓", "https://c.example/1", "c1", now - timedelta(hours=6), "<p>x &amp; y</p>")]
    feed_server.add("/c.rdf", rss1("C", "https://c.example/", rdf))
    config = tmp_path / "feeds.toml"
    config.write_text(
        "\n".join(
            f'[[feeds]]\nurl = "{feed_server.url(p)}"' for p in ("/a.xml", "/b.atom", "/c.rdf")
        ),
        encoding="utf-8",
    )
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    _assert_clean(tmp_path / "output")


def test_empty_timeline_still_gives_valid_feeds(tmp_path: Path) -> None:
    """Nothing fetched yet (every source down): the feeds exist, empty and valid."""
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nurl = "http://127.0.0.1:9/refused.xml"\n', encoding="utf-8")
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    _assert_clean(tmp_path / "output")


def test_feeds_advertising_websub_hubs_are_valid(tmp_path: Path) -> None:
    """The built-in hub and an external one: Atom's `link rel="hub"`, RSS's `atom:link`."""
    example = tmp_path / "offline"
    shutil.copytree(
        ROOT / "examples" / "offline", example, ignore=shutil.ignore_patterns("output", "state")
    )
    config = example / "feeds.toml"  # its base_url is set: the built-in hub is advertised
    text = config.read_text(encoding="utf-8")
    config.write_text('[websub]\nhubs = ["https://hub.example.org/"]\n' + text, encoding="utf-8")
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    for name in ("rss.xml", "atom.xml"):
        assert 'href="http://127.0.0.1:8080/websub" rel="hub"' in (
            example / "output" / name
        ).read_text(encoding="utf-8")
    _assert_clean(example / "output")


def test_archive_documents_are_valid(tmp_path: Path, feed_server: FeedServer) -> None:
    """Items over several past days: each day's RFC 5005 archive document, and atom.xml
    with its `prev-archive`, pass the validator, the root's and a channel's."""
    now = datetime.now(UTC).replace(microsecond=0)
    items = [
        Item(
            f"Day {d} & item {n}: <b>bold</b> claims",
            f"https://a.example/{d}/{n}",
            f"g{d}-{n}",
            now - timedelta(days=d, hours=n),
            "<p>बिना शीर्षक की ख़बर</p>" if n else "",
        )
        for d in range(1, 5)
        for n in range(3)
    ]
    feed_server.add("/a.xml", rss2("A & B", "https://a.example/", items))
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[publish]\nmax_items = 2\n[[feeds]]\nurl = "{feed_server.url("/a.xml")}"\n'
        'tags = ["t"]\n[[channels]]\nname = "news"\ntitle = "News"\ntags = ["t"]\n',
        encoding="utf-8",
    )
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    output = tmp_path / "output"
    archives = sorted((output / "archive").rglob("*.atom"))
    channel = sorted((output / "news" / "archive").rglob("*.atom"))
    assert len(archives) >= 4
    assert [p.relative_to(output / "news") for p in channel] == [
        p.relative_to(output) for p in archives
    ]
    for path in [output / "atom.xml", *archives, output / "news" / "atom.xml", *channel]:
        name = path.relative_to(output).as_posix()
        problems = _validate(path, f"http://127.0.0.1:8080/{name}")
        assert problems == [], f"{name}: " + "\n".join(problems)

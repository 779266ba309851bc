"""A broken feeds.toml gets one line naming file, line and key path; exit 2; no traceback.

Each case runs the real CLI (`aggregator check`) in a subprocess, as an operator would.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.daemon import Daemon
from tests.conftest import run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import _items
from tests.test_daemon_inprocess import FAST, _config, _feed, _run_for

GOOD_FEED = '[[feeds]]\nurl = "https://example.org/feed.xml"\n'

CASES = [
    pytest.param(
        '[aggregator\ntitle = "x"\n',
        "feeds.toml:1: invalid TOML: ",
        id="syntax-error",
    ),
    pytest.param(
        '[poll]\nintervall = "15m"\n' + GOOD_FEED,
        'feeds.toml:2: poll.intervall: unknown key; did you mean "interval"?',
        id="unknown-key-with-hint",
    ),
    pytest.param(
        '[pol]\ninterval = "15m"\n' + GOOD_FEED,
        'feeds.toml:1: pol: unknown key; did you mean "poll"?',
        id="unknown-table",
    ),
    pytest.param(
        '[poll]\nconcurrency = "ten"\n' + GOOD_FEED,
        'feeds.toml:2: poll.concurrency: expected a whole number, got "ten"',
        id="wrong-type",
    ),
    pytest.param(
        '[poll]\npartial_parse = "yes"\n' + GOOD_FEED,
        'feeds.toml:2: poll.partial_parse: expected true or false, got "yes"',
        id="partial-parse-not-a-boolean",
    ),
    pytest.param(
        GOOD_FEED
        + GOOD_FEED.replace("feed.xml", "b.xml")
        + GOOD_FEED.replace("feed.xml", "c.xml")
        + '[[feeds]]\nurl = "https://example.org/d.xml"\n\ninterval = "often"\n',
        'feeds.toml:10: feeds[3].interval: expected a duration like "15m", got "often"',
        id="bad-duration",
    ),
    pytest.param(
        '[[feeds]]\nurl = "ftp://example.org/feed.xml"\n',
        "feeds.toml:2: feeds[0].url: expected an http, https or file:// URL, or a path, "
        'got "ftp://example.org/feed.xml"',
        id="bad-url-scheme",
    ),
    pytest.param(
        '[[feeds]]\nurl = "https://"\n',
        'feeds.toml:2: feeds[0].url: expected a URL with a host name, got "https://"',
        id="bad-url-no-host",
    ),
    pytest.param(
        GOOD_FEED + '\n[[feeds]]\nurl = "HTTPS://EXAMPLE.org/feed.xml"\nname = "other"\n',
        "feeds.toml:5: feeds[1].url: duplicate source: the same URL as feeds[0] (line 2)",
        id="duplicate-url",
    ),
    pytest.param(  # RFC 3986 6.2.2: an escaped letter is the letter, the default port none
        GOOD_FEED + '\n[[feeds]]\nurl = "https://example.org:443/%66eed.xml"\nname = "other"\n',
        "feeds.toml:5: feeds[1].url: duplicate source: the same URL as feeds[0] (line 2)",
        id="duplicate-url-escaped",
    ),
    pytest.param(  # an IRI and the URI it is (found by a review: import-opml added it again)
        '[[feeds]]\nurl = "https://समाचार.example/हिंदी/फ़ीड.xml"\n'
        '[[feeds]]\nurl = "https://xn--61b3bh3a5ab.example/%E0%A4%B9%E0%A4%BF%E0%A4%82'
        '%E0%A4%A6%E0%A5%80/%E0%A4%AB%E0%A4%BC%E0%A5%80%E0%A4%A1.xml"\nname = "other"\n',
        "feeds.toml:4: feeds[1].url: duplicate source: the same URL as feeds[0] (line 2)",
        id="duplicate-url-iri",
    ),
    pytest.param(
        '[[feeds]]\nurl = "https://a.example/"\nname = "news"\n'
        '[[feeds]]\nurl = "https://b.example/"\nname = "news"\n',
        'feeds.toml:6: feeds[1].name: duplicate source name "news" (also feeds[0], line 1); '
        "give one a different name",
        id="duplicate-name",
    ),
    pytest.param(
        '[aggregator]\ntimezone = "Asia/Kolkatta"\n' + GOOD_FEED,
        'feeds.toml:2: aggregator.timezone: unknown time zone "Asia/Kolkatta" '
        '(expected an IANA name like "Asia/Kolkata")',
        id="unknown-timezone",
    ),
    pytest.param(
        GOOD_FEED + 'timezone = "Mars/Olympus"\n',
        'feeds.toml:3: feeds[0].timezone: unknown time zone "Mars/Olympus" '
        '(expected an IANA name like "Asia/Kolkata")',
        id="unknown-timezone-per-feed",
    ),
    pytest.param(
        "",
        "feeds.toml:1: feeds: no sources configured; add a [[feeds]] table with a url",
        id="empty-file",
    ),
    pytest.param(
        '[aggregator]\ntitle = "x"\n\n[[feeds]]\nname = "nourl"\n',
        "feeds.toml:4: feeds[0]: missing required key url",
        id="missing-url",
    ),
    pytest.param(
        GOOD_FEED + 'tags = "hindi"\n',
        'feeds.toml:3: feeds[0].tags: expected an array of strings like ["hindi", "news"], '
        'got "hindi"',
        id="tags-not-array",
    ),
    pytest.param(
        "[server]\nport = 70000\n" + GOOD_FEED,
        "feeds.toml:2: server.port: expected a port from 1 to 65535, got 70000",
        id="port-out-of-range",
    ),
    pytest.param(
        "[publish]\nmax_items = 0\n" + GOOD_FEED,
        "feeds.toml:2: publish.max_items: expected a number of at least 1, got 0",
        id="max-items-zero",
    ),
    pytest.param(
        GOOD_FEED + 'titel = "typo"\n',
        'feeds.toml:3: feeds[0].titel: unknown key; did you mean "title"?',
        id="unknown-feed-key",
    ),
    pytest.param(
        'feeds = "https://example.org/feed.xml"\n',
        "feeds.toml:1: feeds: expected an array of tables ([[feeds]]), "
        'got "https://example.org/feed.xml"',
        id="feeds-not-array",
    ),
    pytest.param(
        GOOD_FEED + 'name = "has space"\n',
        "feeds.toml:3: feeds[0].name: expected a name of letters, digits, '.', '_' or '-' "
        '(at most 64), got "has space"',
        id="bad-name",
    ),
    pytest.param(
        GOOD_FEED + 'name = "news\\n"\n',
        "feeds.toml:3: feeds[0].name: expected a name of letters, digits, '.', '_' or '-' "
        '(at most 64), got "news\\x0a"',
        id="name-with-a-final-newline",
    ),
    pytest.param(
        '[publish]\nmax_age = "-5d"\n' + GOOD_FEED,
        'feeds.toml:2: publish.max_age: expected a duration like "15m", got "-5d"',
        id="negative-duration",
    ),
    pytest.param(
        '[aggregator]\nbase_url = "not a url"\n' + GOOD_FEED,
        "feeds.toml:2: aggregator.base_url: expected an http or https URL like "
        '"https://example.org/", got "not a url"',
        id="bad-base-url",
    ),
]


CASES += [
    pytest.param(
        '[aggregator]\ntimezone = "Asia"\n' + GOOD_FEED,
        'feeds.toml:2: aggregator.timezone: unknown time zone "Asia" '
        '(expected an IANA name like "Asia/Kolkata")',
        id="timezone-is-a-directory",
    ),
    pytest.param(
        "[poll]\ninterval = nan\n" + GOOD_FEED,
        "feeds.toml:2: poll.interval: expected a positive duration of at least 1ms, got nan",
        id="nan-duration",
    ),
    pytest.param(
        GOOD_FEED + 'interval = "99999999999w"\n',
        "feeds.toml:3: feeds[0].interval: expected a duration of at most 1000 years, "
        'got "99999999999w"',
        id="huge-duration",
    ),
    pytest.param(
        GOOD_FEED + 'title = "bell\\u0007"\n',
        "feeds.toml:3: feeds[0].title: contains control characters that XML cannot carry: "
        '"bell\\x07"',
        id="control-character",
    ),
    pytest.param(
        '[[feeds]]\nurl = "~nosuchuser-xyz/feed.xml"\n',
        'feeds.toml:2: feeds[0].url: invalid value "~nosuchuser-xyz/feed.xml": ',
        id="odd-home-directory",
    ),
]

CASES += [
    pytest.param(
        GOOD_FEED + 'exclude = ["cricket", "(unclosed"]\n',
        'feeds.toml:3: feeds[0].exclude: item 1 "(unclosed" is not a valid regular expression: ',
        id="bad-regex",
    ),
    pytest.param(
        '[publish]\nmax_age = "30d"\n[store]\nkeep = "7d"\n' + GOOD_FEED,
        "feeds.toml:4: store.keep: must be at least [publish] max_age, "
        "or published items would be deleted",
        id="keep-shorter-than-max-age",
    ),
    pytest.param(
        '[store]\nurl = "mysql://agg:s3cret@db.example/agg"\n' + GOOD_FEED,
        'feeds.toml:2: store.url: expected a PostgreSQL URL like "postgresql://host/dbname", '
        'got a "mysql://" URL (an SQLite file goes in [store] path)',
        id="store-url-bad-scheme",
    ),
    pytest.param(
        '[store]\npath = "state/a.db"\nurl = "postgresql:///agg"\n' + GOOD_FEED,
        "feeds.toml:3: store.url: [store] path and url name two stores; keep one",
        id="store-path-and-url",
    ),
    pytest.param(
        '[poll]\ntimeout = "30s"\nlease = "20s"\n' + GOOD_FEED,
        "feeds.toml:3: poll.lease: must be longer than [poll] timeout, or a slow poll would be "
        "handed to another daemon and polled twice",
        id="lease-shorter-than-timeout",
    ),
    # The regex engine spells counted repeats out when it compiles: 2.7 GB for this one.
    pytest.param(
        '[[feeds]]\nurl = "https://example.org/feed.xml"\ninclude = ["a{10000000}"]\n',
        'feeds.toml:3: feeds[0].include: item 0 "a{10000000}" spells out more than 100,000 '
        "characters once its counted repeats ({n}) are written out",
        id="pattern-spelled-out-too-long",
    ),
    pytest.param(
        '[[feeds]]\nurl = "https://example.org/feed.xml"\nexclude = ["(x(ab){400}){400}"]\n',
        'feeds.toml:3: feeds[0].exclude: item 0 "(x(ab){400}){400}" spells out more than '
        "100,000 characters once its counted repeats ({n}) are written out",
        id="pattern-nested-repeats",
    ),
    pytest.param(  # spaces would be nothing, and the count took them for items
        '[[feeds]]\nurl = "https://example.org/feed.xml"\ninclude = ["(?x)(?:a{1000}) {5000}"]\n',
        'feeds.toml:3: feeds[0].include: item 0 "(?x)(?:a{1000}) {5000}": verbose mode (?x) '
        "is not taken",
        id="pattern-verbose",
    ),
    # Lines end at "\n" alone: U+2028 (pasted text) ended one for `splitlines`, and every
    # error after it named the wrong line (and the unquoted-duration hint was lost).
    pytest.param(
        '[aggregator]\ntitle = "a\u2028b"\n# c\u2029d\u0085e\n'
        + GOOD_FEED
        + 'interval = "often"\n',
        'feeds.toml:6: feeds[0].interval: expected a duration like "15m", got "often"',
        id="line-numbers-after-u2028",
    ),
    pytest.param(
        "# note\u2028more\n[poll]\ninterval = 15m\n" + GOOD_FEED,
        "feeds.toml:3: invalid TOML: Expected newline or end of document after a statement "
        '(column 14); quote it: "15m"',
        id="unquoted-duration-after-u2028",
    ),
    # A dotted key is where it is written, not at its table's header.
    pytest.param(
        '[aggregator]\ntitle = "t"\n' + GOOD_FEED + '\n\nfilters.include = ["x"]\n',
        "feeds.toml:7: feeds[0].filters: unknown key (known keys: url, name, title, interval, "
        "timezone, tags, include, exclude)",
        id="dotted-key-line",
    ),
    # An HTTP header: check said nothing, and `once`/`run` failed with a traceback (the
    # daemon, reloading it, closed its client and made none: every poll failed after).
    pytest.param(
        '[poll]\nuser_agent = "समाचार-bot/1.0"\n' + GOOD_FEED,
        "feeds.toml:2: poll.user_agent: must be at most 512 characters of visible ASCII "
        '(an HTTP header), got "समाचार-bot/1.0"',
        id="user-agent-not-ascii",
    ),
    # Found by a review: each published into every feed as written.
    pytest.param(
        '[aggregator]\nbase_url = "https://example.org/digest?lang=hi"\n' + GOOD_FEED,
        "feeds.toml:2: aggregator.base_url: expected a URL without a query or fragment, got "
        '"https://example.org/digest?lang=hi"',
        id="base-url-query",
    ),
    pytest.param(
        '[aggregator]\nbase_url = "https://example.org/digest#top"\n' + GOOD_FEED,
        "feeds.toml:2: aggregator.base_url: expected a URL without a query or fragment, got "
        '"https://example.org/digest#top"',
        id="base-url-fragment",
    ),
    pytest.param(
        '[aggregator]\nbase_url = "https://editor:s3cret@example.org/"\n' + GOOD_FEED,
        "feeds.toml:2: aggregator.base_url: expected a URL without a user name or password "
        "(they would be published in every feed), got 'https://***@example.org/'",
        id="base-url-user-info",
    ),
    pytest.param(
        '[aggregator]\nlanguage = "हिंदी"\n' + GOOD_FEED,
        'feeds.toml:2: aggregator.language: expected a language tag like "hi" or "hi-IN", '
        'got "हिंदी"',
        id="language-not-a-tag",
    ),
    pytest.param(
        '[aggregator]\nlanguage = "hi IN"\n' + GOOD_FEED,
        'feeds.toml:2: aggregator.language: expected a language tag like "hi" or "hi-IN", '
        'got "hi IN"',
        id="language-with-a-space",
    ),
    pytest.param(
        '[poll]\nuser_agent = "bot/1.0\\r\\nX-Evil: 1"\n' + GOOD_FEED,
        "feeds.toml:2: poll.user_agent: must be at most 512 characters of visible ASCII "
        '(an HTTP header), got "bot/1.0\\x0d\\x0aX-Evil: 1"',
        id="user-agent-line-break",
    ),
]


def _check(tmp_path: Path, text: str | bytes) -> tuple[int, str, str]:
    config = tmp_path / "feeds.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text, encoding="utf-8")
    result = run_cli("check", "--config", "feeds.toml", cwd=tmp_path)
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_broken_config_gives_one_line_and_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    status, _, stderr = _check(tmp_path, text)
    assert status == 2
    assert "Traceback" not in stderr
    first = stderr.splitlines()[0]
    assert first.startswith("error: " + expected), first
    if not expected.endswith(": "):
        assert first == "error: " + expected


def test_a_bad_store_url_never_shows_its_password(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[store]\nurl = "mysql://agg:s3cret@db/agg"\n' + GOOD_FEED)
    from_file = run_cli("check", "--config", "feeds.toml", cwd=tmp_path)
    config.write_text(GOOD_FEED)
    from_env = run_cli(
        "check",
        "--config",
        "feeds.toml",
        cwd=tmp_path,
        env={"AGGREGATOR_STORE_URL": "agg:s3cret@db/agg"},
    )
    assert from_file.returncode == from_env.returncode == 2
    assert "s3cret" not in from_file.stderr + from_env.stderr
    assert from_env.stderr.splitlines() == [
        "error: environment: AGGREGATOR_STORE_URL: expected a PostgreSQL URL like "
        '"postgresql://host/dbname", got something else (an SQLite file goes in '
        "[store] path)"
    ]


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    status, _, stderr = _check(tmp_path, GOOD_FEED + "\n[poll]\ninterval = 15m\n")
    assert status == 2
    assert stderr.startswith("error: feeds.toml:5: invalid TOML: ")
    assert "Traceback" not in stderr


def test_not_utf8(tmp_path: Path) -> None:
    status, _, stderr = _check(tmp_path, GOOD_FEED.encode() + b'title = "\xff"\n')
    assert status == 2
    assert stderr.splitlines() == ["error: feeds.toml:3: invalid TOML: the file is not UTF-8"]


def test_missing_file(tmp_path: Path) -> None:
    result = run_cli("check", "--config", "nowhere.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: nowhere.toml:1: file not found"]


def test_every_problem_is_reported_once_each(tmp_path: Path) -> None:
    text = '[poll]\nintervall = "15m"\nconcurrency = 0\n[[feeds]]\nurl = "gopher://x"\n'
    status, _, stderr = _check(tmp_path, text)
    assert status == 2
    lines = stderr.splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "feeds.toml:2",
        "feeds.toml:3",
        "feeds.toml:5",
    ]


def test_once_also_refuses_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "feeds.toml").write_text(
        '[[feeds]]\nurl = "https://x.example/"\ninterval = "often"\n'
    )
    result = run_cli("once", "--config", "feeds.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        'error: feeds.toml:3: feeds[0].interval: expected a duration like "15m", got "often"'
    ]
    assert not (tmp_path / "output").exists()


def test_valid_config_lists_sources(tmp_path: Path) -> None:
    status, stdout, stderr = _check(
        tmp_path, GOOD_FEED + 'name = "ex"\ntags = ["hindi"]\ninterval = "1h"\n'
    )
    assert status == 0, stderr
    assert "ex" in stdout and "https://example.org/feed.xml" in stdout and "1h" in stdout
    assert stdout.rstrip().endswith("feeds.toml: ok")


# --- files the TOML parser cannot handle ------------------------------------------------

DEEP = "a = " + "[" * 100_000 + "\n"  # tomllib recurses once per level
DEEP_INLINE = "a = " + "{b = " * 50_000 + "\n"


def _huge(path: Path) -> None:
    """Valid TOML of 12 MB: over the 10 MB limit, so never parsed at all."""
    with path.open("w", encoding="utf-8") as f:
        f.write('[[feeds]]\nurl = "https://x.example/feed"\n')
        for i in range(120_000):
            f.write(f"# {i:06} {'x' * 90}\n")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["deep", "deep-inline", "huge"])
def test_a_file_the_parser_cannot_handle_is_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "feeds.toml"
    if kind == "huge":
        _huge(config)
        expected = "error: feeds.toml:1: larger than 10 MB"
    else:
        config.write_text(DEEP if kind == "deep" else DEEP_INLINE, encoding="utf-8")
        expected = "error: feeds.toml:1: invalid TOML: "
    opml = str(Path(__file__).parent / "data" / "opml" / "nested-categories.opml")
    commands = (["check"], ["once"], ["run"], ["add", "https://y.example/feed"])
    for command in (*commands, ["import-opml", opml]):
        result = run_cli(*command, "--config", "feeds.toml", cwd=tmp_path, timeout=60)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert len(result.stderr.splitlines()) == 1, (command, result.stderr[-2000:])
        assert result.stderr.startswith(expected), (command, result.stderr)
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("kind", ["deep", "huge"])
def test_a_reload_of_such_a_file_keeps_the_last_good_config_and_logs_one_line(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    _feed(tmp_path, _items("a", 1))
    config = _config(tmp_path)
    good = load_config(config)
    daemon = Daemon(config, good, options=FAST)

    async def edit() -> None:
        written = config.with_name("feeds.toml.new")  # renamed into place, as editors do
        if kind == "huge":
            _huge(written)
        else:
            written.write_text(DEEP, encoding="utf-8")
        written.replace(config)
        await asyncio.sleep(1.0)  # the watcher reloads (debounced 200 ms)
        assert daemon.reload() is False  # and SIGHUP alike

    with caplog.at_level(logging.ERROR):
        asyncio.run(_run_for(daemon, 0.2, during=edit))
    assert daemon.config == good
    # One line per reload (the watcher's, then ours), never a traceback.
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(problems) >= 2
    assert len({r.getMessage() for r in problems}) == 1
    assert problems[0].getMessage().startswith("configuration not reloaded: ")
    assert all(r.exc_info is None for r in problems)


# -- a UTF-8 byte order mark (Windows Notepad) -------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    status, stdout, stderr = _check(tmp_path, BOM + GOOD_FEED.encode())
    assert (status, stderr) == (0, ""), stderr
    assert "example.org" in stdout


def test_lines_after_a_byte_order_mark_keep_their_numbers(tmp_path: Path) -> None:
    status, _, stderr = _check(tmp_path, BOM + (GOOD_FEED + "\n[poll]\ninterval = 15m\n").encode())
    assert status == 2
    assert stderr.startswith("error: feeds.toml:5: invalid TOML: ")


def test_add_to_a_file_with_a_byte_order_mark_drops_it(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config = tmp_path / "feeds.toml"
    config.write_bytes(BOM + b'# mine\n[aggregator]\ntitle = "x"\n')
    feed_url = feed_server.add("/feed.xml", rss2("News", "https://n.example/", []))
    result = run_cli("add", feed_url, "--name", "news", "--config", str(config))
    assert result.returncode == 0, result.stderr
    written = config.read_bytes()
    assert written.startswith(b'# mine\n[aggregator]\ntitle = "x"\n'), written
    assert feed_url.encode() in written
    assert run_cli("check", "--config", str(config)).returncode == 0


def test_a_configuration_error_quoting_a_url_hides_its_password(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nurl = "ftp://reader:hunter2secret@host.example/feed"\n')
    for command in ("check", "once"):
        done = run_cli(command, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 2
        assert "feeds.toml:2:" in done.stderr and "hunter2secret" not in done.stderr


@pytest.mark.timeout(60)
def test_a_config_that_is_a_fifo_is_one_line_not_a_hang(tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer: every command hung, and a daemon's reload thread
    (with every later reload behind it) for good. Only a regular file is read."""
    os.mkfifo(tmp_path / "feeds.toml")
    for command in (["check"], ["once"], ["status"], ["add", "https://y.example/feed"]):
        result = run_cli(*command, "--config", "feeds.toml", cwd=tmp_path, timeout=20)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert result.stderr.strip() == (
            "error: feeds.toml:1: cannot read: not a regular file (a FIFO, a device or a socket)"
        ), command


@pytest.mark.timeout(60)
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_import_opml_reads_only_a_regular_file(tmp_path: Path, special: str) -> None:
    """`import-opml /dev/zero` grew to gigabytes in seconds, and a FIFO hung it."""
    if special == "fifo":
        os.mkfifo(tmp_path / "list.opml")
        special = str(tmp_path / "list.opml")
    result = run_cli("import-opml", special, "--config", "feeds.toml", cwd=tmp_path, timeout=20)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {special}: not a regular file (a FIFO, a device or a socket)"
    )


def test_a_locale_spelling_of_a_language_is_read_as_a_tag(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[aggregator]\nlanguage = "hi_IN"\n' + GOOD_FEED, encoding="utf-8")
    assert load_config(config).site.language == "hi-IN"

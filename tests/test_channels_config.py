"""`[[channels]]` in feeds.toml: each mistake is one line naming the key and the line; a tag
no source carries is a warning; `check` and `status` show the channels.

The CLI cases run the real `aggregator check` in a subprocess, as an operator would.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.routing import Route

from aggregator.config import load_config
from aggregator.config_channels import CHANNEL_NAME, RESERVED_NAMES, SERVER_ROUTES
from aggregator.errors import ConfigError
from aggregator.publications import publications_of
from aggregator.render import OUTPUT_FILES
from aggregator.server import create_app
from aggregator.server.files import PublishedFiles
from tests.conftest import run_cli

FEEDS = """\
[aggregator]
title = "Digest"
base_url = "https://digest.example.org/"

[[feeds]]
url = "https://a.example.org/feed.xml"
name = "hindi-news"
tags = ["hindi", "news"]

[[feeds]]
url = "https://b.example.org/feed.xml"
name = "world"
tags = ["english", "news"]

[[feeds]]
url = "https://c.example.org/feed.xml"
name = "science"
tags = ["english"]
"""  # 18 lines, then a blank one: channels written after it start at line 20


def _config(tmp_path: Path, channels: str) -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(FEEDS + "\n" + channels, encoding="utf-8")
    return path


def _problems(tmp_path: Path, channels: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, channels), display_name="feeds.toml")
    return [str(e) for e in (caught.value, *caught.value.others)]


def test_channels_become_settings_with_the_roots_defaults(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            '[[channels]]\nname = "english"\ntags = ["english"]\n\n'
            '[[channels]]\nname = "picked"\ntitle = "Picked"\nsources = ["science", "hindi-news"]\n'
            'language = "hi"\ntimezone = "Asia/Kolkata"\nmax_items = 20\nexclude = ["sport"]\n\n'
            '[[channels]]\nname = "cricket"\ninclude = ["cricket"]\n',
        )
    )
    english, picked, cricket = config.channels
    assert english.sources == ("world", "science")  # in [[feeds]] order
    assert (english.title, english.language, english.timezone) == ("english", None, "UTC")
    assert english.max_items == config.publish.max_items == 200
    assert english.description == "english: the latest from Digest"
    assert picked.sources == ("hindi-news", "science")  # [[feeds]] order, not the list's
    assert (picked.language, picked.timezone, picked.max_items) == ("hi", "Asia/Kolkata", 20)
    assert [p.text for p in picked.filters.exclude] == ["sport"]
    assert cricket.sources == ("hindi-news", "world", "science")  # patterns alone: every source
    assert config.warnings == ()
    root, *channels = publications_of(config)
    assert root.directory == "" and root.site == config.site
    assert [c.directory for c in channels] == ["english/", "picked/", "cricket/"]
    site = channels[1].site
    assert (site.base_url, site.link, site.title) == (
        "https://digest.example.org/picked/",
        "https://digest.example.org/picked/",
        "Picked",
    )
    assert channels[1].selection.max_items == 20
    assert [p.text for p in channels[1].selection.channel_filters.exclude] == ["sport"]
    assert [link.href for link in root.channels] == [
        "https://digest.example.org/english/",
        "https://digest.example.org/picked/",
        "https://digest.example.org/cricket/",
    ]


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        pytest.param(
            '[[channels]]\nname = "x"\nsources = ["world", "sciense"]\n',
            'feeds.toml:22: channels[0].sources[1]: unknown source "sciense"; '
            'did you mean "science"?',
            id="unknown-source",
        ),
        pytest.param(
            '[[channels]]\nname = "x"\ntags = ["news"]\n\n'
            '[[channels]]\nname = "x"\ntags = ["english"]\n',
            'feeds.toml:25: channels[1].name: duplicate channel name "x" (also channels[0], '
            "line 21); give one a different name",
            id="duplicate-name",
        ),
        pytest.param(
            '[[channels]]\nname = "metrics"\ntags = ["news"]\n',
            'feeds.toml:21: channels[0].name: "metrics" is reserved (the server or the root '
            "publication uses /metrics); choose another name",
            id="reserved-route",
        ),
        pytest.param(
            '[[channels]]\nname = "archive"\ntags = ["news"]\n',
            'feeds.toml:21: channels[0].name: "archive" is reserved',
            id="reserved-root-directory",
        ),
        pytest.param(
            '[[channels]]\nname = "../etc"\ntags = ["news"]\n',
            "feeds.toml:21: channels[0].name: expected a name of lower-case letters, digits, "
            "'_' or '-' (at most 64, starting with a letter or digit: it is the channel's URL "
            'path), got "../etc"',
            id="not-a-path-segment",
        ),
        pytest.param(
            '[[channels]]\nname = ".hidden"\ntags = ["news"]\n',
            "feeds.toml:21: channels[0].name: expected a name of lower-case letters",
            id="hidden-name",
        ),
        pytest.param(
            '[[channels]]\nname = "news\\n"\ntags = ["news"]\n',
            "feeds.toml:21: channels[0].name: expected a name of lower-case letters",
            id="trailing-newline",
        ),
        pytest.param(
            '[[channels]]\nname = "News"\ntags = ["news"]\n',
            "feeds.toml:21: channels[0].name: expected a name of lower-case letters",
            id="upper-case",
        ),
        pytest.param(  # `$` would match before a final newline: a directory "news\n"
            '[[channels]]\nname = "news\\n"\ntags = ["news"]\n',
            "feeds.toml:21: channels[0].name: expected a name of lower-case letters",
            id="trailing-newline",
        ),
        pytest.param(
            '[[channels]]\ntitle = "No name"\ntags = ["news"]\n',
            "feeds.toml:20: channels[0]: missing required key name",
            id="missing-name",
        ),
        pytest.param(
            '[[channels]]\nname = "all"\ntitle = "Everything"\n',
            "feeds.toml:20: channels[0]: selects nothing: give the channel tags, sources, or "
            "include/exclude patterns",
            id="no-selection",
        ),
        pytest.param(
            '[[channels]]\nname = "sport"\ntags = ["sport", "cricket"]\n',
            "feeds.toml:22: channels[0].tags: selects no source: no [[feeds]] table has the "
            'tags "sport", "cricket"',
            id="selects-no-source",
        ),
        pytest.param(
            '[[channels]]\nname = "x"\ntag = ["news"]\n',
            'feeds.toml:22: channels[0].tag: unknown key; did you mean "tags"?',
            id="unknown-key",
        ),
        pytest.param(
            '[[channels]]\nname = "x"\ntags = ["news"]\ninclude = ["(unclosed"]\n',
            'feeds.toml:23: channels[0].include: item 0 "(unclosed" is not a valid regular '
            "expression",
            id="bad-pattern",
        ),
        pytest.param(
            '[[channels]]\nname = "x"\ntags = ["news"]\nmax_items = 0\n',
            "feeds.toml:23: channels[0].max_items: expected a number of at least 1, got 0",
            id="bad-max-items",
        ),
        pytest.param(
            '[channels]\nname = "x"\n',
            "feeds.toml:20: channels: [channels] is a single table; write [[channels]], one "
            "per channel",
            id="single-table",
        ),
    ],
)
def test_each_mistake_names_the_key_and_the_line(
    tmp_path: Path, channels: str, expected: str
) -> None:
    problems = _problems(tmp_path, channels)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_tag_no_source_has_is_a_warning_naming_the_line(tmp_path: Path) -> None:
    config = load_config(
        _config(tmp_path, '[[channels]]\nname = "news"\ntags = ["news", "sport"]\n'),
        display_name="feeds.toml",
    )
    assert config.channels[0].sources == ("hindi-news", "world")
    assert config.warnings == (
        'feeds.toml:22: channels[0].tags[1]: no source has the tag "sport": the channel takes '
        "nothing from it",
    )


def test_check_shows_the_channels_and_the_warning(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[[channels]]\nname = "news"\ntitle = "News desk"\ntags = ["news", "sport"]\n',
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f'warning: {config}:23: channels[0].tags[1]: no source has the tag "sport": the '
        "channel takes nothing from it"
    )
    assert "1 channel\n" in result.stdout or " 1 channel " in result.stdout
    row = next(line for line in result.stdout.splitlines() if "News desk" in line)
    assert re.search(r"news\s.*https://digest\.example\.org/news/.*hindi-news, world", row), row
    assert result.stdout.rstrip().endswith(f"{config}: ok")


def test_check_refuses_a_bad_channel_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[[channels]]\nname = "healthz"\ntags = ["news"]\n\n'
        '[[channels]]\nname = "x"\nsources = ["nobody"]\n',
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'error: {config}:21: channels[0].name: "healthz" is reserved (the server or the root '
        "publication uses /healthz); choose another name",
        f'error: {config}:26: channels[1].sources[0]: unknown source "nobody" (no [[feeds]] has '
        "that name)",
    ]
    assert "Traceback" not in result.stderr


def test_status_lists_the_channels(tmp_path: Path) -> None:
    config = _config(tmp_path, '[[channels]]\nname = "english"\ntags = ["english"]\n')
    result = run_cli("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "1 channel:" in result.stdout
    assert re.search(
        r"english\s+https://digest\.example\.org/english/\s+\(2 sources\)", result.stdout
    )


def test_every_server_route_and_output_file_is_a_reserved_name() -> None:
    """A channel's directory must never shadow a route the server answers itself."""
    app = create_app(Path("/nonexistent"))
    segments = {
        route.path.strip("/").split("/")[0]
        for route in app.routes
        if isinstance(route, Route) and "{" not in route.path and route.path != "/"
    }
    assert segments <= set(SERVER_ROUTES)
    assert set(SERVER_ROUTES) | set(OUTPUT_FILES) <= RESERVED_NAMES


@given(st.text(max_size=80))
@example("news\n")
@example("0\n")
def test_a_valid_channel_name_is_one_safe_path_segment(name: str) -> None:
    """Whatever the operator writes, a name that passes is one plain path segment: it cannot
    climb out of output/, hide, or take another's place."""
    if CHANNEL_NAME.fullmatch(name) and name not in RESERVED_NAMES:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name == name.strip() and name.isascii() and name.lower() == name
        files = PublishedFiles(Path("/srv/output"))
        assert (files.root / name).resolve().parent == files.root


@given(
    tagged=st.lists(st.sets(st.sampled_from("abcd")), min_size=1, max_size=6),
    tags=st.sets(st.sampled_from("abcd")),
    named=st.sets(st.integers(min_value=0, max_value=5)),
)
def test_a_channel_takes_the_sources_with_any_of_its_tags_or_named_in_feeds_order(
    tagged: list[set[str]], tags: set[str], named: set[int]
) -> None:
    names = [f"s{i}" for i in range(len(tagged))]
    named_names = sorted(f"s{i}" for i in named if i < len(tagged))
    expected = [
        name for name, its in zip(names, tagged, strict=True) if name in named_names or its & tags
    ]
    feeds = "".join(
        f'[[feeds]]\nurl = "https://{name}.example/f"\nname = "{name}"\n'
        f"tags = {sorted(its)!r}\n".replace("'", '"')
        for name, its in zip(names, tagged, strict=True)
    )
    channel = (
        f'[[channels]]\nname = "c"\ntags = {sorted(tags)!r}\nsources = {named_names!r}\n'
    ).replace("'", '"')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feeds.toml"
        path.write_text(feeds + channel, encoding="utf-8")
        if not expected:  # empty `tags` and `sources` included
            with pytest.raises(ConfigError, match="selects no source"):
                load_config(path)
            return
        config = load_config(path)
    assert config.channels[0].sources == tuple(expected)
    known = set().union(*tagged)
    assert len(config.warnings) == len(tags - known)


def test_a_tag_typed_two_ways_is_one_tag(tmp_path: Path) -> None:
    """The tag "बाज़ार" with U+095B (one code point) and with ज + nukta look alike: one tag
    (NFC, as feed text): the channel said it selected no source."""
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[[feeds]]\nname = "a"\nurl = "https://a.example/f"\n'
        'tags = ["\u092c\u093e\u095b\u093e\u0930"]\n'
        '[[channels]]\nname = "bazaar"\ntags = ["\u092c\u093e\u091c\u093c\u093e\u0930"]\n',
        encoding="utf-8",
    )
    [channel] = load_config(config).channels
    assert channel.sources == ("a",)

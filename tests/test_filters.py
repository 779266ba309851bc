"""Operators' include/exclude patterns: bounded per match, on capped text, a runaway pattern
reported once with where feeds.toml wrote it and treated as not matching from then on."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

import aggregator.filters as filters_module
from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.filters import (
    FILTER_FIELD_CHARS,
    FILTER_FLAGS,
    MAX_PATTERN_SIZE,
    FilterPattern,
    Filters,
    pattern_size,
)
from aggregator.text import clean_text

CATASTROPHIC = "(a+)+$"
EXPLODES = "a" * FILTER_FIELD_CHARS + "!"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _load(tmp_path: Path, text: str) -> Filters:
    path = tmp_path / "feeds.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, display_name="feeds.toml").sources[0].filters


def test_a_timing_out_pattern_is_logged_once_and_then_never_matches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pattern = FilterPattern(CATASTROPHIC, "feeds.toml:7: feeds[0].exclude[0]")  # not probed
    caplog.set_level(logging.WARNING, logger="aggregator")
    assert not pattern.search(EXPLODES)  # runs out of time
    assert pattern.ignored
    assert not pattern.search("aaaa")  # would match, but the pattern is given up
    assert not pattern.search(EXPLODES)
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith('feeds.toml:7: feeds[0].exclude[0]: filter pattern "(a+)+$"')
    assert "treated as not matching" in warnings[0]
    # Not matching: as an exclude it lets items through; as an include it lets none in.
    assert Filters(exclude=(pattern,)).allows("aaaa", "")
    assert not Filters(include=(pattern,)).allows("aaaa", "")


def test_a_catastrophic_pattern_is_reported_at_load_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aggregator")
    filters = _load(
        tmp_path,
        '[[feeds]]\nurl = "https://example.org/a.xml"\n'
        'exclude = ["sponsored.*content", "(a+)+$"]\n',
    )
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith('feeds.toml:3: feeds[0].exclude[1]: filter pattern "(a+)+$"')
    ordinary, catastrophic = filters.exclude
    assert catastrophic.ignored and not ordinary.ignored
    assert not filters.allows("Sponsored content", "")  # the ordinary one still works
    assert filters.allows("aaaa", "")


def test_a_pattern_written_for_many_sources_is_probed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    probed: list[str] = []
    original = filters_module.probe_pattern

    def probe_pattern(compiled: regex.Pattern[str]) -> str | None:
        probed.append(compiled.pattern)
        return original(compiled)

    monkeypatch.setattr(filters_module, "probe_pattern", probe_pattern)
    pattern = "(b+)+c$"  # seen by no other test: the cache is the process's
    feeds = "".join(
        f'[[feeds]]\nurl = "https://example.org/{n}.xml"\nexclude = ["{pattern}"]\n'
        for n in range(20)
    )
    caplog.set_level(logging.WARNING, logger="aggregator")
    path = tmp_path / "feeds.toml"
    path.write_text(feeds, encoding="utf-8")
    for _ in range(2):  # a reload
        loaded = load_config(path)
        assert all(s.filters.exclude[0].ignored for s in loaded.sources)
    assert probed == [pattern]


def test_an_ordinary_pattern_on_a_huge_title_is_matched_on_its_capped_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    filters = Filters(exclude=(FilterPattern("sponsored.*content"),))
    huge = "sponsored " * 30_000  # 300 KB, no "content": quadratic for a backtracking engine
    assert filters.allows(huge, "teaser")
    assert not filters.allows(huge, "sponsored content")  # the teaser keeps its own cap
    assert not filters.exclude[0].ignored
    assert _warnings(caplog) == []


def test_matching_ignores_case_and_keeps_unicode_word_boundaries() -> None:
    filters = Filters(include=(FilterPattern(r"\bक्रिकेट\b"), FilterPattern("ipl")))
    assert filters.allows("आज क्रिकेट मैच", "")
    assert filters.allows("IPL final", "")
    assert not filters.allows("हॉकी", "")


def test_equal_patterns_make_equal_configurations(tmp_path: Path) -> None:
    """A reload compares configurations: the same patterns must compare (and hash) equal."""
    text = '[[feeds]]\nurl = "https://example.org/a.xml"\ninclude = ["cricket"]\n'
    first, second = _load(tmp_path, text), _load(tmp_path, text)
    assert first == second and hash(first) == hash(second)
    assert first != _load(tmp_path, text.replace("cricket", "hockey"))


def test_an_invalid_pattern_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[[feeds]]\nurl = "https://example.org/a.xml"\ninclude = ["(ab"]\n')
    assert str(caught.value).startswith(
        'feeds.toml:3: feeds[0].include: item 0 "(ab" is not a valid regular expression'
    )


@given(st.text(alphabet=st.sampled_from(list("ab()[]{}|*+?\\:^$,0123456789")), max_size=40))
def test_pattern_size_bounds_what_the_engine_compiles(text: str) -> None:
    """`pattern_size` is checked before a pattern is compiled: for every pattern the engine
    accepts, the memory compiling it takes is bounded by what `pattern_size` says (~270
    bytes an item), so a size under the cap is a compile under ~15 MB too."""
    regex.purge()  # its cache would answer without compiling
    tracemalloc.start()
    try:
        regex.compile(text, FILTER_FLAGS)
    except (regex.error, OverflowError, RecursionError):
        return
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 30_000 + 1_000 * pattern_size(text)


@pytest.mark.parametrize(
    ("text", "at_least"),
    [("a{10000000}", 10_000_000), ("(a{1000}){1000}", 1_000_000), ("(?:ab){80000,90000}", 160_000)],
)
def test_pattern_size_sees_counted_repeats_nested_and_ranged(text: str, at_least: int) -> None:
    assert pattern_size(text) >= at_least > MAX_PATTERN_SIZE
    assert pattern_size("a{1,100000}") <= 3  # a range's loop is compiled once
    assert pattern_size(r"\bक्रिकेट\b|IPL|[a-z]{3}") < 20


def test_a_pattern_typed_with_a_precomposed_nukta_letter_matches_the_feeds_text(
    tmp_path: Path,
) -> None:
    """U+095B (ज़ as one code point, as some input methods type it) is not NFC: feed text
    holds ज + nukta. The pattern is read in NFC too, or it matched nothing (an `include`
    emptied the source, an `exclude` let everything through)."""
    typed = "\u092c\u093e\u095b\u093e\u0930"  # बाज़ार, precomposed
    filters = _load(
        tmp_path, f'[[feeds]]\nurl = "https://example.org/a.xml"\ninclude = ["{typed}"]\n'
    )
    headline = clean_text("बाज़ार में तेज़ी")  # as a feed's title is stored
    assert "\u095b" not in headline
    assert filters.allows(headline, "")
    assert not filters.allows("मौसम", "")


def test_a_pattern_nfc_would_break_is_kept_as_written(tmp_path: Path) -> None:
    """`[क़-य़]`, a range of precomposed nukta letters, is a valid pattern; in NFC its middle
    runs backwards (`[क\u093c-य\u093c]`) and loading refused it. Kept as written."""
    pattern = "[\u0958-\u095f]"
    filters = _load(
        tmp_path, f'[[feeds]]\nurl = "https://example.org/a.xml"\ninclude = ["{pattern}"]\n'
    )
    assert filters.include[0].text == pattern

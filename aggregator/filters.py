"""Operators' `include` / `exclude` patterns, matched so that no pattern can stall anything.

A backtracking engine can take exponential time on some patterns (`(a+)+$`) and quadratic
time on ordinary ones (`sponsored.*content`) as the text grows. So: the `regex` engine
(it releases the GIL while it matches, and takes a time budget per match), on text capped
to `FILTER_FIELD_CHARS` per field, each match limited to `MATCH_SECONDS`; a pattern that
runs out of time is logged once, with where the configuration wrote it, and from then on
treated as not matching (until the configuration is loaded again). At load, each pattern
is tried on a few texts made to trip nested repeats (`probe_pattern`); one that runs out
there starts out ignored and is reported at once.

Why not a linear engine (google-re2): its `\\b`, `\\w` and `\\s` are ASCII-only, so
`\\bक्रिकेट\\b` would silently stop matching Hindi titles, it has no lookarounds or
backreferences, and on capped text it was no faster here (see the changelog note).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

import regex

log = logging.getLogger("aggregator")

# Titles and teasers longer than this are matched on their start only. Real titles are far
# shorter; the cap bounds a quadratic pattern's cost (about 2 ms at 2,000 characters).
FILTER_FIELD_CHARS = 2000
# A match taking longer than this is a pattern backtracking without end, not a slow one.
MATCH_SECONDS = 0.25
FILTER_FLAGS = regex.IGNORECASE | regex.VERSION0


class _Spent:
    """Whether a pattern ran out of time (mutable, shared by the pattern's copies)."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.reported = False
        self.lock = threading.Lock()


# The most a pattern may spell out: the `regex` engine compiles a counted repeat (`a{1000}`,
# the least of `{50000,60000}`) as that many copies, ~270 bytes each, so a 14-character
# `a{10000000}` took 2.7 GB to compile (the daemon kept it after a reload) and `a{999999999}`
# was killed by the kernel. 100,000: a list of thousands of words, ~27 MB at most.
MAX_PATTERN_SIZE = 100_000
# Verbose mode (`(?x)`, `(?x:...)`) makes spaces and `#` comments nothing, which the count
# would take for items: a pattern using it is refused (TOML strings hold one line anyway).
VERBOSE_FLAG = regex.compile(r"\(\?[a-zA-Z]*x[a-zA-Z]*(?:-[a-zA-Z]*)?[:)]")
_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_BRACED_ESCAPES = frozenset("pPNxuUgk")  # `\p{L}`, `\N{...}`, `\x{0915}`: braces, no repeat


def pattern_size(text: str) -> int:
    """How many items `text` compiles to, counted repeats spelled out (alternatives added):
    an upper bound, computed without compiling; past `MAX_PATTERN_SIZE` it stops counting
    and returns what it has. Linear in `text`."""
    frames: list[list[int]] = [[]]  # the sizes of the items of each open group
    i, n = 0, len(text)
    while i < n:
        if (skipped := _one_item(text, i)) is not None:
            i, size = skipped
            frames[-1].extend((1,) * size)
            continue
        char = text[i]
        if char == "(":
            frames.append([])
        elif char == ")" and len(frames) > 1:
            inner = frames.pop()
            frames[-1].append(sum(inner))
        elif char == "{" and (count := _COUNT.match(text, i)) is not None and frames[-1]:
            least = count.group(1) or "0"
            frames[-1][-1] *= max(int(least), 1) if len(least) <= 9 else MAX_PATTERN_SIZE + 1
            if frames[-1][-1] > MAX_PATTERN_SIZE:
                return frames[-1][-1]
            i = count.end()
            continue
        elif char not in "|*+?^$)":
            frames[-1].append(1)
        i += 1
    return sum(sum(frame) for frame in frames)


def _one_item(text: str, i: int) -> tuple[int, int] | None:
    """An escape, a character class or a comment at `i`: where it ends, and 1 item (0 for
    a comment); None for anything else."""
    char = text[i]
    if char == "\\":
        if text[i + 1 : i + 2] in _BRACED_ESCAPES and text[i + 2 : i + 3] == "{":
            end = text.find("}", i + 3)
            return (len(text) if end == -1 else end + 1), 1
        return i + 2, 1
    if char == "[":
        return _class_end(text, i), 1
    if text.startswith("(?#", i):
        end = text.find(")", i)
        return (len(text) if end == -1 else end + 1), 0
    return None


def _class_end(text: str, start: int) -> int:
    """Just past the character class opening at `start` (`[]a]` and `[^]a]` hold a "]")."""
    i = start + 1
    if i < len(text) and text[i] == "^":
        i += 1
    if i < len(text) and text[i] == "]":
        i += 1
    while i < len(text) and text[i] != "]":
        i += 2 if text[i] == "\\" else 1
    return i + 1


@dataclass(frozen=True)
class FilterPattern:
    """One operator pattern. Equal when the text is: where it was written does not count.

    `where` names it in the log ("feeds.toml:12: feeds[2].exclude[0]").
    """

    text: str
    where: str = field(default="", compare=False)
    compiled: regex.Pattern[str] = field(init=False, repr=False, compare=False)
    _spent: _Spent = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", regex.compile(self.text, FILTER_FLAGS))
        object.__setattr__(self, "_spent", _Spent())

    @classmethod
    def checked(cls, text: str, where: str) -> FilterPattern:
        """Compile (raising `regex.error`) and probe: a pattern that runs out of time on a
        probe is reported now and starts out ignored."""
        pattern = cls(text, where)
        if (probe := _probe_once(text)) is not None:
            pattern._give_up(f"it runs for more than {MATCH_SECONDS} s on a text like {probe}")
        return pattern

    @property
    def ignored(self) -> bool:
        return self._spent.reason is not None

    def search(self, text: str) -> bool:
        """Whether the pattern matches `text` (already capped), within `MATCH_SECONDS`."""
        if self._spent.reason is not None:
            return False
        try:
            return self.compiled.search(text, timeout=MATCH_SECONDS) is not None
        except TimeoutError:
            self._give_up(f"a match ran for more than {MATCH_SECONDS} s")
            return False

    def _give_up(self, reason: str) -> None:
        with self._spent.lock:
            self._spent.reason = reason
            if self._spent.reported:
                return
            self._spent.reported = True
        log.warning(
            "%s: filter pattern %s is ignored (treated as not matching) until the "
            "configuration is reloaded: %s; rewrite it without a repeat inside a repeat",
            self.where or "filter",
            _quoted(self.text),
            reason,
        )


@dataclass(frozen=True)
class Filters:
    """`include` / `exclude`, matched against an item's title and teaser, ignoring case.

    An item passes when no `include` is given or one matches, and no `exclude` matches.
    """

    include: tuple[FilterPattern, ...] = ()
    exclude: tuple[FilterPattern, ...] = ()

    def allows(self, title: str, teaser: str) -> bool:
        if not (self.include or self.exclude):
            return True
        text = filter_text(title, teaser)
        if self.include and not any(p.search(text) for p in self.include):
            return False
        return not any(p.search(text) for p in self.exclude)


def filter_text(title: str, teaser: str) -> str:
    """What patterns see: title and teaser, each cut to `FILTER_FIELD_CHARS`."""
    return f"{title[:FILTER_FIELD_CHARS]}\n{teaser[:FILTER_FIELD_CHARS]}"


@functools.lru_cache(maxsize=4096)
def _probe_once(text: str) -> str | None:
    """`probe_pattern` of a pattern text, once per process: the same pattern written for
    10,000 sources is probed once, not at every reload for every source."""
    return probe_pattern(regex.compile(text, FILTER_FLAGS))


def probe_pattern(compiled: regex.Pattern[str]) -> str | None:
    """A text (shown shortened) on which `compiled` runs out of time, or None.

    The texts are one character repeated to the cap and a final "!": what makes a nested
    repeat (`(a+)+$`, `(\\w+\\s?)+$`) backtrack without end. A heuristic; the per-match
    budget is what bounds the patterns it misses.
    """
    letters = dict.fromkeys(c for c in compiled.pattern.lower() if c not in _METACHARACTERS)
    for char in dict.fromkeys((*list(letters)[:8], "a", "0", " ")):
        try:
            compiled.search(char * FILTER_FIELD_CHARS + "!", timeout=MATCH_SECONDS)
        except TimeoutError:
            return _quoted(char * 3 + "…!")
    return None


_METACHARACTERS = frozenset("\\^$.|?*+()[]{}")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

"""Where in a TOML file a key path was written, so configuration errors can name the line.

`tomllib` gives values without positions. This scans the text for table headers and
`key =` lines, which covers how people write `feeds.toml`. Pure; an unusual layout
(e.g. an inline table split over lines) only makes the reported line less precise.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_ARRAY_HEADER = re.compile(rf"^\[\[\s*({_DOTTED})\s*\]\]")
_TABLE_HEADER = re.compile(rf"^\[\s*({_DOTTED})\s*\]")
_ASSIGNMENT = re.compile(rf"^({_DOTTED})\s*=(.*)$")
_PART = re.compile(_BARE_OR_QUOTED)


def _split_dotted(dotted: str) -> list[str]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group(0)
        if part[:1] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return parts


class LineIndex:
    """Maps key paths such as ("feeds", 2, "interval") to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._build(text)

    def _build(self, text: str) -> None:
        current: KeyPath = ()
        array_counts: dict[KeyPath, int] = {}
        open_string: str | None = None
        # Lines end at "\n" only, as TOML's do: `splitlines` also ends one at U+2028, U+0085 or
        # a form feed, which a pasted title may hold, and every line after was misnumbered.
        for number, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if open_string is not None:
                if line.count(open_string) % 2 == 1:
                    open_string = None
                continue
            if not line or line.startswith("#"):
                continue
            if match := _ARRAY_HEADER.match(line):
                *parents, last = _split_dotted(match.group(1))
                path = (*self._with_indexes(parents, array_counts), last)
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                current = (*path, index)
                self._lines.setdefault(path, number)
                self._lines[current] = number
            elif match := _TABLE_HEADER.match(line):
                current = self._with_indexes(_split_dotted(match.group(1)), array_counts)
                self._lines.setdefault(current, number)
            elif match := _ASSIGNMENT.match(line):
                self._assigned(current, _split_dotted(match.group(1)), number)
                rest = match.group(2)
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        open_string = quote

    def _assigned(self, table: KeyPath, keys: list[str], number: int) -> None:
        """`a.b.c = ` on line `number` of `table`: `a` and `a.b` are written there too."""
        for end in range(1, len(keys) + 1):
            self._lines.setdefault((*table, *keys[:end]), number)

    @staticmethod
    def _with_indexes(parts: list[str], array_counts: dict[KeyPath, int]) -> KeyPath:
        """`[feeds.extra]` under `[[feeds]]` belongs to the latest feeds element."""
        path: KeyPath = ()
        for part in parts:
            path = (*path, part)
            if path in array_counts:
                path = (*path, array_counts[path])
        return path

    def line_of(self, path: KeyPath) -> int:
        """The line of the longest known prefix of `path`; 1 when nothing matches."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return 1


def format_path(path: KeyPath) -> str:
    """("feeds", 2, "interval") -> "feeds[2].interval"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out

"""The table `aggregator status` prints: one line per source, as wide as the terminal.

Times are relative to now ("in 12 min", "3 h ago"), never finer than a second, and the
title names the configured time zone with its label, so "14:05 IST" means the operator's
clock, not UTC. Names and errors are cut with an ellipsis rather than wrapped mid-word: a
status line that breaks "world-engl / ish" over two rows is hard to read. `wide` shows
everything in full, with the clock time beside each relative one. `--json` is not drawn
here; it stays the exact values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from rich import box
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class StatusLine:
    """One source as `status` shows it (URLs and errors already masked)."""

    name: str
    outcome: str  # "updated", "failed: HTTP 500 …", "never polled"
    items: int
    failures: int
    last_poll: datetime | None
    last_success: datetime | None
    next_poll: datetime | None


def relative_time(when: datetime, now: datetime) -> str:
    """ "in 12 min", "3 h ago", "2 d ago": whole units, the largest that fits."""
    seconds = round((when - now).total_seconds())
    span = abs(seconds)
    if span < 1:
        return "now"
    if span < 60:
        amount = f"{span} s"
    elif span < 3600:
        amount = f"{span // 60} min"
    elif span < 2 * 86400:
        amount = f"{span // 3600} h"
    else:
        amount = f"{span // 86400} d"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def zone_label(zone: ZoneInfo, now: datetime) -> str:
    """The zone's abbreviation at `now` ("IST", "CET", "UTC"; "+0530" where it has none)."""
    return now.astimezone(zone).tzname() or str(zone)


@dataclass(frozen=True)
class _Clock:
    """Now, and the zone times are shown in; how one time reads in a cell."""

    now: datetime
    zone: ZoneInfo
    wide: bool

    def cell(self, when: datetime | None, *, due: bool = False) -> str:
        if when is None:
            return "-"
        relative = "due" if due and when <= self.now else relative_time(when, self.now)
        if not self.wide:
            return relative
        local = when.astimezone(self.zone)
        return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({relative})"


_NAME_SHARE = 0.45  # of the width left after the fixed columns; the outcome takes the rest
_MIN_CUT = 8  # a name or outcome cut shorter than this says nothing
# On a narrow terminal, the name and outcome need this much between them to say anything;
# below it, columns go (least telling first) rather than every cell being cut to "la…".
_MIN_NAME_AND_OUTCOME = 24
_DROPPABLE = ("last success", "fails", "items", "last poll")
_HEADERS = ("source", "last poll", "last success", "outcome", "items", "next poll", "fails")


def status_table(
    lines: Sequence[StatusLine],
    *,
    title: str,
    now: datetime,
    zone: ZoneInfo,
    width: int | None,
) -> Table:
    """The table for `lines` within `width` columns (names and outcomes cut with "…"), or
    with everything in full and clock times beside the relative ones when `width` is None."""
    clock = _Clock(now, zone, wide=width is None)
    local_now = now.astimezone(zone)
    rows = [
        (
            line.name,
            clock.cell(line.last_poll),
            clock.cell(line.last_success),
            line.outcome,
            str(line.items),
            clock.cell(line.next_poll, due=True),
            str(line.failures),
        )
        for line in lines
    ]
    natural = [max((len(row[i]) for row in rows), default=0) for i in range(len(_HEADERS))]
    natural = [max(n, len(h)) for n, h in zip(natural, _HEADERS, strict=True)]
    shown = _shown_columns(natural, width)
    name_width, outcome_width = _cut_widths(natural, shown, width)
    table = Table(
        # Text, never markup: a name, a title or a server's error holding "[/x]" made rich
        # raise, and "[link=...]" drew a hyperlink of the server's choosing.
        title=Text(f"{title}; times in {zone.key} ({local_now.tzname()}), now {local_now:%H:%M}"),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for index in shown:
        header = _HEADERS[index]
        cut = {0: name_width, 3: outcome_width}.get(index)
        table.add_column(
            header,
            justify="right" if header in ("items", "fails") else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=cut if cut is not None else natural[index],
        )
    for row in rows:
        table.add_row(*(Text(row[i]) for i in shown))
    return table


def _left_for_name_and_outcome(natural: Sequence[int], shown: Sequence[int], width: int) -> int:
    """What `width` leaves the source and outcome columns beside the other `shown` columns
    at their `natural` widths."""
    frame = 3 * (len(shown) - 1)  # " │ " between cells, nothing at the edges
    return width - frame - sum(natural[i] for i in shown if i not in (0, 3))


def _shown_columns(natural: list[int], width: int | None) -> list[int]:
    """The indexes of the columns to draw: all of them, less the least telling ones
    (`_DROPPABLE`, in order) while the source and outcome would have too little room."""
    shown = list(range(len(natural)))
    if width is None:
        return shown
    for header in _DROPPABLE:
        if _left_for_name_and_outcome(natural, shown, width) >= _MIN_NAME_AND_OUTCOME:
            break
        shown.remove(_HEADERS.index(header))
    return shown


def _cut_widths(natural: list[int], shown: list[int], width: int | None) -> tuple[int, int]:
    """The widths of the source and outcome columns: their natural ones when they fit (or
    `width` is None), else what the other `shown` columns leave, shared."""
    name, outcome = natural[0], natural[3]
    if width is None:
        return name, outcome
    left = _left_for_name_and_outcome(natural, shown, width)
    if name + outcome <= left:
        return name, outcome
    name = min(name, max(_MIN_CUT, int(left * _NAME_SHARE)))
    return name, max(_MIN_CUT, left - name)

"""Rows into records, shared by the back ends, which select the same columns in the same order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from aggregator.store.records import SourceState
from aggregator.types import Validators


def state_from_row(row: Sequence[Any], when: Callable[[Any], datetime | None]) -> SourceState:
    """A source's state from a `_STATE_COLUMNS` row; `when` reads this database's times.

    Shared with the PostgreSQL store, which selects the same columns in the same order.
    """
    return SourceState(
        name=row[0],
        url=row[1],
        title=row[2],
        site_url=row[3],
        validators=Validators(row[4], row[5]),
        last_polled=when(row[6]),
        last_success=when(row[7]),
        last_outcome=row[8],
        last_error=row[9],
        failures=row[10],
        entries=row[11],
        next_poll=when(row[12]),
        retry_after=when(row[13]),
        moved_to=row[14],
        disabled=row[15],
        body_hash=row[16],
        lifetime=timedelta(seconds=row[17]) if row[17] is not None else None,
    )

"""The values that cross the store interface, whichever back end answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.types import Validators


@dataclass(frozen=True)
class SourceState:
    """A source as the store knows it, for conditional GET and for `status`."""

    name: str
    url: str
    title: str | None
    site_url: str | None
    validators: Validators
    last_polled: datetime | None
    last_success: datetime | None
    last_outcome: str | None
    last_error: str | None
    failures: int
    entries: int
    next_poll: datetime | None
    retry_after: datetime | None = None  # a server asked us not to come back before this
    moved_to: str | None = None  # where a 301/308 chain led; polled instead of `url`
    disabled: str | None = None  # why polling stopped (410 Gone) until the operator acts
    body_hash: str | None = None  # of the last body parsed: the same body is not parsed again
    lifetime: timedelta | None = None  # the feed's own <ttl> / sy:updatePeriod, in force on 304s

    @property
    def fetch_url(self) -> str:
        return self.moved_to or self.url


@dataclass(frozen=True)
class StoreResult:
    """What one source's parsed feed changed in the store."""

    new: int
    updated: int

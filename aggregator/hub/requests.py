"""A `/websub` subscription request, read and checked (WebSub §5.1). Pure.

What comes in is the form's fields; what goes out is a `SubscriptionRequest` or a `Refusal`
whose reason is the one line the subscriber reads (the spec asks for a plain-text body).
Whether the topic is one we publish, and where the callback resolves, are the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from aggregator.settings import WebsubSettings

MAX_URL_LENGTH = 2048  # hub.topic, hub.callback
MAX_SECRET_BYTES = 199  # the spec: "MUST be less than 200 bytes"
MAX_LEASE_DIGITS = 12
MODES = ("subscribe", "unsubscribe")

Mode = Literal["subscribe", "unsubscribe"]


@dataclass(frozen=True)
class SubscriptionRequest:
    """A well-formed subscribe or unsubscribe; `lease` is the one granted (§5.1)."""

    mode: Mode
    topic: str
    callback: str
    lease: timedelta
    secret: str | None


@dataclass(frozen=True)
class Refusal:
    """An answer other than 202: the HTTP status and the reason, one line."""

    status: int
    reason: str


def read_request(
    fields: Sequence[tuple[str, str]], websub: WebsubSettings
) -> SubscriptionRequest | Refusal:
    """The request the form's `fields` make, or why there is none. Fields other than
    `hub.*` are ignored, as the spec asks; a `hub.*` field given twice is refused."""
    given = _hub_fields(fields)
    if isinstance(given, Refusal):
        return given
    mode = given.get("hub.mode", "")
    topic = given.get("hub.topic", "")
    callback = given.get("hub.callback", "")
    problem = _mode_problem(mode) or _topic_problem(topic) or _callback_field(callback)
    if problem:
        return Refusal(400, problem)
    lease = granted_lease(given.get("hub.lease_seconds"), websub)
    if isinstance(lease, Refusal):
        return lease
    secret = given.get("hub.secret") or None
    if secret is not None and len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        return Refusal(400, "hub.secret must be shorter than 200 bytes")
    return SubscriptionRequest(
        "subscribe" if mode == "subscribe" else "unsubscribe", topic, callback, lease, secret
    )


def _hub_fields(fields: Sequence[tuple[str, str]]) -> dict[str, str] | Refusal:
    given: dict[str, str] = {}
    for key, value in fields:
        if key in given:
            return Refusal(400, f"{key} is given twice")
        if key.startswith("hub."):
            given[key] = value
    return given


def _mode_problem(mode: str) -> str | None:
    if mode == "publish":
        return "this hub learns of changes by itself: hub.mode=publish is not taken"
    if mode not in MODES:
        return 'hub.mode must be "subscribe" or "unsubscribe"'
    return None


def _topic_problem(topic: str) -> str | None:
    if not topic:
        return "hub.topic is missing"
    if len(topic) > MAX_URL_LENGTH:
        return f"hub.topic is longer than {MAX_URL_LENGTH} characters"
    return None


def _callback_field(callback: str) -> str | None:
    problem = callback_problem(callback)
    return f"hub.callback {problem}" if problem else None


def callback_problem(callback: str) -> str | None:
    """What makes `callback` no URL we deliver to (as the rest of a sentence), or None."""
    if not callback:
        return "is missing"
    if len(callback) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in callback):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(callback)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    problems = (
        (parts.scheme.lower() not in ("http", "https") or not parts.hostname,
         "must be an http or https URL"),
        (parts.username is not None or parts.password is not None,
         "must not carry a user name or password"),
        ("#" in callback, "must not carry a fragment (#...)"),
        (port == 0, "names port 0"),
    )  # fmt: skip
    return next((why for wrong, why in problems if wrong), None)


def granted_lease(requested: str | None, websub: WebsubSettings) -> timedelta | Refusal:
    """The lease for `hub.lease_seconds`: the default when not asked, else what was asked
    within `[websub] min_lease` and `max_lease` (§5.1: the hub decides, and says so)."""
    if requested is None or requested == "":
        return websub.default_lease
    if not requested.isascii() or not requested.isdigit() or len(requested) > MAX_LEASE_DIGITS:
        return Refusal(400, "hub.lease_seconds must be a whole number of seconds")
    lease = timedelta(seconds=int(requested))
    return min(max(lease, websub.min_lease), websub.max_lease)


def lease_seconds(lease: timedelta) -> int:
    """A lease as `hub.lease_seconds` says it: whole seconds, at least one."""
    return max(1, int(lease.total_seconds()))

"""Read and validate the `[[channels]]` tables of `feeds.toml` into `settings.Channel` values.

A channel is a selection of the sources, published like the root under `output/<name>/`
and served at `/<name>/`. Its name is a URL path segment, so it is checked as one and must
not collide with what the root publishes or the server answers itself. Every problem is an
error naming the key and the line, as the rest of the loader's; a tag that no source carries
is only a warning (a source may be about to get it), unless the channel then selects nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.archive import ARCHIVE_DIR
from aggregator.config import (
    _display_text,
    _Invalid,
    _language,
    _Loader,
    _positive_int,
    _show,
    _string,
    _tags,
    _timezone,
)
from aggregator.render import OUTPUT_FILES
from aggregator.settings import Channel, PublishSettings, SiteSettings, SourceConfig
from aggregator.tomlpos import KeyPath

CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # whole: `fullmatch`, not `$`
# Paths a channel's directory must not take: the server's own routes (`/healthz`,
# `/metrics`, the WebSub hub's `/websub`), and what the root publication writes beside its
# feeds (its archive). The output file names cannot match `CHANNEL_NAME` (they hold a
# dot), nor can hidden names; they are listed all the same, so that the rule reads whole.
SERVER_ROUTES = ("healthz", "metrics", "websub")
ROOT_DIRECTORIES = (ARCHIVE_DIR,)
RESERVED_NAMES = frozenset((*SERVER_ROUTES, *ROOT_DIRECTORIES, *OUTPUT_FILES))

_CHANNEL_KEYS = (
    "name", "title", "description", "tags", "sources", "include", "exclude", "language",
    "timezone", "max_items",
)  # fmt: skip
_SELECTING = ("tags", "sources", "include", "exclude")


def channel_name(value: object) -> str:
    """A channel's name: one lower-case URL path segment, not one the server or root takes."""
    name = _string(value)
    if not CHANNEL_NAME.fullmatch(name):
        raise _Invalid(
            "expected a name of lower-case letters, digits, '_' or '-' (at most 64, starting "
            f"with a letter or digit: it is the channel's URL path), got {_show(value)}"
        )
    if name in RESERVED_NAMES:
        raise _Invalid(
            f'"{name}" is reserved (the server or the root publication uses /{name}); '
            "choose another name"
        )
    return name


def _source_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(n, str) and n.strip() for n in value):
        raise _Invalid(f'expected an array of source names like ["bbc-hindi"], got {_show(value)}')
    return tuple(value)


def _channel_tables(data: Mapping[str, Any], load: _Loader) -> list[Any]:
    channels = data.get("channels", [])
    if isinstance(channels, list):
        return channels
    load.error(
        ("channels",),
        "[channels] is a single table; write [[channels]], one per channel"
        if isinstance(channels, dict)
        else f"expected an array of tables ([[channels]]), got {_show(channels)}",
    )
    return []


def load_channels(
    data: Mapping[str, Any],
    load: _Loader,
    sources: Sequence[SourceConfig],
    site: SiteSettings,
    publish: PublishSettings,
) -> tuple[Channel, ...]:
    """Every valid `[[channels]]` table, in order; problems reported to `load`."""
    known = _Known.of(data, sources)
    channels: list[Channel] = []
    names: dict[str, int] = {}
    for index, raw in enumerate(_channel_tables(data, load)):
        path: KeyPath = ("channels", index)
        table = load.table(raw, path, _CHANNEL_KEYS)
        if not isinstance(raw, dict):
            continue
        if "name" not in table:
            load.error(path, "missing required key name")
            continue
        errors_before = len(load.errors)
        channel = _channel(table, path, load, known, site, publish)
        if channel is None or len(load.errors) > errors_before:
            continue
        if channel.name in names:
            other = names[channel.name]
            load.error(
                (*path, "name"),
                f'duplicate channel name "{channel.name}" (also channels[{other}], line '
                f"{load.lines.line_of(('channels', other, 'name'))}); give one a different name",
            )
            continue
        names[channel.name] = index
        channels.append(channel)
    return tuple(channels)


class _Known:
    """The sources a channel may select: by name (those written in `[[feeds]]` too, even if
    invalid, so that one mistake is not reported twice) and by tag."""

    def __init__(self, valid: Sequence[SourceConfig], written: set[str]) -> None:
        self.valid = valid
        self.names = {s.name for s in valid} | written
        self.tags = {tag for s in valid for tag in s.tags}

    @classmethod
    def of(cls, data: Mapping[str, Any], sources: Sequence[SourceConfig]) -> _Known:
        feeds = data.get("feeds")
        written = {
            str(feed["name"])
            for feed in (feeds if isinstance(feeds, list) else [])
            if isinstance(feed, dict) and isinstance(feed.get("name"), str)
        }
        return cls(sources, written)

    def selected(self, tags: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
        """The valid sources carrying one of `tags` or named in `names`, in `[[feeds]]` order."""
        wanted_tags, wanted_names = set(tags), set(names)
        return tuple(
            s.name for s in self.valid if s.name in wanted_names or wanted_tags & set(s.tags)
        )


def _channel(
    table: Mapping[str, Any],
    path: KeyPath,
    load: _Loader,
    known: _Known,
    site: SiteSettings,
    publish: PublishSettings,
) -> Channel | None:
    name = load.value(table, path, "name", channel_name, "")
    title = load.value(table, path, "title", _display_text, name)
    tags: tuple[str, ...] = load.value(table, path, "tags", _tags, ())
    named: tuple[str, ...] = load.value(table, path, "sources", _source_names, ())
    for i, tag in enumerate(tags):
        if tag not in known.tags:
            load.warning(
                (*path, "tags", i),
                f'no source has the tag "{tag}": the channel takes nothing from it',
            )
    unknown = [(i, source) for i, source in enumerate(named) if source not in known.names]
    for i, source in unknown:
        close = difflib.get_close_matches(source, sorted(known.names), n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else " (no [[feeds]] has that name)"
        load.error((*path, "sources", i), f'unknown source "{source}"{hint}')
    channel = Channel(
        name=name,
        title=title,
        description=load.value(
            table, path, "description", _string, f"{title}: the latest from {site.title}"
        ),
        sources=_selection(table, path, load, known, (tags, named), reported=bool(unknown)),
        language=load.value(table, path, "language", _language, site.language),
        timezone=load.value(table, path, "timezone", _timezone, site.timezone),
        max_items=load.value(table, path, "max_items", _positive_int, publish.max_items),
        filters=load.filters(table, path),
    )
    return channel if name else None


def _selection(
    table: Mapping[str, Any],
    path: KeyPath,
    load: _Loader,
    known: _Known,
    wanted: tuple[tuple[str, ...], tuple[str, ...]],
    *,
    reported: bool,
) -> tuple[str, ...]:
    """The source names a channel reads (`wanted`: its tags and its source names); a channel
    that would select nothing is an error, unless one was `reported` already."""
    tags, named = wanted
    if not any(key in table for key in _SELECTING):
        load.error(
            path,
            "selects nothing: give the channel tags, sources, or include/exclude patterns",
        )
        return ()
    if "tags" not in table and "sources" not in table:
        return tuple(s.name for s in known.valid)  # patterns alone: over every source
    selected = known.selected(tags, named)
    if not selected and not reported:
        key = "tags" if "tags" in table else "sources"
        load.error(
            (*path, key),
            f"selects no source: no [[feeds]] table has {_wanted(tags, named)}",
        )
    return selected


def _wanted(tags: Sequence[str], named: Sequence[str]) -> str:
    parts = []
    if tags:
        parts.append("the tag" + ("s " if len(tags) > 1 else " ") + ", ".join(map(_show, tags)))
    if named:
        parts.append("the name" + ("s " if len(named) > 1 else " ") + ", ".join(map(_show, named)))
    return " or ".join(parts) or "anything it asks for"

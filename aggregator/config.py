"""Read and validate `feeds.toml` into frozen settings.

Every problem becomes a `ConfigError` whose text is one line naming the file, the line and
the key path (`feeds.toml:14: feeds[3].interval: expected a duration like "15m", got "often"`).
Relative paths resolve against the directory of the file that names them. Nothing here
touches the network; the file is read once.
"""

from __future__ import annotations

import codecs
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import regex

from aggregator import USER_AGENT
from aggregator.errors import ConfigError
from aggregator.filters import (
    FILTER_FLAGS,
    MAX_PATTERN_SIZE,
    VERBOSE_FLAG,
    FilterPattern,
    Filters,
    pattern_size,
)
from aggregator.regular_file import read_regular_file
from aggregator.settings import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PARSE_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SUBSCRIPTION_LEASE,
    DEFAULT_SUMMARY_INTERVAL,
    DEFAULT_TEASER_LENGTH,
    DEFAULT_WEBSUB_POLL_INTERVAL,
    HUB_PATH,
    STORE_URL_VARIABLE,
    Config,
    PollSettings,
    PublishSettings,
    ServerSettings,
    SiteSettings,
    SourceConfig,
    StoreSettings,
    Theme,
    WebsubSettings,
    default_lease,
    server_url,
)
from aggregator.text import (
    TEASER_LENGTH_LIMIT,
    clean_text,
    has_forbidden_characters,
    strip_bidi_controls,
)
from aggregator.theme_files import read_theme, theme_errors
from aggregator.tomlpos import KeyPath, LineIndex, format_path
from aggregator.urls import as_uri, public_url, redact_url

T = TypeVar("T")


class _Invalid(Exception):
    """Raised by a value checker; the loader adds file, line and key path."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MIN_SECONDS = 0.001
_MAX_SECONDS = 1000 * 365 * 86400.0  # far enough; date arithmetic breaks near 2000 years
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" lets a final newline in


def parse_duration(value: object) -> timedelta:
    """ "15m", "1h30m", "30d" -> a positive timedelta.

    A bare number is refused: `interval = 15` once meant 15 seconds to the loader and
    15 minutes to most people who wrote it.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Invalid(f'expected a duration like "15m", got {_show(value)}')
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _Invalid(f"expected a positive duration of at least 1ms, got {_show(value)}")
        raise _Invalid(_bare_number_hint(value))
    if re.fullmatch(r"\d+(\.\d+)?", value.strip()):  # "15": the unit forgotten inside quotes
        raise _Invalid(_bare_number_hint(float(value), shown=_show(value)))
    if not _DURATION_WHOLE.match(value):
        raise _Invalid(f'expected a duration like "15m", got {_show(value)}')
    seconds = sum(
        float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in _DURATION_PART.findall(value)
    )
    if not math.isfinite(seconds) or seconds < _MIN_SECONDS:
        raise _Invalid(f"expected a positive duration of at least 1ms, got {_show(value)}")
    if seconds > _MAX_SECONDS:
        raise _Invalid(f"expected a duration of at most 1000 years, got {_show(value)}")
    return timedelta(seconds=seconds)


def _summary_interval(value: object) -> timedelta:
    """`[server] summary_interval`: a duration of at least a second (the daemon logs a line
    each time; a millisecond would flood the log)."""
    interval = parse_duration(value)
    if interval < timedelta(seconds=1):
        raise _Invalid(f'expected a duration of at least 1s, like "1h", got {_show(value)}')
    return interval


def _bare_number_hint(value: int | float, *, shown: str | None = None) -> str:
    """The fix for `interval = 15` (or `"15"`, `shown` as written): the number the operator
    wrote, with the units to choose."""
    number = f"{value:g}"
    return (
        f"expected a duration with a unit, got {shown or f'the bare number {number}'}: "
        f'write "{number}m" for {number} minutes (or "{number}s", "{number}h")'
    )


def _show(value: object) -> str:
    if isinstance(value, str):
        escaped = value.replace('"', '\\"')
        escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", escaped)
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    if has_forbidden_characters(value):
        raise _Invalid(f"contains control characters that XML cannot carry: {_show(value)}")
    return value


_HEADER_TEXT = re.compile(r"[\x20-\x7e]{1,512}\Z")  # visible ASCII and spaces


def _user_agent(value: object) -> str:
    """Sent as an HTTP header: visible ASCII only (httpx encodes header values as ASCII, and a
    line break would end the header), at most 512 characters."""
    text = _string(value)
    if not _HEADER_TEXT.match(text):
        raise _Invalid(
            f"must be at most 512 characters of visible ASCII (an HTTP header), got {_show(value)}"
        )
    return text


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected a whole number, got {_show(value)}")
    if value < 1:
        raise _Invalid(f"expected a number of at least 1, got {value}")
    return value


# A language tag (BCP 47's shape: a 2-3 letter language, then subtags), as feeds and pages
# declare it; "hi_IN", a locale's spelling, is taken as "hi-IN".
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*\Z")


def _language(value: object) -> str:
    """`xml:lang`, RSS `<language>`, JSON Feed's and the page's: "हिंदी" or "hi IN" were
    written into every feed as they were (W3C: InvalidLanguage), and the page fell back to
    English without a word."""
    text = _string(value).strip()
    if not _LANGUAGE.match(text):
        raise _Invalid(f'expected a language tag like "hi" or "hi-IN", got {_show(value)}')
    return text.replace("_", "-")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def _size(value: object) -> int:
    """A byte count: a whole number, or a string like "10MB" or "512KB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(f'expected a size like "10MB" or a number of bytes, got {_show(value)}')
    size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    if not 1024 <= size <= 1024**3:
        raise _Invalid(f"expected a size from 1KB to 1GB, got {_show(value)}")
    return size


_STORE_URL_SCHEMES = ("postgresql", "postgres")


def _store_url(value: object) -> str:
    """A PostgreSQL URL. The value is never repeated in the message: it may hold a password."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_show(value)}")
    scheme, sep, _ = value.strip().partition("://")
    if not sep or scheme.lower() not in _STORE_URL_SCHEMES:
        got = (
            f'a "{scheme}://" URL'
            if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme)
            else "something else"
        )
        raise _Invalid(
            'expected a PostgreSQL URL like "postgresql://host/dbname", '
            f"got {got} (an SQLite file goes in [store] path)"
        )
    return value.strip()


def _port(value: object) -> int:
    port = _positive_int(value)
    if port > 65535:
        raise _Invalid(f"expected a port from 1 to 65535, got {port}")
    return port


def _teaser_length(value: object) -> int:
    """Bounded because the store keeps each entry's text only as far as the longest teaser."""
    length = _positive_int(value)
    if length > TEASER_LENGTH_LIMIT:
        raise _Invalid(f"expected a length from 1 to {TEASER_LENGTH_LIMIT:,}, got {length}")
    return length


def _timezone(value: object) -> str:
    name = _string(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # "Asia" is a directory
        raise _Invalid(
            f'unknown time zone "{name}" (expected an IANA name like "Asia/Kolkata")'
        ) from e
    return name


def _tags(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise _Invalid(f'expected an array of strings like ["hindi", "news"], got {_show(value)}')
    for tag in value:  # published: sources.opml groups the sources by tag
        if has_forbidden_characters(tag):
            raise _Invalid(f"contains control characters that XML cannot carry: {_show(tag)}")
    # NFC, as feed text is: "बाज़ार" typed with U+095B and with क + nukta are one tag.
    return tuple(clean_text(tag) for tag in value)


def _patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _Invalid(
            f'expected an array of regular expressions like ["cricket", "IPL"], got {_show(value)}'
        )
    patterns = []
    for index, pattern in enumerate(value):
        if VERBOSE_FLAG.search(pattern):
            raise _Invalid(f"item {index} {_show(pattern[:80])}: verbose mode (?x) is not taken")
        if pattern_size(pattern) > MAX_PATTERN_SIZE:
            shown = _show(pattern[:80]) + (" (cut)" if len(pattern) > 80 else "")
            raise _Invalid(
                f"item {index} {shown} spells out more than {MAX_PATTERN_SIZE:,} "
                "characters once its counted repeats ({n}) are written out"
            )
        try:
            regex.compile(pattern, FILTER_FLAGS)  # as `FilterPattern` will
        except regex.error as e:
            raise _Invalid(
                f'item {index} "{pattern}" is not a valid regular expression: {e}'
            ) from e
        patterns.append(_in_nfc(pattern))
    return tuple(patterns)


def _in_nfc(pattern: str) -> str:
    """`pattern` in NFC, as the text it is matched against is (`text.clean_text`): a word
    typed with a precomposed nukta letter (U+0958-U+095F, which NFC decomposes) matched
    nothing. As written when NFC would break it (`[क़-य़]`: a range run backwards)."""
    normal = clean_text(pattern)
    if normal == pattern:
        return pattern
    try:
        regex.compile(normal, FILTER_FLAGS)  # bounded: NFC adds no counted repeat
    except regex.error:
        return pattern
    return normal


def _http_url(value: object) -> str:
    url = _string(value).strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Invalid(
            f'expected an http or https URL like "https://example.org/", got {_show(value)}'
        )
    return url


def _lease(value: object) -> timedelta:
    """`[websub] subscription_lease`: hubs count leases in whole seconds."""
    lease = parse_duration(value)
    if not timedelta(minutes=1) <= lease <= timedelta(days=365):
        raise _Invalid(f'expected a duration from "1m" to "365d", got {_show(value)}')
    return lease


def _hub_urls(value: object) -> tuple[str, ...]:
    """`[websub] hubs`: external hubs' URLs, each http(s) and named once."""
    if not isinstance(value, list):
        raise _Invalid(
            f'expected an array of URLs like ["https://hub.example/"], got {_show(value)}'
        )
    urls: list[str] = []
    for index, item in enumerate(value):
        try:
            url = _http_url(item)
        except _Invalid as e:
            raise _Invalid(f"item {index}: {e}") from e
        if url in urls:
            raise _Invalid(f"item {index}: {_show(url)} is named twice")
        urls.append(url)
    return tuple(urls)


def _base_url(value: object) -> str:
    """A URL that file names are appended to: no query or fragment (`...?lang=hi` gave
    `...?lang=hi/atom.xml`), and no user info, which every feed and page would publish."""
    url = _http_url(value)
    parts = urlsplit(url)
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise _Invalid(f"expected a URL without a query or fragment, got {_show(value)}")
    if "@" in parts.netloc:
        raise _Invalid(
            "expected a URL without a user name or password (they would be published in "
            f"every feed), got {redact_url(url)!r}"
        )
    return url if url.endswith("/") else url + "/"


def _source_url(base_dir: Path) -> Callable[[object], str]:
    """http(s) URLs stay as written; file:// URLs and plain paths become absolute file URLs."""

    def check(value: object) -> str:
        raw = _string(value).strip()
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            if not parts.hostname:
                raise _Invalid(f"expected a URL with a host name, got {_show(value)}")
            try:
                parts.port  # noqa: B018  (raises on a malformed port)
            except ValueError as e:
                raise _Invalid(f"bad port in URL {_show(value)}") from e
            return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise _Invalid(f"a file:// URL cannot name a host, got {_show(value)}")
            path = Path(url2pathname(parts.path))
        elif "://" in raw or (len(scheme) > 1 and ":" in raw and not Path(raw).exists()):
            raise _Invalid(f"expected an http, https or file:// URL, or a path, got {_show(value)}")
        else:
            path = _existing_file(raw, base_dir, value)
        if not path.is_absolute():
            path = base_dir / path
        return path.resolve().as_uri()

    return check


def _existing_file(raw: str, base_dir: Path, value: object) -> Path:
    """A `url` written without a scheme: a local file that exists, or a web address that lost
    its `https://` (`example.com/feed.xml`), which must not silently become a missing file."""
    path = Path(raw).expanduser()
    where = path if path.is_absolute() else base_dir / path
    if where.exists():
        return path
    if _looks_like_a_host(raw):
        raise _Invalid(
            f"no such file, and not a URL (no http:// or https://): {_show(value)}; "
            f'for a web feed write "https://{raw}"'
        )
    if path.is_absolute():
        raise _Invalid(f"no such file {where}")
    raise _Invalid(
        f"no such file {where.resolve()} (from {_show(value)}, relative to the config file's "
        "directory)"
    )


def _looks_like_a_host(raw: str) -> bool:
    """`example.com/feed.xml` (a host, then a path) rather than `feeds/local.xml`, `./a.xml`
    or `local.xml`: only the first is worth the hint "https://…"."""
    first, slash, _ = raw.partition("/")
    return bool(slash) and "." in first.strip(".") and not raw.startswith(("~", "."))


def _is_loopback(url: str) -> bool:
    """A local file or a server on this machine (127.0.0.0/8, ::1, localhost): the sources
    tests and local setups poll, to which the minimum interval does not apply."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return True
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_source_url(raw: str, base_dir: Path) -> str:
    """A `[[feeds]] url` as the loader stores it; ValueError when it is not a valid one."""
    try:
        return _source_url(base_dir)(raw)
    except _Invalid as e:
        raise ValueError(str(e)) from e


def _output_path(base_dir: Path) -> Callable[[object], Path]:
    def check(value: object) -> Path:
        path = Path(_string(value)).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    return check


def _templates(base_dir: Path, config_shown: str) -> Callable[[object], Theme]:
    """`[publish] templates`: a directory of templates, relative to feeds.toml's."""

    def check(value: object) -> Theme:
        try:
            return read_theme(_string(value), base_dir, config_shown)
        except ValueError as e:
            raise _Invalid(str(e)) from e

    return check


def _theme(
    publish_t: Mapping[str, Any], base_dir: Path, load: _Loader, site: SiteSettings
) -> Theme:
    """The operator's theme, checked: each template that fails to compile or to render a
    sample page is an error naming its file and line."""
    check = _templates(base_dir, load.display_name)
    theme = load.value(publish_t, ("publish",), "templates", check, Theme())
    if theme.files:
        load.errors.extend(theme_errors(theme, site))
    return theme


def derive_name(url: str) -> str:
    """A stable source name from its URL: host and path, lower-case, punctuation as dashes.

    Never from a credential in the URL (`?token=`): the name is published, in `/metrics` too.
    """
    parts = urlsplit(public_url(url))
    if parts.scheme == "file":
        stem = Path(url2pathname(parts.path)).stem
        raw = stem
    else:
        host = (parts.hostname or "").removeprefix("www.")
        raw = host + parts.path + ("-" + parts.query if parts.query else "")
    slug = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    for suffix in ("-xml", "-rss", "-atom", "-feed"):
        if slug.endswith(suffix) and len(slug) > len(suffix):
            slug = slug.removesuffix(suffix)
    return slug[:64].strip("-") or "source"


def _display_text(value: object) -> str:
    """A title readers see: without bidi controls, which can make it read backwards."""
    return _string(strip_bidi_controls(value) if isinstance(value, str) else value)


def _name(value: object) -> str:
    name = _string(value)
    if not SOURCE_NAME.match(name):
        raise _Invalid(
            f"expected a name of letters, digits, '.', '_' or '-' (at most 64), got {_show(value)}"
        )
    return name


_TABLES = ("aggregator", "poll", "publish", "store", "server", "websub", "feeds", "channels")
_SITE_KEYS = ("title", "link", "description", "language", "timezone", "base_url")
_POLL_KEYS = (
    "interval", "concurrency", "timeout", "per_host", "max_bytes", "user_agent", "lease",
    "parse_timeout", "partial_parse",
)  # fmt: skip
_PUBLISH_KEYS = (
    "output_dir", "max_items", "max_age", "teaser_length", "include", "exclude", "templates",
)  # fmt: skip
_STORE_KEYS = ("path", "url", "keep")
_SERVER_KEYS = ("host", "port", "request_timeout", "max_connections", "summary_interval")
_WEBSUB_KEYS = (
    "callback_url", "subscribe", "poll_interval", "subscription_lease", "allow_sha1",
    "allow_private_hubs",
    "builtin_hub", "hubs", "allow_private_callbacks", "default_lease", "min_lease", "max_lease",
    "max_subscribers", "requests_per_minute", "delivery_timeout", "delivery_concurrency",
    "retry_delay", "max_failures",
)  # fmt: skip
_FEED_KEYS = ("url", "name", "title", "interval", "timezone", "tags", "include", "exclude")


class _Loader:
    """Collects every problem in one pass so the operator can fix them all at once."""

    def __init__(self, display_name: str, text: str) -> None:
        self.display_name = display_name
        self.lines = LineIndex(text)
        self.errors: list[ConfigError] = []
        self.warnings: list[str] = []

    def error(self, path: KeyPath, message: str) -> None:
        self.errors.append(
            ConfigError(self.display_name, self.lines.line_of(path), format_path(path), message)
        )

    def warning(self, path: KeyPath, message: str) -> None:
        """A problem worth saying that does not make the file unusable; one line, as errors."""
        where = ConfigError(self.display_name, self.lines.line_of(path), format_path(path), message)
        self.warnings.append(str(where))

    def table(
        self, data: Mapping[str, Any], path: KeyPath, allowed: tuple[str, ...]
    ) -> dict[str, Any]:
        """The table at `path`, after reporting keys that are not in `allowed`."""
        if not isinstance(data, dict):
            self.error(path, f"expected a table, got {_show(data)}")
            return {}
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                suggestion = (
                    f'; did you mean "{hint[0]}"?'
                    if hint
                    else f" (known keys: {', '.join(allowed)})"
                )
                self.error((*path, key), f"unknown key{suggestion}")
        return data

    def value(
        self,
        table: Mapping[str, Any],
        path: KeyPath,
        key: str,
        check: Callable[[object], T],
        default: T,
    ) -> T:
        if key not in table:
            return default
        try:
            return check(table[key])
        except _Invalid as e:
            self.error((*path, key), str(e))
        except Exception as e:  # a checker tripping over odd input is still a config error
            self.error((*path, key), f"invalid value {_show(table[key])}: {e}")
        return default

    def filters(self, table: Mapping[str, Any], path: KeyPath) -> Filters:
        """`include` / `exclude` of `table`, each pattern knowing where it was written."""

        def patterns(key: str) -> tuple[FilterPattern, ...]:
            texts: tuple[str, ...] = self.value(table, path, key, _patterns, ())
            if not texts:  # most sources have none: no line to look for
                return ()
            line = self.lines.line_of((*path, key))
            return tuple(
                FilterPattern.checked(
                    text, f"{self.display_name}:{line}: {format_path((*path, key, i))}"
                )
                for i, text in enumerate(texts)
            )

        return Filters(include=patterns("include"), exclude=patterns("exclude"))


MAX_CONFIG_BYTES = 10 * 1024 * 1024
_TOO_DEEP = "invalid TOML: nested too deeply (or too large) for the TOML parser"


def read_config_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes, without a leading UTF-8 byte order mark; a `ConfigError` past
    `MAX_CONFIG_BYTES`, read no further.

    Windows Notepad starts a UTF-8 file with a BOM, which TOML parsers refuse ("Invalid
    statement (column 1)"); it is no text, and no newline, so line numbers stay true. A
    file rewritten by `add` or `import-opml` is written without it.

    Raises OSError (FileNotFoundError included) as reading does.
    """
    data = read_regular_file(path, MAX_CONFIG_BYTES + len(codecs.BOM_UTF8) + 1)
    data = data.removeprefix(codecs.BOM_UTF8)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(shown, 1, "", f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB")
    return data


def too_deep(shown: str) -> ConfigError:
    """The error for a file the TOML parser ran out of stack (or memory) on."""
    return ConfigError(shown, 1, "", _TOO_DEEP)


_SINGLE_FEEDS_HEADER = re.compile(r"^[ \t]*\[[ \t]*feeds[ \t]*\][ \t]*(?:#.*)?$", re.MULTILINE)
_SINGLE_FEEDS = "[feeds] is a single table; write [[feeds]], one per source"
_UNQUOTED_UNIT = re.compile(  # `key = 15m`: a number and letters, unquoted
    r"^[ \t]*[A-Za-z0-9_.\"'-]+[ \t]*=[ \t]*(\d[\d.]*[ \t]*[A-Za-z][\w \t]*?)[ \t]*(?:#.*)?$"
)


def _syntax_error(shown: str, text: str, error: tomllib.TOMLDecodeError) -> ConfigError:
    """The TOML parser's error, at the line of the real mistake and with its fix where it is
    one of the usual two: `[feeds]` for `[[feeds]]` (which the parser notices only at the
    next `[feeds]` or `[[feeds]]`), and a duration or size left unquoted (`interval = 15m`)."""
    message = str(error)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    line = int(match.group(1)) if match else 1
    detail = re.sub(r"\s*\(at (?:line \d+, column \d+|end of document)\)", "", message)
    where = f" (column {match.group(2)})" if match else ""
    single = _SINGLE_FEEDS_HEADER.search(text)
    if single and _parses(_SINGLE_FEEDS_HEADER.sub("[[feeds]]", text)):
        line = text.count("\n", 0, single.start()) + 1
        return ConfigError(shown, line, "feeds", _SINGLE_FEEDS)
    lines = text.split("\n")  # TOML's lines (`splitlines` also splits at U+2028, U+0085...)
    unquoted = (
        _UNQUOTED_UNIT.match(lines[line - 1].rstrip("\r")) if 0 < line <= len(lines) else None
    )
    hint = f'; quote it: "{unquoted.group(1)}"' if unquoted else ""
    return ConfigError(shown, line, "", f"invalid TOML: {detail}{where}{hint}")


def _parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, MemoryError):
        return False
    return True


def load_config(
    path: Path, display_name: str | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, parse and validate `path`; raise `ConfigError` (with `.others`) on any problem.

    `environ` (default: the process's) may hold `AGGREGATOR_STORE_URL`, which wins over
    `[store] url` and `[store] path`.
    """
    shown = display_name or str(path)
    try:
        raw_bytes = read_config_bytes(path, shown)
    except FileNotFoundError as e:
        raise ConfigError(shown, 1, "", "file not found") from e
    except OSError as e:
        raise ConfigError(shown, 1, "", f"cannot read: {e.strerror or e}") from e
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw_bytes[: e.start].count(b"\n") + 1
        raise ConfigError(shown, line, "", "invalid TOML: the file is not UTF-8") from e
    try:
        data = tomllib.loads(text)
    except (RecursionError, MemoryError) as e:
        raise too_deep(shown) from e
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(shown, text, e) from e
    env = os.environ if environ is None else environ
    return _validate(data, path.resolve().parent, path, _Loader(shown, text), env)


def _validate(
    data: dict[str, Any], base_dir: Path, path: Path, load: _Loader, env: Mapping[str, str]
) -> Config:
    load.table(data, (), _TABLES)

    site_t = load.table(data.get("aggregator", {}), ("aggregator",), _SITE_KEYS)
    poll_t = load.table(data.get("poll", {}), ("poll",), _POLL_KEYS)
    publish_t = load.table(data.get("publish", {}), ("publish",), _PUBLISH_KEYS)
    store_t = load.table(data.get("store", {}), ("store",), _STORE_KEYS)
    server_t = load.table(data.get("server", {}), ("server",), _SERVER_KEYS)

    server = ServerSettings(
        host=load.value(server_t, ("server",), "host", _string, "127.0.0.1"),
        port=load.value(server_t, ("server",), "port", _port, 8080),
        request_timeout=load.value(
            server_t, ("server",), "request_timeout", parse_duration, DEFAULT_REQUEST_TIMEOUT
        ),
        max_connections=load.value(
            server_t, ("server",), "max_connections", _positive_int, DEFAULT_MAX_CONNECTIONS
        ),
        summary_interval=load.value(
            server_t, ("server",), "summary_interval", _summary_interval, DEFAULT_SUMMARY_INTERVAL
        ),
    )
    s = ("aggregator",)
    base_url = load.value(site_t, s, "base_url", _base_url, server_url(server.host, server.port))
    title = load.value(site_t, s, "title", _string, "aggregator")
    site = SiteSettings(
        title=title,
        link=load.value(site_t, s, "link", _http_url, base_url),
        description=load.value(
            site_t, s, "description", _string, f"{title}: the latest from every source"
        ),
        language=load.value(site_t, s, "language", _language, None),
        timezone=load.value(site_t, s, "timezone", _timezone, "UTC"),
        base_url=base_url,
    )
    p = ("poll",)
    timeout = load.value(poll_t, p, "timeout", parse_duration, timedelta(seconds=30))
    poll = PollSettings(
        interval=load.value(poll_t, p, "interval", parse_duration, timedelta(minutes=15)),
        concurrency=load.value(poll_t, p, "concurrency", _positive_int, 10),
        timeout=timeout,
        per_host=load.value(poll_t, p, "per_host", _positive_int, 2),
        max_bytes=load.value(poll_t, p, "max_bytes", _size, 10 * 1024 * 1024),
        user_agent=load.value(poll_t, p, "user_agent", _user_agent, USER_AGENT),
        lease=load.value(poll_t, p, "lease", parse_duration, default_lease(timeout)),
        parse_timeout=load.value(poll_t, p, "parse_timeout", parse_duration, DEFAULT_PARSE_TIMEOUT),
        partial_parse=load.value(poll_t, p, "partial_parse", _bool, True),
    )
    if poll.lease <= poll.timeout:
        load.error(
            ("poll", "lease"),
            "must be longer than [poll] timeout, or a slow poll would be handed to another "
            "daemon and polled twice",
        )
    pub = ("publish",)
    publish = PublishSettings(
        output_dir=load.value(
            publish_t, pub, "output_dir", _output_path(base_dir), base_dir / "output"
        ),
        max_items=load.value(publish_t, pub, "max_items", _positive_int, 200),
        max_age=load.value(publish_t, pub, "max_age", parse_duration, timedelta(days=30)),
        teaser_length=load.value(
            publish_t, pub, "teaser_length", _teaser_length, DEFAULT_TEASER_LENGTH
        ),
        filters=load.filters(publish_t, pub),
        theme=_theme(publish_t, base_dir, load, site),
    )
    store = StoreSettings(
        path=load.value(
            store_t,
            ("store",),
            "path",
            _output_path(base_dir),
            base_dir / "state" / "aggregator.db",
        ),
        keep=load.value(store_t, ("store",), "keep", parse_duration, timedelta(days=90)),
        url=_configured_store_url(store_t, load, env),
    )
    if store.keep < publish.max_age and "keep" in store_t:
        load.error(
            ("store", "keep"),
            "must be at least [publish] max_age, or published items would be deleted",
        )
    elif store.keep < publish.max_age:
        store = StoreSettings(store.path, publish.max_age, store.url)
    sources = _sources(data, base_dir, load, poll, site)
    websub = _websub(data, load, site, public="base_url" in site_t)
    site = replace(site, hubs=websub.advertised)
    # Deferred: the channels' loader takes this module's checkers and `_Loader`.
    from aggregator.config_channels import load_channels  # noqa: PLC0415

    channels = load_channels(data, load, sources, site, publish)
    if load.errors:
        first, *rest = load.errors
        first.others = tuple(rest)
        raise first
    return Config(
        path.resolve(),
        site,
        poll,
        publish,
        store,
        server,
        sources,
        websub,
        channels,
        tuple(load.warnings),
    )


def _websub(
    data: dict[str, Any], load: _Loader, site: SiteSettings, *, public: bool
) -> WebsubSettings:
    """`[websub]`: the subscriber's keys and the built-in hub's. A hub must reach us, so
    nothing is subscribed or advertised (and the built-in hub does not run) unless
    `[aggregator] base_url` is written (or, for callbacks, `callback_url`): the default
    names where we listen, which is rarely where the world reaches us."""
    path = ("websub",)
    table = load.table(data.get("websub", {}), path, _WEBSUB_KEYS)
    d = WebsubSettings()
    callback = load.value(table, path, "callback_url", _base_url, None)
    if callback is None and public:
        callback = site.base_url + "websub/callback/"
    builtin = load.value(table, path, "builtin_hub", _bool, True)
    hubs: tuple[str, ...] = load.value(table, path, "hubs", _hub_urls, ())
    if hubs and not public:
        load.error(
            (*path, "hubs"),
            "a hub fetches the feeds from their public address: set [aggregator] base_url",
        )
    settings = WebsubSettings(
        callback_base=callback,
        subscribe=load.value(table, path, "subscribe", _bool, True),
        poll_interval=load.value(
            table, path, "poll_interval", parse_duration, DEFAULT_WEBSUB_POLL_INTERVAL
        ),
        subscription_lease=load.value(
            table, path, "subscription_lease", _lease, DEFAULT_SUBSCRIPTION_LEASE
        ),
        allow_sha1=load.value(table, path, "allow_sha1", _bool, False),
        allow_private_hubs=load.value(table, path, "allow_private_hubs", _bool, False),
        hub_url=site.base_url + HUB_PATH if builtin and public else None,
        hubs=hubs if public else (),
        allow_private_callbacks=load.value(table, path, "allow_private_callbacks", _bool, False),
        default_lease=load.value(table, path, "default_lease", parse_duration, d.default_lease),
        min_lease=load.value(table, path, "min_lease", parse_duration, d.min_lease),
        max_lease=load.value(table, path, "max_lease", parse_duration, d.max_lease),
        max_subscribers=load.value(
            table, path, "max_subscribers", _positive_int, d.max_subscribers
        ),
        requests_per_minute=load.value(
            table, path, "requests_per_minute", _positive_int, d.requests_per_minute
        ),
        delivery_timeout=load.value(
            table, path, "delivery_timeout", parse_duration, d.delivery_timeout
        ),
        delivery_concurrency=load.value(
            table, path, "delivery_concurrency", _positive_int, d.delivery_concurrency
        ),
        retry_delay=load.value(table, path, "retry_delay", parse_duration, d.retry_delay),
        max_failures=load.value(table, path, "max_failures", _positive_int, d.max_failures),
    )
    _check_leases(table, load, settings)
    return settings


def _check_leases(table: Mapping[str, Any], load: _Loader, websub: WebsubSettings) -> None:
    """Leases in order: min_lease <= default_lease <= max_lease, each at least a second (a
    hub.lease_seconds is whole seconds)."""
    for key in ("min_lease", "default_lease", "max_lease"):
        if key in table and getattr(websub, key) < timedelta(seconds=1):
            load.error(("websub", key), f"expected at least 1s, got {_show(table[key])}")
    if websub.min_lease > websub.max_lease:
        load.error(("websub", "min_lease"), "must not be longer than max_lease")
    elif not websub.min_lease <= websub.default_lease <= websub.max_lease:
        load.error(("websub", "default_lease"), "must lie between min_lease and max_lease")


def _configured_store_url(
    store_t: Mapping[str, Any], load: _Loader, env: Mapping[str, str]
) -> str | None:
    """`AGGREGATOR_STORE_URL` if set, else `[store] url`; both set in the file is a mistake."""
    from_file = load.value(store_t, ("store",), "url", _store_url, None)
    if "url" in store_t and "path" in store_t:
        load.error(("store", "url"), "[store] path and url name two stores; keep one")
    from_env = env.get(STORE_URL_VARIABLE)
    if from_env is None:
        return from_file
    try:
        return _store_url(from_env)
    except _Invalid as e:
        load.errors.append(ConfigError("environment", 0, STORE_URL_VARIABLE, str(e)))
        return None


MIN_REMOTE_INTERVAL = timedelta(minutes=1)
_TOO_OFTEN = (
    'more often than a remote source should be polled; write "1m" or more '
    "(intervals under a minute are for local files and loopback hosts)"
)


def _feed_tables(data: dict[str, Any], load: _Loader) -> list[Any]:
    """The `[[feeds]]` array; empty (after reporting why) when there is none."""
    feeds = data.get("feeds")
    if feeds is None or feeds == []:
        load.error(("feeds",), "no sources configured; add a [[feeds]] table with a url")
        return []
    if not isinstance(feeds, list):
        load.error(
            ("feeds",),
            _SINGLE_FEEDS
            if isinstance(feeds, dict)
            else f"expected an array of tables ([[feeds]]), got {_show(feeds)}",
        )
        return []
    return feeds


def _check_poll_interval(
    data: dict[str, Any], load: _Loader, poll: PollSettings, inheriting: list[int]
) -> None:
    """`[poll] interval` under a minute is refused only when a remote source takes it: local
    files and loopback servers (tests, a local setup) may be polled every few seconds."""
    if not inheriting or poll.interval >= MIN_REMOTE_INTERVAL:
        return
    first = ("feeds", inheriting[0])
    raw = data.get("poll", {}).get("interval")
    load.error(
        ("poll", "interval"),
        f"{_show(raw)} applies to remote sources (first {format_path(first)}, line "
        f"{load.lines.line_of(first)}) and is {_TOO_OFTEN}",
    )


def _sources(
    data: dict[str, Any], base_dir: Path, load: _Loader, poll: PollSettings, site: SiteSettings
) -> tuple[SourceConfig, ...]:
    feeds = _feed_tables(data, load)
    sources: list[SourceConfig] = []
    seen = _Seen({}, {})
    inheriting: list[int] = []  # remote sources that take [poll] interval
    check_url = _source_url(base_dir)
    for index, feed in enumerate(feeds):
        path: KeyPath = ("feeds", index)
        table = load.table(feed, path, _FEED_KEYS)
        if not isinstance(feed, dict):
            continue
        if "url" not in table:
            load.error(path, "missing required key url")
            continue
        errors_before = len(load.errors)
        url = load.value(table, path, "url", check_url, "")
        named = "name" in table or not url  # a name derived only when none is written
        name = load.value(table, path, "name", _name, "" if named else derive_name(url))
        source = SourceConfig(
            name=name,
            url=url,
            title=load.value(table, path, "title", _display_text, None),
            interval=load.value(table, path, "interval", parse_duration, poll.interval),
            timezone=load.value(table, path, "timezone", _timezone, site.timezone),
            tags=load.value(table, path, "tags", _tags, ()),
            filters=load.filters(table, path),
        )
        if len(load.errors) > errors_before or seen.duplicate(load, index, table, source):
            continue
        if not _is_loopback(url):
            if "interval" not in table:
                inheriting.append(index)
            elif source.interval < MIN_REMOTE_INTERVAL:
                load.error((*path, "interval"), f"{_show(table['interval'])} is {_TOO_OFTEN}")
                continue
        sources.append(source)
    _check_poll_interval(data, load, poll, inheriting)
    return tuple(sources)


@dataclass(frozen=True)
class _Seen:
    """The sources read so far, by name and by URL identity, to report duplicates."""

    names: dict[str, int]
    urls: dict[str, int]

    def duplicate(
        self, load: _Loader, index: int, table: Mapping[str, Any], source: SourceConfig
    ) -> bool:
        """Report `source` if it repeats one read before; remember it if not.

        The URL is compared first: two unnamed sources with one URL derive one name, and
        "duplicate name" would send the operator looking for names they never wrote.
        """
        path = ("feeds", index)
        url_key = url_identity(source.url)
        if url_key in self.urls:
            other = self.urls[url_key]
            load.error(
                (*path, "url"),
                f"duplicate source: the same URL as feeds[{other}] (line "
                f"{load.lines.line_of(('feeds', other, 'url'))})",
            )
            return True
        if source.name in self.names:
            other = self.names[source.name]
            where = "name" if "name" in table else "url"
            load.error(
                (*path, where),
                f'duplicate source name "{source.name}" (also feeds[{other}], line '
                f"{load.lines.line_of(('feeds', other))}); give one a different name",
            )
            return True
        self.names[source.name] = index
        self.urls[url_key] = index
        return False


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def url_identity(url: str) -> str:
    """Two spellings of one URL count as one source: scheme and host case, the default port,
    a trailing slash, and escapes of letters, digits and `-._~` (`/%61.xml` is `/a.xml`) or
    in lower case (`%2f` is `%2F`), as RFC 3986 section 6.2.2 says; and an IRI and the URI
    it is (`/हिंदी/` and `/%E0%A4%B9...`, a Devanagari host and its `xn--` form)."""
    parts = urlsplit(as_uri(url))
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    netloc = netloc.removesuffix(_DEFAULT_PORTS.get(scheme, "\0"))
    path = _ESCAPE.sub(_normal_escape, parts.path).rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, _ESCAPE.sub(_normal_escape, parts.query), ""))


def _normal_escape(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else f"%{byte:02X}"

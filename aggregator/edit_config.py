"""Add sources to `feeds.toml` without disturbing a byte of what the operator wrote.

The file is read with tomlkit; each new source is rendered by tomlkit as a `[[feeds]]` table and
appended as text at the end of the file (TOML lets `[[feeds]]` tables follow other tables),
so every comment, blank line and layout choice already there stays exactly as it was. The new
text must pass `load_config` before it atomically replaces the file (a temporary file in the
same directory, fsync, then a rename), so an edit never leaves a broken or half-written
feeds.toml.

Each edit reads and writes under an exclusive lock (`flock`) on `.feeds.toml.lock` beside the
file, so concurrent `add` and `import-opml` runs all land instead of overwriting each other.
Not a lock on feeds.toml itself: the rename gives feeds.toml a new inode, so a process
waiting on the old one would wake holding a lock nobody else asks for any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import tomlkit
from anyascii import anyascii
from tomlkit.exceptions import ParseError as TomlParseError
from tomlkit.items import AoT

from aggregator.config import (
    SOURCE_NAME,
    derive_name,
    load_config,
    normalize_source_url,
    read_config_bytes,
    too_deep,
    url_identity,
)
from aggregator.errors import ConfigError, DuplicateSourceError, EditError
from aggregator.output import fsync_directory
from aggregator.parse.opml import OpmlFeed, SkippedOutline
from aggregator.settings import PollSettings
from aggregator.text import clean_text, collapse_whitespace
from aggregator.tomlpos import LineIndex

_MAX_NAME = 64
# A name from a title stops at a word within this: it is a column in `status`, not a headline.
_MAX_TITLE_NAME = 40
_NEW_FILE_MODE = 0o644
# Stands in for the first source while reading the settings of a file that has none yet.
_PLACEHOLDER_URL = "https://placeholder.invalid/feed.xml"


@dataclass
class _Sources:
    """What feeds.toml already has, and what this edit appends."""

    text: str
    names: set[str] = field(default_factory=set)
    urls: dict[str, str] = field(default_factory=dict)  # URL identity -> source name
    tables: list[str] = field(default_factory=list)

    @property
    def newline(self) -> str:
        return "\r\n" if "\r\n" in self.text else "\n"

    def unique_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`... the first that no source has yet."""
        for n in range(1, 10_000):
            suffix = "" if n == 1 else f"-{n}"
            candidate = base[: _MAX_NAME - len(suffix)].rstrip("-.") + suffix
            if candidate not in self.names:
                return candidate
        raise EditError(f'cannot find a free name like "{base}"; give one with --name')

    def add(self, url: str, name: str, title: str | None, tags: Sequence[str] = ()) -> None:
        table = tomlkit.table()
        table.add("url", url)
        table.add("name", name)
        if title:
            table.add("title", title)
        if tags:
            table.add("tags", list(tags))
        feeds = tomlkit.aot()
        feeds.append(table)
        document = tomlkit.document()
        document.append("feeds", feeds)
        self.tables.append(tomlkit.dumps(document).replace("\n", self.newline))
        self.names.add(name)
        self.urls[url_identity(url)] = name

    def updated_text(self) -> str:
        out, nl = self.text, self.newline
        if out and not out.endswith("\n"):
            out += nl
        for table in self.tables:
            if out.strip() and not out.endswith(nl + nl):
                out += nl  # a blank line before each new table
            out += table
        return out


def name_from_title(title: str | None) -> str | None:
    """A source name from a feed's title: ASCII (Devanagari and other scripts transliterated
    by anyascii), lower-case, words joined by hyphens; None when nothing of it is left.

    "बीबीसी हिंदी" gives "bibisi-himdi": readable in `status` and `/metrics`, unlike a name
    made of the feed's host and path.
    """
    if not title:
        return None
    ascii_text = anyascii(title).lower().replace("'", "")  # "Let's" is one word, not two
    words = re.findall(r"[a-z0-9]+", ascii_text)
    name = ""
    for word in words:
        longer = f"{name}-{word}" if name else word
        if len(longer) > _MAX_TITLE_NAME:
            break
        name = longer
    return name or (words[0][:_MAX_TITLE_NAME] if words else None)


def _normalized(raw: str, base_dir: Path) -> str:
    """A `url` as `load_config` reads it (http(s) as written, a path as a file:// URL)."""
    try:
        return normalize_source_url(raw, base_dir)
    except ValueError:
        return raw.strip()


def _check_url(url: str, *, allow_files: bool) -> str:
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as e:
        raise EditError(f"bad port in URL {url!r}") from e
    if scheme in ("http", "https") and parts.hostname and not any(c.isspace() for c in url):
        return url
    if allow_files and scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return url
    kinds = "an http, https or file:// URL" if allow_files else "an http or https URL"
    raise EditError(f"expected {kinds}, got {url!r}")


def _read(path: Path) -> _Sources:
    """The file's text and the sources it names; an absent file is an empty one."""
    try:
        text = read_config_bytes(path, str(path)).decode("utf-8")
    except FileNotFoundError:
        text = ""
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), 1, "", "invalid TOML: the file is not UTF-8") from e
    except OSError as e:
        raise ConfigError(str(path), 1, "", f"cannot read: {e.strerror or e}") from e
    try:
        document = tomlkit.parse(text)
    except TomlParseError as e:
        raise ConfigError(str(path), e.line, "", f"invalid TOML: {e}") from e
    except (RecursionError, MemoryError) as e:
        raise too_deep(str(path)) from e
    sources = _Sources(text)
    feeds = document.get("feeds")
    if feeds is None:
        return sources
    if not isinstance(feeds, AoT):
        line = LineIndex(text).line_of(("feeds",))
        raise ConfigError(
            str(path), line, "feeds", "is not written as [[feeds]] tables; add the source by hand"
        )
    base_dir = path.resolve().parent
    for table in feeds.unwrap():
        url = table.get("url")
        if not isinstance(url, str) or not url.strip():
            continue
        url = _normalized(url, base_dir)
        name = table.get("name")
        name = name if isinstance(name, str) else derive_name(url)
        sources.names.add(name)
        sources.urls.setdefault(url_identity(url), name)
    return sources


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock on edits of the feeds.toml at `path` (through a symlink)."""
    target = path.resolve() if path.is_symlink() else path
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _NEW_FILE_MODE)
    except OSError as e:
        raise EditError(f"cannot lock {path} ({lock_path}): {e.strerror or e}") from e
    try:
        # The lock file is the config's owner's too: made by root's `add`, it must not keep
        # the daemon's user from locking (and so editing) its own feeds.toml later.
        with contextlib.suppress(OSError):
            _chown_like(lock_path, target.stat())
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write: milliseconds
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, removing it would race


def _write(path: Path, text: str) -> None:
    """Check `text` with `load_config`, then atomically replace `path` (through a symlink),
    keeping its mode, owner and group: root running `add` on the daemon's 0600 file must not
    leave it root's, unreadable by the daemon's user."""
    target = path.resolve() if path.is_symlink() else path
    with _temporary(target, text, shown=path) as temporary:
        load_config(temporary, display_name=str(path))
        try:
            try:
                old = target.stat()
            except FileNotFoundError:
                temporary.chmod(_NEW_FILE_MODE)
            else:
                _chown_like(temporary, old)
                temporary.chmod(stat.S_IMODE(old.st_mode))  # after chown, which may clear bits
            temporary.replace(target)
            fsync_directory(target.parent)
        except OSError as e:
            raise EditError(f"cannot write {path}: {e.strerror or e}") from e


def _chown_like(temporary: Path, old: os.stat_result) -> None:
    """Give `temporary` the owner and group of the file it replaces. Only root may give a
    file away; anyone else's new file is theirs already (or their group differs, which
    they may not be allowed to set): EPERM is no error then."""
    if (old.st_uid, old.st_gid) == (os.geteuid(), os.getegid()):
        return
    with contextlib.suppress(PermissionError):
        os.chown(temporary, old.st_uid, old.st_gid)


@contextlib.contextmanager
def _temporary(beside: Path, text: str, *, shown: Path) -> Iterator[Path]:
    """`text` in a new file next to `beside`, removed afterwards unless renamed."""
    try:
        fd, name = tempfile.mkstemp(dir=beside.parent, prefix=f".{beside.name}.", suffix=".tmp")
    except OSError as e:
        raise EditError(f"cannot write {shown}: {e.strerror or e}") from e
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class NewSource:
    """What `add_source` is asked to write: the feed's URL, its own title, the operator's words."""

    url: str
    name: str | None = None  # --name; else derived from feed_title, else from the URL
    title: str | None = None  # --title: written into feeds.toml
    feed_title: str | None = None  # the feed's own title: only names the source


def add_source(
    path: Path,
    url: str,
    *,
    name: str | None = None,
    title: str | None = None,
    feed_title: str | None = None,
) -> str:
    """Append a `[[feeds]]` table for `url` to feeds.toml at `path`; return the source's name.

    Refuses (`DuplicateSourceError`) a URL already present (scheme and host compared without
    case, a trailing slash ignored) or a name already taken. Without `name`, one is derived
    from `feed_title` (else from the URL) and made unique with -2, -3... An absent file is
    created.
    """
    url = _check_url(url, allow_files=True)
    with _locked(path):
        return _add_source(path, NewSource(url, name, title, feed_title))


def _add_source(path: Path, new: NewSource) -> str:
    url, name, title = new.url, new.name, new.title
    sources = _read(path)
    key = url_identity(_normalized(url, path.resolve().parent))
    if key in sources.urls:
        raise DuplicateSourceError(f'{url} is already in {path} (as source "{sources.urls[key]}")')
    if name is not None:
        name = name.strip()
        if not SOURCE_NAME.match(name):
            raise EditError(
                f"expected a name of letters, digits, '.', '_' or '-' (at most 64), got {name!r}"
            )
        if name in sources.names:
            raise DuplicateSourceError(f'a source named "{name}" is already in {path}')
    else:
        name = sources.unique_name(name_from_title(new.feed_title) or derive_name(url))
    sources.add(url, name, title.strip() if title and title.strip() else None)
    _write(path, sources.updated_text())
    return name


def import_opml(path: Path, feeds: Sequence[OpmlFeed]) -> tuple[list[str], list[SkippedOutline]]:
    """Append every feed of an OPML list not already in feeds.toml, its folders and
    categories as its `tags`; return (added names, what was skipped and why): URLs already
    present, twice in the list, or not http(s). The file is written once, and not at all
    when nothing is added."""
    with _locked(path):
        return _import_opml(path, feeds)


def _import_opml(path: Path, feeds: Sequence[OpmlFeed]) -> tuple[list[str], list[SkippedOutline]]:
    sources = _read(path)
    known = dict(sources.urls)  # what feeds.toml had before this import
    added: list[str] = []
    skipped: list[SkippedOutline] = []
    for feed in feeds:
        reason = _why_not_imported(feed.url, known, sources.urls, path.name)
        if reason:
            skipped.append(SkippedOutline(feed.url, reason))
            continue
        url = feed.url.strip()
        name = sources.unique_name(derive_name(url))
        # OPML titles come from anywhere: no control characters into feeds.toml.
        title = (collapse_whitespace(clean_text(feed.title)) or None) if feed.title else None
        sources.add(url, name, title or None, feed.tags)  # its OPML folders and categories
        added.append(name)
    if added:
        _write(path, sources.updated_text())
    return added, skipped


def _why_not_imported(
    url: str, known: dict[str, str], taken: dict[str, str], file_name: str
) -> str | None:
    """Why an OPML feed is not added (`known`: feeds.toml's URLs; `taken`: those and the
    list's so far), or None when it is added."""
    try:
        url = _check_url(url, allow_files=False)
    except EditError:
        return "not an http(s) URL"
    key = url_identity(url)
    if key in known:
        return f'already in {file_name} (source "{known[key]}")'
    if key in taken:
        return f'a duplicate of an earlier outline in the file (added as "{taken[key]}")'
    return None


def poll_settings(path: Path) -> PollSettings:
    """`[poll]` of feeds.toml, for fetching before an edit; the file may have no sources yet.

    Raises `ConfigError` for any problem but the missing sources an edit is about to add.
    """
    sources = _read(path)
    if sources.urls:
        return load_config(path, display_name=str(path)).poll
    sources.add(_PLACEHOLDER_URL, "placeholder", None)
    target = path.resolve() if path.is_symlink() else path
    with _temporary(target, sources.updated_text(), shown=path) as temporary:
        return load_config(temporary, display_name=str(path)).poll

"""The published files as served: each version read, hashed and gzipped once, off the loop."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
import os
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from aggregator.output import GZIP_SUFFIX

MEDIA_TYPES = {
    "rss.xml": "application/rss+xml; charset=utf-8",
    "atom.xml": "application/atom+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",  # archive days (RFC 5005)
    ".json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
}


_GZIP_MIN_BYTES = 256
# Bytes of file versions kept in memory (bodies and their gzip): the main files are read at
# every request, but archives are thousands of files, and a crawler walking them all must
# not make the daemon hold every one. The least recently served go first.
CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class FileVersion:
    key: tuple[int, int, int]  # (inode, mtime_ns, size): publish replaces files by rename
    body: bytes
    gzipped: bytes | None
    etag: str
    last_modified: str
    mtime: int
    media_type: str

    @property
    def size(self) -> int:
        """Bytes it holds in memory."""
        return len(self.body) + len(self.gzipped or b"")


def media_type_of(name: str) -> str:
    """The media type of a published file by its path (`news/atom.xml` is an Atom feed)."""
    if name.endswith(GZIP_SUFFIX):  # a precompressed sibling, asked for by its own name
        return "application/gzip"
    base = Path(name).name
    if base in MEDIA_TYPES:
        return MEDIA_TYPES[base]
    suffix = Path(name).suffix
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


class PublishedFiles:
    """The files in `root`, cached by version; resolves names safely."""

    def __init__(self, root: Path, cache_bytes: int = CACHE_BYTES) -> None:
        self.root = root.resolve()
        self._cache: OrderedDict[str, FileVersion] = OrderedDict()  # least recently served first
        self._cached_bytes = 0
        self._cache_bytes = cache_bytes
        # Loads under way, by (name, version key): concurrent requests share one.
        self._loading: dict[
            tuple[str, tuple[int, int, int]], asyncio.Future[FileVersion | None]
        ] = {}

    def path_of(self, name: str) -> Path | None:
        """The file `name` names inside root, or None (hidden, traversal, not a file)."""
        parts = name.split("/")
        if (
            not name
            or "\x00" in name
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        ):
            return None
        try:
            candidate = (self.root / name).resolve()
            if not candidate.is_relative_to(self.root) or not candidate.is_file():
                return None
        except (OSError, ValueError, RuntimeError):  # a name too long, a symlink loop
            return None
        # A symlink may lead to a hidden file or directory under root: the target counts.
        if any(p.startswith(".") for p in candidate.relative_to(self.root).parts):
            return None
        return candidate

    async def get(self, name: str) -> FileVersion | None:
        """The current version of `name`, or None; a new version is loaded off the loop."""
        path = self.path_of(name)
        if path is None:
            self._forget(name)  # a removed channel's files, a day gone: not kept in memory
            return None
        try:
            stat = path.stat()
        except OSError:
            self._forget(name)
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached.key == key:
            self._cache.move_to_end(name)
            return cached
        loading = self._loading.get((name, key))
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(_load_version, path, name))
            self._loading[(name, key)] = loading
            loading.add_done_callback(lambda _: self._loading.pop((name, key), None))
        # Shielded: a request cancelled while waiting must not cancel the others' load.
        version = await asyncio.shield(loading)
        if version is not None:
            self._keep(name, version)
        return version

    def _keep(self, name: str, version: FileVersion) -> None:
        """Cache `version`, then forget the least recently served until within budget."""
        self._forget(name)
        self._cache[name] = version
        self._cached_bytes += version.size
        while self._cached_bytes > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.size

    def _forget(self, name: str) -> None:
        old = self._cache.pop(name, None)
        if old is not None:
            self._cached_bytes -= old.size

    @property
    def cached_bytes(self) -> int:
        """Bytes of file versions held in memory (bodies and their gzip)."""
        return self._cached_bytes


def _load_version(path: Path, name: str) -> FileVersion | None:
    """Read, hash and compress one version of a file (in a thread: seconds for 100 MB)."""
    try:
        # stat and read the same open file: a rename in between cannot mix two versions.
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            body = handle.read()
    except OSError:
        return None
    digest = hashlib.sha256(body).hexdigest()[:32]
    if len(body) < _GZIP_MIN_BYTES:
        packed = None
    else:
        packed = _sibling(path, stat.st_mtime_ns) or gzip.compress(body, mtime=0)
    return FileVersion(
        key=(stat.st_ino, stat.st_mtime_ns, stat.st_size),
        body=body,
        gzipped=packed,
        etag=f'"{digest}"',
        last_modified=formatdate(int(stat.st_mtime), usegmt=True),
        mtime=int(stat.st_mtime),
        media_type=media_type_of(name),
    )


def _sibling(path: Path, mtime_ns: int) -> bytes | None:
    """The gzipped sibling the publish wrote for this very version of `path` (it gives the
    sibling the file's mtime), so the server need not compress it again; None when there
    is none, or it is another version's (a publish between its two writes)."""
    try:
        with path.with_name(path.name + GZIP_SUFFIX).open("rb") as handle:
            if os.fstat(handle.fileno()).st_mtime_ns != mtime_ns:
                return None
            return handle.read()
    except OSError:
        return None

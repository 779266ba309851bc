"""Write rendered files into `output/` atomically, and only when their bytes change.

Write to a temporary file in the same directory, fsync, rename over the old one: a reader
(or a `kill -9`) never sees half a file, and an unchanged feed keeps its mtime and ETag.
Each publication's directory holds a hidden record of what it holds (each file's digest,
inode, mtime and size) and of the last publish's input, so an unchanged publication skips
rendering and copying too. Beside each file, its gzipped sibling (`atom.xml.gz`).

A temporary file is flock()ed while it is written, so a process starting up can tell one
that a killed publish left behind (unlocked: removed, however fresh) from one another
process is writing right now (locked: kept). The kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aggregator.errors import PublishError


def write_if_changed(path: Path, data: bytes, *, sync_directory: bool = True) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that.

    Returns True when the file was written. `sync_directory` False: the caller fsyncs the
    directory itself (once for many files).
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as e:
        raise PublishError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _locked_temporary(path)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).chmod(0o644)
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if sync_directory:
            fsync_directory(path.parent)
    except OSError as e:
        raise PublishError(f"cannot write {path}: {e.strerror or e}") from e
    return True


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, flock()ed: (descriptor, name)."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A process starting up may have taken it for a leftover and removed it between
        # mkstemp and flock: then take another one.
        try:
            if Path(tmp).stat().st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Precompressed siblings (`atom.xml.gz` beside `atom.xml`) for a static server in front
# (nginx's `gzip_static`, see contrib/nginx.conf): compressed once when a file changes,
# never per request. Level 9: written once, served many times.
GZIP_SUFFIX = ".gz"
_GZIP_LEVEL = 9


def gzipped(data: bytes) -> bytes:
    """`data` gzipped, the same bytes every time (no name, no timestamp in the header), so
    an unchanged file's sibling is unchanged too."""
    return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)


def write_with_sibling(path: Path, data: bytes, *, sync_directory: bool = True) -> bool:
    """`write_if_changed`, then the gzipped sibling unless it is already the one written
    for this very file (same mtime: it takes the file's, so a static server sends the same
    Last-Modified for both encodings, and a publish killed between the two writes is
    repaired by the next). Returns whether the file itself was written."""
    written = write_if_changed(path, data, sync_directory=sync_directory)
    sibling = path.with_name(path.name + GZIP_SUFFIX)
    try:
        mtime = path.stat().st_mtime_ns
        if not written and sibling.stat().st_mtime_ns == mtime:
            return written
    except FileNotFoundError:
        pass
    except OSError as e:
        raise PublishError(f"cannot read {sibling}: {e.strerror or e}") from e
    write_if_changed(sibling, gzipped(data), sync_directory=sync_directory)
    try:
        os.utime(sibling, ns=(mtime, mtime))
    except OSError as e:
        raise PublishError(f"cannot write {sibling}: {e.strerror or e}") from e
    return written


# A published file's name: relative, "/"-separated segments that are neither empty, hidden,
# nor "." or "..". Names come from the store: one naming a place outside output/ is refused.
_SAFE_NAME = re.compile(r"(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*/)*[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def published_path(output_dir: Path, name: str) -> Path:
    """Where the published file `name` lives under `output_dir`."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name.split("/"):
        raise PublishError(f"refusing to publish {name!r}: not a plain path under {output_dir}")
    return output_dir / name


def publish_files(output_dir: Path, files: Mapping[str, bytes]) -> dict[str, bool]:
    """Write each named file under `output_dir`, with its gzipped sibling; returns which
    ones changed. Each directory written to is fsynced once, after its files (a day's
    archive files share a folder with the month's others)."""
    written = {}
    directories = set()
    for name, data in files.items():
        path = published_path(output_dir, name)
        if write_with_sibling(path, data, sync_directory=False):
            directories.add(path.parent)
            written[name] = True
        else:
            written[name] = False
    directory = output_dir
    try:
        for directory in sorted(directories):
            fsync_directory(directory)
    except OSError as e:
        raise PublishError(f"cannot write {directory}: {e.strerror or e}") from e
    return written


def remove_file(output_dir: Path, name: str) -> None:
    """Remove a file no longer published (an archive day gone), its gzipped sibling, and the
    directories it leaves empty (an archive month, a year) up to `output_dir`."""
    path = published_path(output_dir, name)
    try:
        with contextlib.suppress(FileNotFoundError):
            mtime = path.lstat().st_mtime_ns
            path.unlink()
            _remove_sibling(path, mtime)
        parent = path.parent
        while parent != output_dir and parent.is_relative_to(output_dir):
            parent.rmdir()  # fails (and stops) while it holds anything
            parent = parent.parent
    except OSError as e:
        if path.exists():
            raise PublishError(f"cannot remove {path}: {e.strerror or e}") from e


# What `write_if_changed` names its temporary files: `.NAME.` + mkstemp's 8 characters.
_TEMPORARY_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_stale_temp_files(output_dir: Path) -> int:
    """Remove temporary files a killed publish left behind (`.NAME.xxxxxxxx.tmp`), in
    `output_dir` and the directories under it (channels, archive days).

    Whatever their age: ours by name, and not locked, so no process is writing them.
    """
    removed = 0
    if not output_dir.is_dir():
        return removed
    for directory, subdirectories, names in os.walk(output_dir):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in names:
            leftover = Path(directory) / name
            if _TEMPORARY_NAME.fullmatch(name) and _remove_unless_locked(leftover):
                removed += 1
    return removed


def _remove_unless_locked(path: Path) -> bool:
    """Remove the regular file `path` unless a live process holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, a symlink, unreadable: not ours to judge
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file we locked (not renamed into place, nor replaced, meanwhile)?
        mine = os.fstat(fd)
        if stat.S_ISREG(mine.st_mode) and path.lstat().st_ino == mine.st_ino:
            path.unlink()
            return True
        return False
    except OSError:  # locked by its writer, or gone
        return False
    finally:
        os.close(fd)


_RECORD = ".published.json"  # hidden: never served (server.PublishedFiles skips dotfiles)
# The record less its archive files: what a publish reads of every publication to tell a
# settled one (`settled`), at every publish; the whole record lists hundreds of archive
# files per publication, which parsing at every publish cost an unchanged publish with ten
# channels more than twice one without. Written after the record, so never newer than it.
_HEAD = ".published-head.json"


def _version(output_dir: Path, name: str) -> list[int] | None:
    try:
        # os.stat on a string: a copy's check stats thousands of archive files every few
        # seconds, which pathlib's objects make three times as costly.
        info = os.stat(f"{output_dir}/{name}")  # noqa: PTH116
    except OSError:
        return None
    return [info.st_ino, info.st_mtime_ns, info.st_size]


def _record(output_dir: Path, name: str = _RECORD) -> dict[str, Any] | None:
    try:
        record = json.loads((output_dir / name).read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def published_here(output_dir: Path) -> tuple[str | None, dict[str, str]]:
    """What the last publish or copy recorded in `output_dir`: the publication's
    fingerprint, and the digest of each file still exactly as it wrote it (a file replaced,
    touched or gone is left out: it is copied again). Any doubt about the record says
    nothing is."""
    record = _record(output_dir)
    if record is None:
        return None, {}
    try:
        fingerprint, files = record["fingerprint"], record["files"]
        intact = {
            name: digest
            for name, (digest, *version) in files.items()
            if isinstance(digest, str) and _version(output_dir, name) == version
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, {}
    return (fingerprint if isinstance(fingerprint, str) else None), intact


def already_published(
    output_dir: Path,
    fingerprint: str,
    names: Iterable[str] | None = None,
    record: Mapping[str, Any] | None = None,
) -> bool:
    """Whether `output_dir` holds the publication `fingerprint` names, its files as written:
    it stats the files its record lists (only `names` of them, when given; each must be
    listed). `record`: the record, when the caller has just read it. Lets a publish or a
    copy skip the store when nothing changed. Any doubt (no record, a file replaced or
    missing, an unreadable record) says no."""
    record = _record(output_dir) if record is None else record
    try:
        if record is None or record["fingerprint"] != fingerprint:
            return False
        files = record["files"]
        wanted = files if names is None else {name: files[name] for name in names}
        return all(_version(output_dir, name) == version for name, (_, *version) in wanted.items())
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def remember_published(
    output_dir: Path,
    fingerprint: str,
    digests: Mapping[str, str],
    inputs: Mapping[str, Any] | None = None,
) -> None:
    """Record what `output_dir` now holds of publication `fingerprint`: each file's digest
    and version (inode, mtime, size), for `published_here` and `already_published`;
    `inputs`: what the publish knew of its input beyond the fingerprint (`settled.Inputs`),
    for `published_record`."""
    files = {}
    for name, digest in sorted(digests.items()):
        version = _version(output_dir, name)
        if version is not None:
            files[name] = [digest, *version]
    record = {"fingerprint": fingerprint, "files": files, **(inputs or {})}
    write_if_changed(output_dir / _RECORD, json.dumps(record, sort_keys=True).encode())
    head = {**record, "files": {name: v for name, v in files.items() if "/" not in name}}
    write_if_changed(output_dir / _HEAD, json.dumps(head, sort_keys=True).encode())


def published_record(output_dir: Path, *, whole: bool = False) -> dict[str, Any] | None:
    """The record of the last publish into `output_dir` (`remember_published`), if readable:
    by default its head (the files directly in `output_dir` only, no archive file)."""
    return _record(output_dir, _RECORD if whole else _HEAD)


def published_subdirectories(output_dir: Path) -> list[str]:
    """The directories right under `output_dir` that a publish wrote (a channel's: each holds
    its own record), as "<name>/", sorted."""
    try:
        with os.scandir(output_dir) as children:
            found = [
                f"{child.name}/"
                for child in children
                if not child.name.startswith(".")
                and child.is_dir(follow_symlinks=False)
                and Path(child.path, _RECORD).is_file()
            ]
    except OSError:
        return []
    return sorted(found)


def remove_published(directory: Path) -> list[str]:
    """Remove what a publish wrote into `directory` (a channel no longer published): the
    files its record lists that are still the very files written (inode, mtime and size as
    recorded), the record, then the directories left empty, `directory` included. Anything
    else stays: a file someone put or replaced there is not ours to delete. Returns the
    names removed."""
    record = _record(directory)
    files = record.get("files") if record is not None else None
    removed = []
    for name, entry in (files if isinstance(files, dict) else {}).items():
        path = directory / name
        try:
            info = path.lstat()
            if not path.resolve().is_relative_to(directory.resolve()):
                continue
            untouched = [info.st_ino, info.st_mtime_ns, info.st_size] == entry[1:]
            if stat.S_ISREG(info.st_mode) and untouched:
                path.unlink()
                removed.append(name)
                _remove_sibling(path, info.st_mtime_ns)
        except (OSError, TypeError, ValueError):  # gone already; an odd record entry
            continue
    for record_file in (_HEAD, _RECORD):
        with contextlib.suppress(OSError):
            (directory / record_file).unlink()
    _remove_empty_directories(directory)
    return removed


def _remove_sibling(path: Path, mtime_ns: int) -> None:
    """Remove the gzipped sibling written with the file `path` was (it has its mtime)."""
    sibling = path.with_name(path.name + GZIP_SUFFIX)
    with contextlib.suppress(OSError):
        info = sibling.lstat()
        if stat.S_ISREG(info.st_mode) and info.st_mtime_ns == mtime_ns:
            sibling.unlink()


def _remove_empty_directories(directory: Path) -> None:
    """`directory` and the directories under it that hold nothing, deepest first."""
    with contextlib.suppress(OSError):
        for inner in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if inner.is_dir() and not inner.is_symlink():
                with contextlib.suppress(OSError):
                    inner.rmdir()  # only if empty
        directory.rmdir()

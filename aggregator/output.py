"""Write rendered files into `output/` atomically, and only when their bytes change.

Write to a temporary file in the same directory, fsync, rename over the old one: a reader
(or a `kill -9`) never sees half a file, and an unchanged feed keeps its mtime and ETag.
A hidden record of the last publish's input lets an unchanged timeline skip rendering too.

A temporary file is flock()ed while it is written, so a process starting up can tell one
that a killed publish left behind (unlocked: removed, however fresh) from one another
process is writing right now (locked: kept). The kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

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


# A published file's name: relative, "/"-separated segments that are neither empty, hidden,
# nor "." or "..". Names come from the store: one naming a place outside output/ is refused.
_SAFE_NAME = re.compile(r"(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*/)*[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def published_path(output_dir: Path, name: str) -> Path:
    """Where the published file `name` lives under `output_dir`."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name.split("/"):
        raise PublishError(f"refusing to publish {name!r}: not a plain path under {output_dir}")
    return output_dir / name


def publish_files(output_dir: Path, files: Mapping[str, bytes]) -> dict[str, bool]:
    """Write each named file under `output_dir`; returns which ones changed. Each directory
    written to is fsynced once, after its files (a day's archive is one file per folder)."""
    written = {}
    directories = set()
    for name, data in files.items():
        path = published_path(output_dir, name)
        written[name] = write_if_changed(path, data, sync_directory=False)
        if written[name]:
            directories.add(path.parent)
    try:
        for directory in sorted(directories):
            fsync_directory(directory)
    except OSError as e:
        raise PublishError(f"cannot write {directory}: {e.strerror or e}") from e
    return written


def remove_published(output_dir: Path, name: str) -> None:
    """Remove a file no longer published, and the directories it leaves empty (an archive
    month, a year) up to `output_dir`."""
    path = published_path(output_dir, name)
    try:
        path.unlink(missing_ok=True)
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
    `output_dir` and the directories under it (archive days).

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


def _version(output_dir: Path, name: str) -> list[int] | None:
    try:
        info = (output_dir / name).stat()
    except OSError:
        return None
    return [info.st_ino, info.st_mtime_ns, info.st_size]


def published_here(output_dir: Path) -> tuple[str | None, dict[str, str]]:
    """What the last publish or copy recorded in `output_dir`: the snapshot's fingerprint,
    and the digest of each file still exactly as it wrote it (a file replaced, touched or
    gone is left out: it is copied again). Any doubt about the record says nothing is."""
    try:
        record = json.loads((output_dir / _RECORD).read_bytes())
        fingerprint, files = record["fingerprint"], record["files"]
        intact = {
            name: digest
            for name, (digest, *version) in files.items()
            if isinstance(digest, str) and _version(output_dir, name) == version
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, {}
    return (fingerprint if isinstance(fingerprint, str) else None), intact


def already_published(output_dir: Path, fingerprint: str) -> bool:
    """Whether `output_dir` holds the snapshot `fingerprint` names, every file as written.

    Lets a follower skip the store when nothing changed: it stats the files it recorded.
    """
    try:
        record = json.loads((output_dir / _RECORD).read_bytes())
        return bool(
            record["fingerprint"] == fingerprint
            and all(
                _version(output_dir, name) == version
                for name, (_, *version) in record["files"].items()
            )
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def remember_published(output_dir: Path, fingerprint: str, digests: Mapping[str, str]) -> None:
    """Record what `output_dir` now holds of snapshot `fingerprint`: each file's digest and
    version (inode, mtime, size), for `published_here` and `already_published`."""
    files = {}
    for name, digest in sorted(digests.items()):
        version = _version(output_dir, name)
        if version is not None:
            files[name] = [digest, *version]
    record = {"fingerprint": fingerprint, "files": files}
    write_if_changed(output_dir / _RECORD, json.dumps(record, sort_keys=True).encode())

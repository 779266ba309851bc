"""Write rendered files into `output/` atomically, and only when their bytes change.

Write to a temporary file in the same directory, fsync, rename over the old one: a reader
(or a `kill -9`) never sees half a file, and an unchanged feed keeps its mtime and ETag.
A hidden record of the last publish's input lets an unchanged timeline skip rendering too.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from aggregator.errors import PublishError


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` with `data` unless it already holds exactly that.

    Returns True when the file was written.
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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        _fsync_directory(path.parent)
    except OSError as e:
        raise PublishError(f"cannot write {path}: {e.strerror or e}") from e
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_files(output_dir: Path, files: Mapping[str, bytes]) -> dict[str, bool]:
    """Write each named file under `output_dir`; returns which ones changed."""
    return {name: write_if_changed(output_dir / name, data) for name, data in files.items()}


def remove_stale_temp_files(output_dir: Path, older_than: float = 300.0) -> int:
    """Remove temporary files a killed publish left behind (`.name.xxxx.tmp`).

    Only old ones: a fresh one may belong to another process publishing right now.
    """
    removed = 0
    if output_dir.is_dir():
        cutoff = time.time() - older_than
        for leftover in output_dir.glob(".*.tmp"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


_RECORD = ".published.json"  # hidden: never served (server.PublishedFiles skips dotfiles)


def _versions(output_dir: Path, names: Iterable[str]) -> dict[str, list[int]] | None:
    versions = {}
    for name in names:
        try:
            stat = (output_dir / name).stat()
        except OSError:
            return None
        versions[name] = [stat.st_ino, stat.st_mtime_ns, stat.st_size]
    return versions


def already_published(output_dir: Path, fingerprint: str, names: Iterable[str]) -> bool:
    """Whether the last publish rendered this very input and its files are still as written.

    Lets a publish of an unchanged timeline skip rendering altogether, not just the writes.
    Any doubt (no record, a file replaced or missing, an unreadable record) says no.
    """
    try:
        record = json.loads((output_dir / _RECORD).read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("fingerprint") == fingerprint
        and record.get("files") == _versions(output_dir, names)
    )


def remember_published(output_dir: Path, fingerprint: str, names: Iterable[str]) -> None:
    """Record what was just published, for `already_published`."""
    record = {"fingerprint": fingerprint, "files": _versions(output_dir, names)}
    write_if_changed(output_dir / _RECORD, json.dumps(record, sort_keys=True).encode())

"""Write rendered files into `output/` atomically, and only when their bytes change.

Write to a temporary file in the same directory, fsync, rename over the old one: a reader
(or a `kill -9`) never sees half a file, and an unchanged feed keeps its mtime and ETag.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
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

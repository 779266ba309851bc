"""Reading a file that must be a regular one: `feeds.toml`, an OPML list, a local source.

Opening a FIFO blocks until a writer comes, which may be never (every command hung; a
daemon's reload thread, and with it every later reload, for good; a local source, the event
loop itself), and a device may never end. The file is opened without blocking and checked
as opened, so one swapped in after a `stat` is refused all the same.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class NotARegularFile(OSError):
    """A FIFO, a device or a socket where a file was wanted."""

    def __init__(self) -> None:
        super().__init__(errno.EINVAL, "not a regular file (a FIFO, a device or a socket)")


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path`: `IsADirectoryError` for a directory,
    `NotARegularFile` for anything else that is no regular file, OSError as reading raises."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise NotARegularFile
        return f.read(limit)

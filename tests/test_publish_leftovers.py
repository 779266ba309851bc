"""Temporary files an interrupted publish left in `output/` are removed at start-up.

Shows: a fresh leftover (`.NAME.xxxxxxxx.tmp`, as `write_if_changed` names them) is gone
after `aggregator once` starts, whatever its age; other dotfiles stay; a temporary file
another process is writing right now (it holds the file's lock) stays.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from aggregator.output import remove_stale_temp_files, write_if_changed
from tests.conftest import run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import _items

LEFTOVERS = (".atom.xml.k3j_9xq2.tmp", ".feed.json.abcdefgh.tmp")
KEPT = (".published.json", ".gitkeep", ".notes.tmp", ".atom.xml.tmp")


def _populate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in (*LEFTOVERS, *KEPT):
        (out / name).write_bytes(b"partial")  # fresh: written just now


def test_leftovers_are_removed_whatever_their_age_and_other_dotfiles_kept(
    tmp_path: Path,
) -> None:
    _populate(tmp_path)
    assert remove_stale_temp_files(tmp_path) == len(LEFTOVERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(KEPT)


def test_a_temporary_file_being_written_is_kept(tmp_path: Path) -> None:
    """Another process publishing into the same directory holds its temporary file's lock."""
    busy = tmp_path / ".atom.xml.inuse123.tmp"
    busy.write_bytes(b"half")
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_stale_temp_files(tmp_path) == 0
        assert busy.exists()
    finally:
        os.close(fd)  # its writer died: the lock goes with it
    assert remove_stale_temp_files(tmp_path) == 1
    assert not busy.exists()


def test_write_if_changed_leaves_no_temporary_file(tmp_path: Path) -> None:
    assert write_if_changed(tmp_path / "atom.xml", b"<feed/>")
    assert [p.name for p in tmp_path.iterdir()] == ["atom.xml"]


@pytest.mark.slow
def test_aggregator_once_removes_fresh_leftovers_at_start(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 2)))
    out = tmp_path / "output"
    _populate(out)
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[publish]\nmax_age = "3650d"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a.xml")}"\n',
        encoding="utf-8",
    )
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert not names & set(LEFTOVERS)
    assert set(KEPT) <= names
    assert "atom.xml" in names

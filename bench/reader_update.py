"""One `reader` update of every feed, as its documentation recommends; run by bench/peers.

Runs inside bench/.peers (not the project's environment), so it imports nothing of ours.
Usage: python bench/reader_update.py URLS_FILE DB_FILE WORKERS
"""

from __future__ import annotations

import sys
from pathlib import Path

from reader import make_reader  # type: ignore[import-not-found,unused-ignore]


def main() -> None:
    urls_file, db, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reader = make_reader(db, search_enabled=False)
    for url in Path(urls_file).read_text(encoding="utf-8").split():
        reader.add_feed(url, exist_ok=True)
    # scheduled=False: update every feed now, like `aggregator once --force` would.
    reader.update_feeds(scheduled=False, workers=workers)
    print(f"{reader.get_entry_counts().total} entries stored")


if __name__ == "__main__":
    main()

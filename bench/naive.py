"""The yardstick: a hand-written httpx + feedparser + feedgen script, as people write them.

No conditional GET and no store: every run fetches and parses everything, merges newest
first and writes one RSS file. Usage: python -m bench.naive URLS_FILE OUTPUT_FILE
"""

from __future__ import annotations

import asyncio
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import httpx
from feedgen.feed import FeedGenerator


async def fetch_all(urls: list[str]) -> list[bytes]:
    limit = asyncio.Semaphore(10)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(url: str) -> bytes:
            async with limit:
                return (await client.get(url)).content

        return await asyncio.gather(*(one(u) for u in urls))


def main() -> None:
    urls = Path(sys.argv[1]).read_text().split()
    bodies = asyncio.run(fetch_all(urls))
    entries = []
    for body in bodies:
        for e in feedparser.parse(io.BytesIO(body)).entries:
            when = e.get("published_parsed") or e.get("updated_parsed")
            date = datetime(*when[:6]).replace(tzinfo=UTC) if when else datetime.now(UTC)
            entries.append((date, e))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    fg = FeedGenerator()
    fg.title("naive")
    fg.link(href="http://127.0.0.1/")
    fg.description("naive")
    for date, e in entries[:200]:
        fe = fg.add_entry(order="append")
        fe.id(e.get("id") or e.get("link"))
        fe.title(e.get("title", ""))
        fe.link(href=e.get("link"))
        fe.published(date)
        fe.description(e.get("summary", ""))
    fg.rss_file(sys.argv[2])
    print(len(entries))


if __name__ == "__main__":
    main()

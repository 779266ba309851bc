"""Which published files are WebSub topics, their URLs, and the `Link` header they carry. Pure.

A topic is a feed we publish, `atom.xml`, `rss.xml` or `feed.json`, at the root of output/
or in a folder of it (a channel's `<name>/atom.xml`); its URL is `<base_url><name>` as the
feed's own `rel="self"` publishes it: a URI (`urls.as_uri`), which an IRI `base_url`
(`https://समाचार.example/`) is not. The topics are a function of the published file names,
so a feed is a topic once it is published, and only then.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import PurePosixPath

from aggregator.render import ATOM_FILE, JSON_FEED_FILE, RSS_FILE
from aggregator.urls import as_uri

FEED_FILES = (ATOM_FILE, RSS_FILE, JSON_FEED_FILE)


def is_feed_file(name: str) -> bool:
    """Whether the published file `name` (relative to output/) is a feed, so a topic."""
    path = PurePosixPath(name)
    return (
        path.name in FEED_FILES
        and not path.is_absolute()
        and all(part not in ("", ".", "..") and not part.startswith(".") for part in path.parts)
        and "\\" not in name
    )


@functools.lru_cache(maxsize=16)
def _bases(base_url: str) -> tuple[str, ...]:
    """`base_url` as the feeds publish it, then as written if that differs (an IRI, which
    a subscriber may have copied from the configuration). Kept: IDNA costs ~0.2 ms a host,
    and every request for a feed asks."""
    return tuple(dict.fromkeys((as_uri(base_url), base_url)))


def topic_url(base_url: str, name: str) -> str:
    """The topic URL of the published feed `name`: its `rel="self"`, a URI."""
    return _bases(base_url)[0] + name


def topic_file(base_url: str, topic: str) -> str | None:
    """The published feed a topic URL names, or None when it names none of ours; the
    topic may name `base_url` as written (an IRI) or as published."""
    for base in _bases(base_url):
        if topic.startswith(base):
            name = topic[len(base) :]
            if any(c in name for c in "?#%") or not is_feed_file(name):
                return None
            return name
    return None


def changed_topics(base_url: str, names: Iterable[str]) -> tuple[str, ...]:
    """The topics among the files a publish rewrote."""
    return tuple(topic_url(base_url, n) for n in names if is_feed_file(n))


def link_header(hubs: Iterable[str], self_url: str) -> str:
    """`Link: <hub>; rel="hub", <topic>; rel="self"` (WebSub §4 and §7), every URL a URI:
    a header is ASCII (an IRI in it failed every request for the feed with a 500)."""
    links = [f'<{_uri(hub)}>; rel="hub"' for hub in hubs]
    return ", ".join([*links, f'<{_uri(self_url)}>; rel="self"'])


_uri = functools.lru_cache(maxsize=256)(as_uri)  # a site's few hubs and feeds, every request

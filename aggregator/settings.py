"""The configuration as frozen values: what every stage takes, never how it was read.

`config.py` builds these from `feeds.toml` (and the environment); nothing here reads a file
or the environment, so renderers, the timeline and the stores can take settings without
depending on the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from aggregator import USER_AGENT
from aggregator.filters import Filters


@dataclass(frozen=True)
class SiteSettings:
    """`[aggregator]`: the combined feed's own metadata."""

    title: str
    link: str
    description: str
    language: str | None
    timezone: str
    base_url: str


# Defaults of `[poll] parse_timeout`, `[server] request_timeout` and `max_connections`,
# for the settings types and the loader alike.
DEFAULT_PARSE_TIMEOUT = timedelta(seconds=20)
DEFAULT_REQUEST_TIMEOUT = timedelta(seconds=10)
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_SUMMARY_INTERVAL = timedelta(hours=1)  # `[server] summary_interval`
# Default `[publish] teaser_length`, in clusters: one line of a briefs column (the seed's ~110).
DEFAULT_TEASER_LENGTH = 110


@dataclass(frozen=True)
class PollSettings:
    """`[poll]`: defaults for fetching every source."""

    interval: timedelta
    concurrency: int
    timeout: timedelta
    per_host: int = 2
    max_bytes: int = 10 * 1024 * 1024
    user_agent: str = USER_AGENT
    lease: timedelta = timedelta(seconds=120)  # see default_lease
    parse_timeout: timedelta = DEFAULT_PARSE_TIMEOUT  # a parse over it fails, and backs off
    partial_parse: bool = True  # parse only the items that changed since the last parse


def default_lease(timeout: timedelta) -> timedelta:
    """How long a claim on a source lasts unless its poll ends first: 2 × timeout + 60 s.

    A daemon claims at most twice as many sources as it polls at once, so a claimed source
    waits for at most one other poll before its own (a fetch slot is held through parse and
    store): two fetches (one timeout each), and the minute covers the two parses and stores.
    A lease that runs out hands the source to another daemon, so a daemon killed mid-poll
    delays its sources by at most this long.
    """
    return timeout * 2 + timedelta(seconds=60)


@dataclass(frozen=True)
class PublishSettings:
    """`[publish]`: what goes into `output/`."""

    output_dir: Path
    max_items: int
    max_age: timedelta
    teaser_length: int
    filters: Filters = field(default_factory=Filters)


STORE_URL_VARIABLE = "AGGREGATOR_STORE_URL"


@dataclass(frozen=True)
class StoreSettings:
    """`[store]`: the SQLite file (`path`), or a shared PostgreSQL database (`url`).

    `url` comes from `AGGREGATOR_STORE_URL` when that is set, else from `[store] url`: the
    environment wins so that a password never has to be written into feeds.toml.
    """

    path: Path
    keep: timedelta = timedelta(days=90)
    url: str | None = None

    @property
    def target(self) -> str | Path:
        """What `aggregator.store.open_store` opens: the URL if any, else the file."""
        return self.url if self.url is not None else self.path


@dataclass(frozen=True)
class ServerSettings:
    """`[server]`: where the daemon serves `output/`, and how it bounds its clients."""

    host: str
    port: int
    request_timeout: timedelta = DEFAULT_REQUEST_TIMEOUT  # to send one whole request
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open at once; beyond, answered 503
    summary_interval: timedelta = DEFAULT_SUMMARY_INTERVAL  # the daemon's "what I did" line


@dataclass(frozen=True)
class SourceConfig:
    """One `[[feeds]]` entry, with the global defaults already applied."""

    name: str
    url: str
    title: str | None
    interval: timedelta
    timezone: str
    tags: tuple[str, ...]
    filters: Filters = field(default_factory=Filters)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    path: Path
    site: SiteSettings
    poll: PollSettings
    publish: PublishSettings
    store: StoreSettings
    server: ServerSettings
    sources: tuple[SourceConfig, ...]


def server_url(host: str, port: int) -> str:
    """The URL a server listening on `host:port` answers at (an IPv6 host in brackets);
    also the default `base_url`."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@dataclass(frozen=True)
class Listen:
    """`--host`/`--port` of `run` and `serve`: where to listen instead of `[server]`'s.

    Applied to every configuration loaded (at start and at each reload), so a reload never
    takes the daemon back to the file's address. The published `base_url` and `link` follow
    when they are the defaults `[server]` made (they name where the feeds are served).
    """

    host: str | None = None
    port: int | None = None

    def applied(self, config: Config) -> Config:
        old = config.server
        server = replace(
            old,
            host=old.host if self.host is None else self.host,
            port=old.port if self.port is None else self.port,
        )
        if server == old:
            return config
        default, new = server_url(old.host, old.port), server_url(server.host, server.port)
        site = config.site
        site = replace(
            site,
            base_url=new if site.base_url == default else site.base_url,
            link=new if site.link == default else site.link,
        )
        return replace(config, server=server, site=site)

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
    # The WebSub hubs every published feed advertises (`rel="hub"`), from `[websub]`: empty
    # without a public address (`base_url` set in feeds.toml), since a hub must fetch us.
    hubs: tuple[str, ...] = ()


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
class Theme:
    """`[publish] templates`: the operator's templates, read once when feeds.toml is loaded.

    A file here replaces the shipped template of the same name; any other name falls back
    to the shipped one. The sources are held as values, not re-read at each publish, so a
    template is used only once it has been validated (at load or reload), a publish renders
    what was validated, and its text is part of what a publish's fingerprint covers.
    """

    directory: str = ""  # as the operator wrote it, to name files in messages; "": none
    files: tuple[tuple[str, str], ...] = ()  # (file name, source text), by name
    path: Path | None = None  # the directory itself, for the daemon to watch

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.files)

    def shown(self, name: str) -> str:
        """How a file of this theme is named in messages: `templates/index.html.j2`."""
        return f"{self.directory}/{name}" if self.directory else name


@dataclass(frozen=True)
class PublishSettings:
    """`[publish]`: what goes into `output/`."""

    output_dir: Path
    max_items: int
    max_age: timedelta
    teaser_length: int
    filters: Filters = field(default_factory=Filters)
    theme: Theme = field(default_factory=Theme)  # the shipped templates alone by default


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


DEFAULT_WEBSUB_POLL_INTERVAL = timedelta(hours=6)  # `[websub] poll_interval`
DEFAULT_SUBSCRIPTION_LEASE = timedelta(days=10)  # `[websub] subscription_lease`: asked of hubs
# `[websub]` defaults of the built-in hub: a lease (default, least, most).
DEFAULT_HUB_LEASE = timedelta(days=10)
MIN_HUB_LEASE = timedelta(hours=1)
MAX_HUB_LEASE = timedelta(days=30)
HUB_PATH = "websub"  # the built-in hub's path under base_url


@dataclass(frozen=True)
class WebsubSettings:
    """`[websub]`: the subscriber's part (hubs of our sources push to us) and the built-in
    hub's (we are the hub of the feeds we publish), beside external hubs.

    Subscriber: `callback_base` is the public URL that callback paths (one random token
    each) are appended to: `[websub] callback_url`, else `[aggregator] base_url` +
    `websub/callback/` when `base_url` was written in feeds.toml, else None: no public
    address, polling only.

    Hub: `hub_url` is the built-in hub's public address (`<base_url>websub`), None when it
    does not run: no public `base_url`, or `builtin_hub = false`. Subscribers' callbacks get
    one connection each at a time, within `delivery_timeout`, `delivery_concurrency` in all.
    """

    # the subscriber
    callback_base: str | None = None
    subscribe: bool = True  # `false`: never subscribe, even with a public address
    poll_interval: timedelta = DEFAULT_WEBSUB_POLL_INTERVAL  # the safety net while pushed to
    subscription_lease: timedelta = DEFAULT_SUBSCRIPTION_LEASE  # hub.lease_seconds asked for
    allow_sha1: bool = False  # accept `X-Hub-Signature: sha1=…` (weak; some old hubs)
    allow_private_hubs: bool = False  # hubs on loopback/private addresses, for any source
    # the built-in hub
    hub_url: str | None = None
    hubs: tuple[str, ...] = ()  # external hubs: advertised beside (or instead of) ours, pinged
    allow_private_callbacks: bool = False  # loopback, private, link-local... callbacks
    default_lease: timedelta = DEFAULT_HUB_LEASE  # when a subscriber asks for none
    min_lease: timedelta = MIN_HUB_LEASE
    max_lease: timedelta = MAX_HUB_LEASE
    max_subscribers: int = 1000  # per topic
    requests_per_minute: int = 60  # subscription requests per topic (per daemon)
    delivery_timeout: timedelta = timedelta(seconds=10)  # one verification or delivery, whole
    delivery_concurrency: int = 8  # verifications and deliveries at once
    retry_delay: timedelta = timedelta(minutes=1)  # after a failed delivery, doubling
    max_failures: int = 8  # failed deliveries in a row that drop a subscriber

    @property
    def subscribing(self) -> bool:
        """Whether this daemon subscribes to hubs at all."""
        return self.subscribe and self.callback_base is not None

    @property
    def advertised(self) -> tuple[str, ...]:
        """Every hub the feeds name: ours first, then the external ones."""
        return (self.hub_url, *self.hubs) if self.hub_url else self.hubs


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
class Channel:
    """One `[[channels]]` entry: a selection of the sources published like the root, under
    `output/<name>/`, with the root's settings already applied where it sets none.

    `sources` are the names it reads, resolved from its `tags` (any of) and `sources`, in
    `[[feeds]]` order; all of them when it selects by patterns alone.
    """

    name: str  # a URL path segment, checked by the loader
    title: str
    description: str
    sources: tuple[str, ...]
    language: str | None
    timezone: str
    max_items: int
    filters: Filters = field(default_factory=Filters)  # on top of [publish]'s and the sources'


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
    websub: WebsubSettings = field(default_factory=WebsubSettings)
    channels: tuple[Channel, ...] = ()
    # One line each ("feeds.toml:40: channels[1].tags: ..."): worth saying, not refusing.
    warnings: tuple[str, ...] = field(default=(), compare=False)


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

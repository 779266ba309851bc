"""What gets published, as values: the root and each channel is one `Publication`.

A publication is everything a publish needs to know about one published set of files,
whatever it renders: the directory under `output/` ("" for the root, "<name>/" for a
channel), its `SiteSettings` (a channel's title, description, language and time zone, and a
`base_url` of its own so that its self links and feed ids are its own), the
`timeline.Selection` that cuts its timeline, and the sources it reads. `publish.py` builds one
timeline per publication and renders or skips each on its own fingerprint; anything else that
publishes per channel (archives, WebSub topics) takes the same values.

Pure: a function of the configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aggregator.filters import Filters
from aggregator.settings import Channel, Config, SiteSettings, Theme
from aggregator.timeline import NO_FILTERS, Selection
from aggregator.types import ChannelLink

ROOT = ""  # the root publication's directory: output/ itself


@dataclass(frozen=True)
class Publication:
    """One published set of files: the root, or a channel."""

    directory: str  # relative to output/: "" for the root, "<channel name>/"
    site: SiteSettings
    selection: Selection
    sources: tuple[str, ...]  # the names of the sources it reads, in [[feeds]] order
    # How `sources.opml` groups them: each source's tags, by name.
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    channels: tuple[ChannelLink, ...] = ()  # listed on its page (the root lists every channel)
    theme: Theme = field(default_factory=Theme)  # `[publish] templates`: its page's look

    @property
    def channel(self) -> str | None:
        """The channel's name; None for the root."""
        return self.directory.rstrip("/") or None

    def path(self, name: str) -> str:
        """A file's path relative to output/ (`news/atom.xml`)."""
        return self.directory + name


def selection_of(config: Config, channel: Channel | None = None) -> Selection:
    """What a timeline selects, from `[publish]`, its sources' filters and the channel's."""
    return Selection(
        max_items=config.publish.max_items if channel is None else channel.max_items,
        max_age=config.publish.max_age,
        filters=config.publish.filters,
        source_filters=_source_filters(config, None if channel is None else channel.sources),
        teaser_length=config.publish.teaser_length,
        channel_filters=NO_FILTERS if channel is None else channel.filters,
    )


def _source_filters(config: Config, names: tuple[str, ...] | None) -> dict[str, Filters]:
    """The filters of the sources `names` (all: None), by name; only of those with some (a
    missing one is no filter), so that the selection's repr, in the publication's `Inputs`,
    stays short and does not change with the filters of sources it does not take."""
    wanted = None if names is None else set(names)
    return {
        s.name: s.filters
        for s in config.sources
        if (s.filters.include or s.filters.exclude) and (wanted is None or s.name in wanted)
    }


def channel_site(site: SiteSettings, channel: Channel) -> SiteSettings:
    """A channel's own feed metadata: its words, language and zone, under its own address.

    Everything else (hubs, whatever `SiteSettings` gains) is the root's.
    """
    base_url = channel_url(site, channel.name)
    return replace(
        site,
        title=channel.title,
        link=base_url,
        description=channel.description,
        language=channel.language,
        timezone=channel.timezone,
        base_url=base_url,
    )


def channel_url(site: SiteSettings, name: str) -> str:
    """Where a channel is served: `<base_url><name>/`."""
    return f"{site.base_url}{name}/"


def channel_links(config: Config) -> tuple[ChannelLink, ...]:
    """Every channel, as the root page lists it."""
    return tuple(
        ChannelLink(c.name, c.title, c.description, channel_url(config.site, c.name))
        for c in config.channels
    )


def publications_of(config: Config) -> tuple[Publication, ...]:
    """The root, then each channel in `[[channels]]` order."""
    tags = {s.name: s.tags for s in config.sources}
    root = Publication(
        directory=ROOT,
        site=config.site,
        selection=selection_of(config),
        sources=tuple(s.name for s in config.sources),
        tags=tags,
        channels=channel_links(config),
        theme=config.publish.theme,
    )
    return (
        root,
        *(
            Publication(
                directory=f"{c.name}/",
                site=channel_site(config.site, c),
                selection=selection_of(config, c),
                sources=c.sources,
                tags={name: tags[name] for name in c.sources},
                theme=config.publish.theme,
            )
            for c in config.channels
        ),
    )

"""`[websub]` in feeds.toml: the hub runs and is advertised only with a public address;
mistakes are one line naming the key and its line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.settings import WebsubSettings
from tests.conftest import run_cli

FEED = '[[feeds]]\nurl = "https://example.org/feed.xml"\n'
PUBLIC = '[aggregator]\nbase_url = "https://digest.example.org"\n'


def _load(tmp_path: Path, text: str):
    path = tmp_path / "feeds.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, "feeds.toml")


def test_the_hub_runs_only_with_a_public_address(tmp_path: Path) -> None:
    default = _load(tmp_path, FEED)
    assert default.websub == WebsubSettings() and default.site.hubs == ()
    public = _load(tmp_path, PUBLIC + FEED)
    assert public.websub.hub_url == "https://digest.example.org/websub"
    assert public.site.hubs == ("https://digest.example.org/websub",)


def test_every_websub_key_is_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        PUBLIC
        + """
[websub]
builtin_hub = true
hubs = ["https://hub.example/", "https://other.example/hub"]
allow_private_callbacks = true
default_lease = "2d"
min_lease = "1m"
max_lease = "7d"
max_subscribers = 5
requests_per_minute = 7
delivery_timeout = "3s"
delivery_concurrency = 2
retry_delay = "5s"
max_failures = 4
"""
        + FEED,
    )
    hubs = ("https://hub.example/", "https://other.example/hub")
    assert config.websub == WebsubSettings(
        callback_base="https://digest.example.org/websub/callback/",  # the subscriber's
        hub_url="https://digest.example.org/websub",
        hubs=hubs,
        allow_private_callbacks=True,
        default_lease=timedelta(days=2),
        min_lease=timedelta(minutes=1),
        max_lease=timedelta(days=7),
        max_subscribers=5,
        requests_per_minute=7,
        delivery_timeout=timedelta(seconds=3),
        delivery_concurrency=2,
        retry_delay=timedelta(seconds=5),
        max_failures=4,
    )
    assert config.site.hubs == ("https://digest.example.org/websub", *hubs)


def test_external_hubs_instead_of_ours(tmp_path: Path) -> None:
    config = _load(
        tmp_path, PUBLIC + '[websub]\nbuiltin_hub = false\nhubs = ["https://hub.example/"]\n' + FEED
    )
    assert config.websub.hub_url is None
    assert config.site.hubs == ("https://hub.example/",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[websub]\nhubs = ["https://hub.example/"]\n' + FEED,
            "feeds.toml:2: websub.hubs: a hub fetches the feeds from their public address: "
            "set [aggregator] base_url",
        ),
        (
            PUBLIC + '[websub]\nhubs = ["ftp://hub.example/"]\n' + FEED,
            'feeds.toml:4: websub.hubs: item 0: expected an http or https URL like "https://'
            'example.org/", got "ftp://hub.example/"',
        ),
        (
            PUBLIC + '[websub]\nhubs = ["https://h.example/", "https://h.example/"]\n' + FEED,
            'feeds.toml:4: websub.hubs: item 1: "https://h.example/" is named twice',
        ),
        (
            PUBLIC + '[websub]\nmin_lease = "2d"\nmax_lease = "1d"\n' + FEED,
            "feeds.toml:4: websub.min_lease: must not be longer than max_lease",
        ),
        (
            PUBLIC + '[websub]\ndefault_lease = "60d"\n' + FEED,
            "feeds.toml:4: websub.default_lease: must lie between min_lease and max_lease",
        ),
        (
            PUBLIC + '[websub]\nmin_lease = "10ms"\n' + FEED,
            'feeds.toml:4: websub.min_lease: expected at least 1s, got "10ms"',
        ),
        (
            PUBLIC + '[websub]\nallow_private_callbacks = "yes"\n' + FEED,
            'feeds.toml:4: websub.allow_private_callbacks: expected true or false, got "yes"',
        ),
        (
            PUBLIC + "[websub]\nmax_subscriber = 5\n" + FEED,
            'feeds.toml:4: websub.max_subscriber: unknown key; did you mean "max_subscribers"?',
        ),
    ],
)
def test_websub_mistakes_name_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value) == message


@pytest.mark.slow
def test_check_reports_a_websub_mistake_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(PUBLIC + "[websub]\ndelivery_concurrency = 0\n" + FEED, encoding="utf-8")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {path}:4: websub.delivery_concurrency: expected a number of at least 1, got 0"
    )

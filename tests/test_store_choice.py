"""Choosing the store: `[store] path` (SQLite), `[store] url` or AGGREGATOR_STORE_URL
(PostgreSQL, the environment winning), and the CLI working the same on both."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.poll import EVERY_SCHEDULE, sync_sources
from aggregator.store import open_store
from tests.conftest import run_cli
from tests.feedfactory import rss2
from tests.test_daemon import NOW, _items

FEED = '[[feeds]]\nname = "a"\nurl = "a.xml"\n'


def _config(tmp_path: Path, store: str = "") -> Path:
    (tmp_path / "a.xml").write_bytes(rss2("A", "https://a.example.org/", _items("a", 3)))
    config = tmp_path / "feeds.toml"
    config.write_text(f'[publish]\nmax_age = "3650d"\n{store}{FEED}', encoding="utf-8")
    return config


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path, '[store]\nurl = "postgresql://agg@db.example/from_file"\n')
    assert load_config(config, environ={}).store.target == "postgresql://agg@db.example/from_file"
    env = {"AGGREGATOR_STORE_URL": "postgres://agg:pw@db.example/from_env"}
    assert load_config(config, environ=env).store.target == "postgres://agg:pw@db.example/from_env"


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    settings = load_config(_config(tmp_path), environ={}).store
    assert settings.url is None
    assert settings.target == tmp_path / "state" / "aggregator.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that points the CLI at each backend (PostgreSQL via the variable)."""
    if request.param == "sqlite":
        return {}
    return {"AGGREGATOR_STORE_URL": request.getfixturevalue("pg_url")}


def test_once_and_status_on_either_store(tmp_path: Path, store_env: dict[str, str]) -> None:
    config = _config(tmp_path)
    once = run_cli("once", "--config", str(config), cwd=tmp_path, env=store_env)
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines()[0] == "a  3 new"
    status = run_cli("status", "--json", "--config", str(config), cwd=tmp_path, env=store_env)
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert (row["name"], row["items"], row["outcome"]) == ("a", 3, "updated")
    # The SQLite file exists only when it is the store.
    assert (tmp_path / "state" / "aggregator.db").exists() == (not store_env)


def test_once_leaves_a_source_another_daemon_is_polling(
    tmp_path: Path, store_env: dict[str, str]
) -> None:
    config = _config(tmp_path)
    (tmp_path / "b.xml").write_bytes(rss2("B", "https://b.example.org/", _items("b", 2)))
    config.write_text(config.read_text() + '[[feeds]]\nname = "b"\nurl = "b.xml"\n')
    settings = load_config(config, environ=store_env)
    store = open_store(settings.store.target)
    try:
        sync_sources(store, settings.sources, NOW)
        assert store.claim_due(["a"], NOW, "daemon-elsewhere", timedelta(hours=1)) == ["a"]
        once = run_cli("once", "--config", str(config), cwd=tmp_path, env=store_env)
        assert once.returncode == 0, once.stderr
        assert once.stdout.splitlines()[:2] == [
            "a  skipped: another daemon is polling it right now",
            "b  2 new",
        ]
        # `once` ended its own claim with the poll; the other daemon's claim stands.
        later = datetime.now(UTC)
        anyone = store.claim_due(["a", "b"], later, "x", timedelta(hours=1), due_by=EVERY_SCHEDULE)
        assert anyone == ["b"]
    finally:
        store.close()


@pytest.mark.parametrize("command", ["status", "once", "run"])
def test_an_unreachable_database_is_named_without_its_password(
    tmp_path: Path, command: str
) -> None:
    config = _config(tmp_path)
    url = f"postgresql://agg:s3cret@/aggdb?host={tmp_path}/nowhere&connect_timeout=2"
    result = run_cli(
        command, "--config", str(config), cwd=tmp_path, env={"AGGREGATOR_STORE_URL": url}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot open the store at "), result.stderr
    assert f"host={tmp_path}/nowhere" in result.stderr and "dbname=aggdb" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr

"""The throwaway PostgreSQL server the store's PostgreSQL tests run against."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.pgserver import PgServer, PgUnavailable, find_bindir


def test_server_answers_on_its_unix_socket_only(pg_server: PgServer) -> None:
    assert pg_server.psql("SELECT 1") == "1"
    assert pg_server.psql("SHOW listen_addresses") == ""
    assert pg_server.psql("SHOW server_encoding") == "UTF8"
    assert (pg_server.socket_dir / ".s.PGSQL.5432").exists()


def test_each_test_gets_its_own_empty_schema(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        (schema,) = conn.execute("SELECT current_schema()").fetchone() or (None,)
    other = pg_server.new_schema()
    try:
        with psycopg.connect(pg_server.url(schema=other)) as conn:
            assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
            assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.t",)).fetchone() != (None,)
    finally:
        pg_server.drop_schema(other)
    assert pg_server.psql(f"SELECT 1 FROM pg_namespace WHERE nspname = '{other}'") == ""


def test_missing_binaries_are_named_in_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGGREGATOR_PG_BINDIR", str(tmp_path))
    with pytest.raises(PgUnavailable, match=f"no PostgreSQL server binaries .* in {tmp_path}"):
        find_bindir()


def test_psycopg_connects_with_the_url_and_the_conninfo(pg_server: PgServer) -> None:
    for target in (pg_server.url(), pg_server.conninfo()):
        with psycopg.connect(target) as conn:
            row = conn.execute("SELECT current_database(), current_setting('TimeZone')").fetchone()
            assert row == ("postgres", "UTC")


def test_the_default_collation_is_a_languages_where_icu_is_there(pg_server: PgServer) -> None:
    provider = pg_server.psql(
        "SELECT datlocprovider FROM pg_database WHERE datname = current_database()"
    )
    if provider == "i":
        assert pg_server.psql("SELECT 'a' < 'B'") == "t"
    else:
        assert pg_server.psql("SELECT 'a' < 'B'") == "f"

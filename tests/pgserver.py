"""A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, then `pg_ctl`.

The server listens only on a Unix socket inside that directory (`listen_addresses=''`), so it
needs no free port and nothing outside this machine can reach it. It trusts every local
connection and runs without fsync: the data is thrown away at the end of the session.

`initdb` and `postgres` refuse to run as root; as root the server runs as the `postgres`
system user (the one Debian's package creates), owning the temporary directory. Anything
that prevents a start is raised as `PgUnavailable` with the exact reason, which the pytest
fixture turns into a skip message.

Where the binaries are: `AGGREGATOR_PG_BINDIR` if set, else `initdb` on PATH, else the
newest `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

SERVER_USER = "postgres"  # the role initdb creates (`-U`), also the system user as root
_SOCKET_PORT = 5432  # only names the socket file; the directory is ours alone


class PgUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


def find_bindir() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `postgres`."""
    candidates: list[Path] = []
    if configured := os.environ.get("AGGREGATOR_PG_BINDIR"):
        candidates.append(Path(configured))
    elif on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    else:
        debian = Path("/usr/lib/postgresql")
        versions = sorted(
            (p for p in debian.glob("*/bin") if p.parent.name.isdigit()),
            key=lambda p: int(p.parent.name),
            reverse=True,
        )
        candidates.extend(versions)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    where = ", ".join(str(c) for c in candidates) or "PATH and /usr/lib/postgresql/*/bin"
    raise PgUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {where}; "
        "install Debian's `postgresql` package or set AGGREGATOR_PG_BINDIR"
    )


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server: None for ourselves, or the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PgUnavailable(
            f"running as root, and PostgreSQL refuses root, but there is no {SERVER_USER!r} "
            "system user to run it as (Debian's `postgresql` package creates one)"
        ) from None


@dataclass
class PgServer:
    """Start with `start()`, stop with `stop()`; `conninfo(dbname)` for psycopg or libpq."""

    bindir: Path
    root: Path = field(init=False)
    _account: pwd.struct_passwd | None = field(init=False, default=None)
    _schemas: itertools.count[int] = field(init=False, default_factory=itertools.count)

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={_SOCKET_PORT} user={SERVER_USER} dbname={dbname}"

    def url(self, dbname: str = "postgres", *, schema: str | None = None) -> str:
        """The same as a `postgresql://` URL, the form operators write; with `schema`, that
        schema comes first in the search path, so tables are made and found there."""
        query = {"host": str(self.socket_dir), "port": str(_SOCKET_PORT)}
        if schema is not None:
            query["options"] = f"-csearch_path={schema}"
        return f"postgresql://{SERVER_USER}@/{dbname}?{urlencode(query)}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        account = self._account
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )

    def start(self) -> PgServer:
        self._account = _server_account()
        self.root = Path(tempfile.mkdtemp(prefix="aggregator-pg-"))
        try:
            if self._account is not None:
                os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            self._initdb()
            self._pg_ctl_start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def _initdb(self) -> None:
        """A cluster whose default collation is a language's (ICU "en-US", where "a" < "B"),
        as most real ones are: so tests show that the store does not depend on it. Where
        this PostgreSQL has no ICU, the plain C locale."""
        common = (
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        done = self._run(
            *common, "--locale", "C.UTF-8", "--locale-provider", "icu", "--icu-locale", "en-US"
        )
        if done.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            done = self._run(*common, "--no-locale")
        if done.returncode != 0:
            raise PgUnavailable(f"initdb failed ({done.returncode}): {_tail(done)}")

    def _pg_ctl_start(self) -> None:
        options = " ".join(
            (
                "-c listen_addresses=''",
                f"-k {self.socket_dir}",
                f"-p {_SOCKET_PORT}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
                "-c timezone=UTC",
            )
        )
        done = self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "--wait",
            "--timeout",
            "60",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.root / "server.log"),
            "--options",
            options,
            timeout=90,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else _tail(done)
            raise PgUnavailable(f"pg_ctl start failed ({done.returncode}): {detail}")

    def new_schema(self) -> str:
        """Create an empty schema in the `postgres` database and return its name.

        One per test keeps tests apart, and costs a tenth of a database each.
        """
        name = f"test_{next(self._schemas)}"
        self.psql(f"CREATE SCHEMA {name}")
        return name

    def drop_schema(self, name: str) -> None:
        self.psql(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run one statement with the bundled `psql` and return its unaligned output."""
        done = self._run(
            str(self.bindir / "psql"),
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set",
            "ON_ERROR_STOP=1",
            "--dbname",
            self.conninfo(dbname),
            "--command",
            sql,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {_tail(done)}")
        return done.stdout.strip()

    def crash(self) -> None:
        """Stop at once, as a crash would (no checkpoint, clients cut off); the data stays,
        for `start_again`."""
        done = self._run(
            str(self.bindir / "pg_ctl"), "stop", "--pgdata", str(self.data_dir),
            "--mode", "immediate", "--wait",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {_tail(done)}")

    def start_again(self) -> None:
        """Start the server `crash` stopped, on the same data and socket."""
        self._pg_ctl_start()

    def stop(self) -> None:
        """Stop at once (the data is thrown away) and remove the directory."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "--pgdata",
                    str(self.data_dir),
                    "--mode",
                    "immediate",
                    "--wait",
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stderr or done.stdout or "").strip()
    return text[-2000:] or "(no output)"


def start_server() -> PgServer:
    """Find the binaries and start a server, or raise PgUnavailable saying why not."""
    return PgServer(find_bindir()).start()

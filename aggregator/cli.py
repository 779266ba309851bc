"""The `aggregator` command: parses arguments, wires the parts, reports to humans.

Exit status: 0 when the command did its job (a cycle with failed sources still completed),
2 for a configuration error (one line per problem on stderr, never a traceback).
Each command imports the parts it uses: `once` starts without loading the web server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from aggregator import __version__
from aggregator.announce import start_line, start_log
from aggregator.config import load_config
from aggregator.cycle import CycleReport, run_cycle
from aggregator.errors import AggregatorError, ConfigError
from aggregator.heap import freeze_startup
from aggregator.poll import SourceReport
from aggregator.regular_file import read_regular_file
from aggregator.settings import Config, Listen, PollSettings
from aggregator.shown import one_line, terminal_safe
from aggregator.store import StoreAPI, open_store
from aggregator.store.records import SourceState, Subscription
from aggregator.urls import redact_url, redact_urls

if TYPE_CHECKING:  # rich is loaded by the commands that draw (40 ms): not by `run`
    from rich.console import Console
    from rich.table import Table

CONFIG_ERROR = 2
FAILURE = 1

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("feeds.toml"),
    show_default=True,
    help="The feeds.toml to read.",
)


def _load(config_path: Path) -> Config:
    """Load the configuration or exit 2 with one line per problem; its warnings on stderr."""
    try:
        config = load_config(config_path, display_name=str(config_path))
    except ConfigError as e:
        _config_problems(e)
    for warning in config.warnings:
        click.echo(redact_urls(f"warning: {warning}"), err=True)
    return config


def _error(line: str) -> None:
    """An error on stderr: URLs' secrets masked, control characters escaped (a store's or a
    server's text in it must neither leak a password nor drive the terminal)."""
    click.echo(terminal_safe(redact_urls(line)), err=True)


@contextmanager
def _open_store(config: Config) -> Iterator[StoreAPI]:
    """The store `[store]` or AGGREGATOR_STORE_URL names; its errors never show a password."""
    try:
        store = open_store(config.store.target)
    except AggregatorError as e:
        _error(f"error: {e}")
        sys.exit(FAILURE)
    try:
        yield store
    finally:
        store.close()


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        source = getattr(record, "source", None)  # `poll.about`: records about one source
        if source is not None:
            event["source"] = str(source)
        if record.exc_info:
            event["error"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


class _Redacting(logging.Formatter):
    """Any formatter's lines with the secrets of every URL in them masked (`redact_urls`): a
    source's user info or ?token= must not reach a log, whatever logger or traceback has it.
    In text, a record's message is one line (a traceback after it keeps its lines); control
    characters anywhere are escapes (`shown`)."""

    def __init__(self, inner: logging.Formatter, *, lines: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.lines = lines  # text, where a line is a record (JSON escapes line breaks itself)

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self.lines and not message.isprintable():  # a server's line break forged a record
            record = copy.copy(record)
            record.msg, record.args = one_line(message), None
        return terminal_safe(redact_urls(self.inner.format(record)))


class RateLimitedWarnings(logging.Filter):
    """One warning of each kind per `interval`, then how many like it were dropped.

    uvicorn warns once per bad request ("Invalid HTTP request received.", "Exceeded
    concurrency limit."): any client could flood the log. Rate-limited, not silenced, so the
    operator still learns that it happens and how often.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._next: dict[str, float] = {}  # by message template: when the next may pass
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        kind = str(record.msg)
        now = self._clock()
        if now < self._next.get(kind, now):
            self._dropped[kind] = self._dropped.get(kind, 0) + 1
            return False
        self._next[kind] = now + self._interval
        if dropped := self._dropped.pop(kind, 0):
            record.msg = f"{record.msg} ({dropped} more like it not logged)"
        return True


def _unbreakable_output() -> None:
    """Characters the terminal or pipe cannot encode (Devanagari on a Latin-1 locale, or
    `PYTHONIOENCODING=latin-1`) are written as escapes: `check`, `once` and `status` ended
    in a UnicodeEncodeError traceback, `once` after it had done its work."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _setup_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_Redacting(_JsonFormatter(), lines=False))
    else:
        handler.setFormatter(_Redacting(logging.Formatter("%(asctime)s %(levelname)s %(message)s")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    # Where `run` and `serve` serve, at the default level too: a healthy start is not silent.
    shown = root.level <= logging.WARNING  # `--log-level error` silences it
    start_log.setLevel(min(root.level, logging.INFO) if shown else logging.NOTSET)
    # httpx logs every request at INFO; that is our job, once per source.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # psycopg_pool warns at every failed reconnection attempt, many a second while the
    # database is away; the daemon reports an outage itself, when it starts and ends.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.filters[:] = [RateLimitedWarnings()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="How much to log to stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line.",
)
@click.pass_context
def main(ctx: click.Context, log_level: str, log_format: str) -> None:
    """aggregator: many RSS/Atom feeds in, one dated timeline out as RSS 2.0 and Atom 1.0."""
    _unbreakable_output()
    _setup_logging(log_level, log_format)
    ctx.obj = log_format  # `once` logs through its progress display in the same format


@main.command()
@_config_option
@click.option(
    "--force",
    is_flag=True,
    help="Also poll sources backing off after errors (never overrides a server's Retry-After).",
)
def once(config_path: Path, force: bool) -> None:
    """Poll every source once, store what is new, and publish the feeds."""
    config = _load(config_path)
    freeze_startup(collect=False)
    with _open_store(config) as store:
        try:
            report = _cycle_with_progress(config, store, force=force)
        except AggregatorError as e:  # the store or output directory failed, not a source
            _error(f"error: {e}")
            sys.exit(FAILURE)
        except Exception as e:  # a bug: one line for cron's mail, the traceback at debug
            logging.getLogger(__name__).debug("the cycle failed", exc_info=True)
            _error(
                f"error: the cycle failed with an unexpected error, a bug (please report it; "
                f"--log-level debug shows where): {type(e).__name__}: {one_line(str(e))}"
            )
            sys.exit(FAILURE)
    width = max(len(s.name) for s in report.sources)
    for source in report.sources:
        click.echo(f"{source.name:<{width}}  {one_line(source.summary())}")
    changed = ", ".join(report.publish.changed) or "unchanged"
    click.echo(
        f"published {report.publish.items} items to {config.publish.output_dir} ({changed}); "
        f"sources: {report.tally()}"
    )


def _cycle_with_progress(config: Config, store: StoreAPI, *, force: bool) -> CycleReport:
    """One cycle; a progress bar on a terminal, nothing extra otherwise (cron, CI, a pipe,
    stderr closed), where rich is not even loaded."""
    if not _may_be_terminal():
        return asyncio.run(run_cycle(config, store, force=force))
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        return asyncio.run(run_cycle(config, store, force=force))
    with (
        _logging_to(console),
        Progress(
            TextColumn("[bold]polling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("poll", total=len(config.sources))

        def advance(_: SourceReport) -> None:
            progress.advance(task)

        return asyncio.run(run_cycle(config, store, on_source=advance, force=force))


def _may_be_terminal() -> bool:
    """Whether rich may find stderr a terminal: a tty, or its FORCE_COLOR or TTY_COMPATIBLE
    saying so (rich decides: `Console.is_terminal`)."""
    isatty = getattr(sys.stderr, "isatty", None)  # None with stderr closed
    try:
        tty = bool(isatty is not None and isatty())
    except ValueError:  # a closed file
        tty = False
    return tty or bool(os.environ.get("FORCE_COLOR")) or os.environ.get("TTY_COMPATIBLE") == "1"


class _NotInReport(logging.Filter):
    """Drops the records the per-source lines of `once`'s report repeat (`poll.about`'s
    `reported`): on a terminal each failure is shown once, in its source's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "reported", False)


@contextmanager
def _logging_to(console: Console) -> Iterator[None]:
    """Log through `console` while a progress bar is on it: rich prints each record above
    the bar and redraws the bar whole (a line written to stderr behind its back would land
    inside the bar's line and freeze it). Text logs take rich's layout; JSON stays JSON."""
    root = logging.getLogger()
    kept = root.handlers[:]
    handler: logging.Handler
    if click.get_current_context().find_root().obj == "json":  # one object a line, as ever
        handler = _PlainConsoleHandler(console)
        handler.setFormatter(_Redacting(_JsonFormatter(), lines=False))
    else:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(_Redacting(logging.Formatter("%(message)s")))
    handler.addFilter(_NotInReport())
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = kept


class _PlainConsoleHandler(logging.Handler):
    """Each formatted record as one line on a rich console, untouched by rich's markup."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


@main.command()
@_config_option
def check(config_path: Path) -> None:
    """Validate feeds.toml and list the sources it names."""
    from rich.console import Console
    from rich.table import Table

    config = _load(config_path)
    table = Table(title=f"{len(config.sources)} sources in {config_path}")
    for column in ("name", "url", "interval", "timezone", "tags"):
        table.add_column(column, overflow="fold")
    for s in config.sources:
        table.add_row(
            s.name,
            redact_url(s.url),
            _duration(s.interval.total_seconds()),
            s.timezone,
            ", ".join(s.tags),
        )
    console = Console(width=160 if not sys.stdout.isatty() else None)
    console.print(table)
    if config.channels:
        console.print(_channels_table(config, _count(len(config.channels), "channel")))
    theme = config.publish.theme
    if theme.path is not None:
        names = ", ".join(theme.names) or "none"
        click.echo(f"templates from {theme.directory}: {names} (the others shipped)")
    click.echo(f"{config_path}: ok")


def _channels_table(config: Config, title: str) -> Table:
    """The channels: where each is served and what it selects."""
    from rich.table import Table

    from aggregator.publications import channel_url

    table = Table(title=title)
    for column in ("channel", "url", "title", "sources", "max items", "filters"):
        table.add_column(column, overflow="fold")
    for c in config.channels:
        patterns = len(c.filters.include) + len(c.filters.exclude)
        table.add_row(
            c.name,
            channel_url(config.site, c.name),
            c.title,
            ", ".join(c.sources),
            str(c.max_items),
            f"{patterns} patterns" if patterns else "",
        )
    return table


def _count(n: int, noun: str) -> str:
    """ "1 channel", "2 channels"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


_host_option = click.option(
    "--host", help="Listen on this address instead of [server] host (e.g. 0.0.0.0, ::)."
)
_port_option = click.option(
    "--port", type=click.IntRange(1, 65535), help="Listen on this port instead of [server] port."
)


@main.command()
@_config_option
@_host_option
@_port_option
def run(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the daemon: poll on schedule, publish, serve, reload feeds.toml on change."""
    from aggregator.daemon import Daemon, DaemonOptions

    config = _load(config_path)
    try:
        daemon = Daemon(config_path, config, options=DaemonOptions(listen=Listen(host, port)))
    except AggregatorError as e:
        _error(f"error: {e}")
        sys.exit(FAILURE)
    try:
        asyncio.run(daemon.run())
    except (OSError, AggregatorError) as e:  # the port is taken, the store failed
        click.echo(f"error: {getattr(e, 'strerror', None) or e}", err=True)
        sys.exit(FAILURE)


@main.command()
@_config_option
@_host_option
@_port_option
def serve(config_path: Path, host: str | None, port: int | None) -> None:
    """Serve an existing output directory over HTTP, without polling."""
    from aggregator.server import create_app, serve_until_signalled

    config = Listen(host, port).applied(_load(config_path))
    app = create_app(config.publish.output_dir)
    try:
        settings = config.server
        asyncio.run(
            serve_until_signalled(
                app,
                settings.host,
                settings.port,
                request_timeout=settings.request_timeout.total_seconds(),
                max_connections=settings.max_connections,
                on_listening=lambda: start_log.info("%s", start_line(config, polling=False)),
            )
        )
    except OSError as e:
        click.echo(f"error: {e.strerror or e}", err=True)
        sys.exit(FAILURE)


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--wide", is_flag=True, help="Show names, errors and dates in full.")
def status(config_path: Path, as_json: bool, wide: bool) -> None:
    """Show every source: last poll, outcome, items stored, next poll, failures."""
    config = _load(config_path)
    with _open_store(config) as store:
        states = {s.name: s for s in store.source_states()}
        subs = {s.source: s for s in store.subscriptions()}
    rows = []
    for source in config.sources:
        state = states.get(source.name)
        # Pasted into bug reports: every URL with its user info and ?token= values masked.
        rows.append(
            {
                "name": source.name,
                "url": redact_url(source.url),
                "last_poll": _iso(state.last_polled if state else None),
                "last_success": _iso(state.last_success if state else None),
                "outcome": state.last_outcome if state else None,
                "error": redact_urls(state.last_error) if state and state.last_error else None,
                "items": (state.entries or 0) if state else 0,
                "next_poll": _iso(state.next_poll if state else None),
                "failures": state.failures if state else 0,
                "moved_to": redact_url(state.moved_to) if state and state.moved_to else None,
                "retry_after": _iso(state.retry_after if state else None),
                "disabled": redact_urls(state.disabled) if state and state.disabled else None,
                "websub": _websub_status(config, subs.get(source.name)),
            }
        )
    if as_json:
        # json.dumps leaves C1 controls and DEL as they are; escaped, they read back alike.
        click.echo(terminal_safe(json.dumps(rows, ensure_ascii=False, indent=2)))
        return
    _print_status_table(config, config_path, states, subs, wide=wide)


def _websub_status(config: Config, sub: Subscription | None) -> dict[str, object] | None:
    """A source's WebSub subscription for `status --json` (None: it has none). The
    callback's token is a secret: only its first characters are shown."""
    if sub is None:
        return None
    base = config.websub.callback_base or "/websub/callback/"
    return {
        "hub": redact_url(sub.hub),
        "topic": redact_url(sub.topic),
        "callback": f"{base}{sub.token[:4]}***",
        "state": str(sub.state),
        "lease_expires": _iso(sub.lease_expires),
        "error": redact_urls(sub.last_error) if sub.last_error else None,
    }


def _print_status_table(
    config: Config,
    config_path: Path,
    states: Mapping[str, SourceState],
    subs: Mapping[str, Subscription],
    *,
    wide: bool,
) -> None:
    """The table for people, as wide as the terminal (COLUMNS), or unbounded with `wide`."""
    from zoneinfo import ZoneInfo

    from rich.console import Console

    from aggregator.status_view import StatusLine, status_table

    console = Console(width=100_000) if wide else Console()  # a table is as wide as it needs
    if console.width < 40:  # COLUMNS=0 printed nothing at all, a few columns a heap of "…"
        console = Console(width=80)
    lines = []
    for source in config.sources:
        state = states.get(source.name)
        outcome = str(state.last_outcome if state and state.last_outcome else "never polled")
        if state and state.last_error:
            outcome = f"{outcome}: {redact_urls(state.last_error)}"
        if state and state.moved_to:
            outcome = f"{outcome} (moved permanently to {redact_url(state.moved_to)})"
        if (sub := subs.get(source.name)) is not None:
            outcome = f"{outcome}; push {sub.state}"
        lines.append(
            StatusLine(
                name=source.name,
                outcome=one_line(outcome),
                items=(state.entries or 0) if state else 0,
                failures=state.failures if state else 0,
                last_poll=state.last_polled if state else None,
                last_success=state.last_success if state else None,
                next_poll=state.next_poll if state else None,
            )
        )
    table = status_table(
        lines,
        title=f"{len(lines)} sources in {config_path}",
        now=datetime.now(UTC),
        zone=ZoneInfo(config.site.timezone),
        width=None if wide else console.width,
    )
    console.print(table)
    if config.channels:
        from aggregator.publications import channel_url

        console.print(f"{_count(len(config.channels), 'channel')}:", highlight=False)
        for c in config.channels:
            console.print(
                f"  {c.name}  {channel_url(config.site, c.name)}  "
                f"({_count(len(c.sources), 'source')})",
                highlight=False,
                markup=False,
            )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _config_problems(error: ConfigError) -> NoReturn:
    """Exit 2 with one line per configuration problem, as `_load` does."""
    for problem in (error, *error.others):
        # A value quoted back may be a URL with its password (`url = "ftp://u:pw@h/"`).
        _error(f"error: {problem}")
    sys.exit(CONFIG_ERROR)


@main.command()
@click.argument("url")
@click.option("--name", help="The source's name (default: derived from the feed's title).")
@click.option("--title", help="Show the source under this title instead of the feed's own.")
@_config_option
def add(url: str, name: str | None, title: str | None, config_path: Path) -> None:
    """Add the feed at URL, or the feed an HTML page at URL links to, to feeds.toml.

    The feed is fetched and parsed first: one that fails either is not added."""
    from aggregator.discover import FoundFeed, discover_feed
    from aggregator.edit_config import add_source, poll_settings
    from aggregator.fetch import Fetcher

    if "://" not in url:  # "example.org" or a local file
        local = Path(url).expanduser()
        url = local.resolve().as_uri() if local.exists() else f"https://{url}"

    async def discover(poll: PollSettings) -> FoundFeed:
        timeout = poll.timeout.total_seconds()
        async with Fetcher(timeout=timeout, concurrency=1, user_agent=poll.user_agent) as fetcher:
            return await discover_feed(url, fetcher)

    existed = config_path.exists()
    try:
        # Not `_load`: a feeds.toml without sources is fine here, it is about to get one.
        poll = poll_settings(config_path)
        feed = asyncio.run(discover(poll))
        added = add_source(config_path, feed.url, name=name, title=title, feed_title=feed.title)
    except ConfigError as e:
        _config_problems(e)
    except AggregatorError as e:
        _error(f"error: {e}")
        sys.exit(FAILURE)
    if not existed:  # a mistyped --config must not go unnoticed
        click.echo(f"created {config_path} (it did not exist)")
    found = redact_urls(f" (found on {feed.page})") if feed.page else ""
    click.echo(f'added "{added}": {redact_url(feed.url)}{found} to {config_path}')


# The largest OPML file read: ~150,000 subscriptions of ordinary length.
MAX_OPML_BYTES = 32 * 1024 * 1024


@main.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_config_option
def import_opml_command(file: Path, config_path: Path) -> None:
    """Add every feed of an OPML subscription list (FILE) to feeds.toml, skipping known ones."""
    from aggregator.edit_config import import_opml
    from aggregator.parse.opml import read_opml
    from aggregator.text import clean_text, collapse_whitespace

    try:
        data = read_regular_file(file, MAX_OPML_BYTES + 1)
        if len(data) > MAX_OPML_BYTES:
            raise AggregatorError(f"larger than {MAX_OPML_BYTES // (1024 * 1024)} MB")
        listed = read_opml(data)
    except (AggregatorError, OSError) as e:
        message = e.strerror if isinstance(e, OSError) and e.strerror else e
        click.echo(f"error: {file}: {message}", err=True)
        sys.exit(FAILURE)
    try:
        added, skipped = import_opml(config_path, listed.feeds)
    except ConfigError as e:
        _config_problems(e)
    except AggregatorError as e:
        _error(f"error: {e}")
        sys.exit(FAILURE)
    for source in added:
        click.echo(f"added    {source}")
    every_skip = (*listed.skipped, *skipped)
    for skip in every_skip:
        what = redact_urls(collapse_whitespace(clean_text(skip.what))[:200])
        click.echo(f"skipped  {what}: {skip.reason}")
    total = len(added) + len(every_skip)
    click.echo(f"{len(added)} of {total} feeds in {file} added to {config_path}", nl=False)
    click.echo(f" ({len(every_skip)} skipped)" if every_skip else "")

"""The `aggregator` command: parses arguments, wires the parts, reports to humans.

Exit status: 0 when the command did its job (a cycle with failed sources still completed),
2 for a configuration error (one line per problem on stderr, never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator import __version__
from aggregator.config import Config, load_config
from aggregator.errors import AggregatorError, ConfigError
from aggregator.pipeline import SourceReport, run_cycle
from aggregator.store import Store

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
    """Load the configuration or exit 2 with one line per problem."""
    try:
        return load_config(config_path, display_name=str(config_path))
    except ConfigError as e:
        for problem in (e, *e.others):
            click.echo(f"error: {problem}", err=True)
        sys.exit(CONFIG_ERROR)


@contextmanager
def _open_store(config: Config) -> Iterator[Store]:
    try:
        store = Store.open(config.store.path)
    except AggregatorError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(FAILURE)
    try:
        yield store
    finally:
        store.close()


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO; that is our job, once per source.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="How much to log to stderr.",
)
def main(log_level: str) -> None:
    """aggregator: many RSS/Atom feeds in, one dated timeline out as RSS 2.0 and Atom 1.0."""
    _setup_logging(log_level)


@main.command()
@_config_option
def once(config_path: Path) -> None:
    """Poll every source once, store what is new, and publish the feeds."""
    config = _load(config_path)
    console = Console(stderr=True)
    with _open_store(config) as store:
        if console.is_terminal:
            with Progress(
                TextColumn("[bold]polling"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("poll", total=len(config.sources))

                def advance(_: SourceReport) -> None:
                    progress.advance(task)

                report = asyncio.run(run_cycle(config, store, on_source=advance))
        else:
            report = asyncio.run(run_cycle(config, store))
    width = max(len(s.name) for s in report.sources)
    for source in report.sources:
        click.echo(f"{source.name:<{width}}  {source.summary()}")
    changed = ", ".join(report.publish.changed) or "unchanged"
    click.echo(
        f"published {report.publish.items} items to {config.publish.output_dir} ({changed}); "
        f"{len(report.sources) - report.failed} of {len(report.sources)} sources ok"
    )


@main.command()
@_config_option
def check(config_path: Path) -> None:
    """Validate feeds.toml and list the sources it names."""
    config = _load(config_path)
    table = Table(title=f"{len(config.sources)} sources in {config_path}")
    for column in ("name", "url", "interval", "timezone", "tags"):
        table.add_column(column, overflow="fold")
    for s in config.sources:
        table.add_row(
            s.name, s.url, _duration(s.interval.total_seconds()), s.timezone, ", ".join(s.tags)
        )
    Console(width=160 if not sys.stdout.isatty() else None).print(table)
    click.echo(f"{config_path}: ok")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"

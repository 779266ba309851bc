"""The `aggregator` command's entry point, apart from the CLI it runs.

multiprocessing prepares each worker process (the parser's, `once`'s renderers) by running
the parent's main script again, under another name: for the installed `aggregator` script,
that is this module's import, so it must not import the CLI (click and every command's
modules: ~70 ms of CPU in each worker, for nothing). `python -m aggregator` is spared by
multiprocessing itself (it never re-runs a `__main__` module).
"""


def main() -> None:
    """Run the command line (`aggregator.cli`)."""
    from aggregator.cli import main as cli  # noqa: PLC0415 (see the module)

    cli()

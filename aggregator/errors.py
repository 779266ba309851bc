"""The exception tree of aggregator.

    AggregatorError
    ├── ConfigError      feeds.toml cannot be read or is invalid (one line, names file:line: key)
    ├── FetchError       a source could not be fetched (becomes a `Failed`; never escapes a cycle)
    ├── ParseError       a fetched body is not a feed we can read
    ├── StorageError     the store cannot be opened, migrated or written
    └── PublishError     an output file cannot be written

Errors of other libraries are translated at the module boundary with `raise ... from e`.
Anything else that escapes is a bug.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AggregatorError):
    """An invalid configuration; `str()` is the one-line message shown to the operator."""

    def __init__(self, file: str, line: int, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        self.others: tuple[ConfigError, ...] = ()
        where = f"{file}:{line}:" if line else f"{file}:"  # line 0: not from a file
        super().__init__(f"{where} {key}: {message}" if key else f"{where} {message}")


class FetchError(AggregatorError):
    """A source could not be fetched."""


class ParseError(AggregatorError):
    """A fetched document is not a feed."""


class StorageError(AggregatorError):
    """The store failed."""


class PublishError(AggregatorError):
    """An output file could not be written."""

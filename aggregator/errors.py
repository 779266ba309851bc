"""The exception tree of aggregator.

    AggregatorError
    ├── ConfigError              feeds.toml cannot be read or is invalid (one line, file:line: key)
    ├── EditError                `add` / `import-opml` cannot change feeds.toml
    │   └── DuplicateSourceError the URL or name is already there
    ├── DiscoveryError           `add` found no feed at a URL
    ├── OpmlError                a file is not an OPML subscription list we can read
    ├── FetchError               a source could not be fetched (becomes a `Failed`)
    ├── ParseError               a fetched body is not a feed we can read
    │   └── ParseTimeout         a parse went over its time budget; its worker was killed
    ├── StorageError             the store cannot be opened, migrated or written
    ├── PublishError             an output file cannot be written
    └── ThemeError               a page template cannot be loaded or rendered (file:line)

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


class ParseTimeout(ParseError):
    """A parse went over its time budget; its worker was killed."""


class EditError(AggregatorError):
    """A source cannot be added; `str()` is one line for the operator."""


class DuplicateSourceError(EditError):
    """The URL or name is already in feeds.toml."""


class DiscoveryError(AggregatorError):
    """No feed could be found at a URL; `str()` is one line for the operator."""


class OpmlError(AggregatorError):
    """A file is not an OPML subscription list we can read."""


class StorageError(AggregatorError):
    """The store failed."""


class PublishError(AggregatorError):
    """An output file could not be written."""


class ThemeError(AggregatorError):
    """A page template failed to load (syntax) or to render (an undefined name, a sandbox
    violation, a bound): `str()` is one line naming the template file and line."""

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")

    def __reduce__(self) -> tuple[type[ThemeError], tuple[str, int, str]]:
        """As made (a render in a worker process raises it in `aggregator once`)."""
        return (type(self), (self.file, self.line, self.message))

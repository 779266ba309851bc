"""Parsing: fetched bytes → `ParsedFeed` (`feed`: RSS and Atom; `jsonfeed`: JSON Feed; the
item rules both share in `fields`), in worker processes with time budgets (`pool`); and
OPML subscription lists for `import-opml` (`opml`).

Empty on purpose: importing the package must not load feedparser into the daemon's process,
which only hands bodies to the pool.
"""

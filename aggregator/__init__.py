"""aggregator: many RSS/Atom sources in, one dated timeline out as RSS 2.0 and Atom 1.0."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-project/aggregator"
USER_AGENT = f"aggregator/{__version__} (+{PROJECT_URL})"

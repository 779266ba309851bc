"""aggregator: many RSS/Atom sources in, one dated timeline out as RSS 2.0 and Atom 1.0."""

import sys

# httpx imports its command-line client (`httpx._main`: rich, pygments, click) whenever they
# are installed, as ours are: 40 ms and 3 MB at every start, for a client never run here.
# A None in sys.modules makes that import fail, which httpx expects (its `main` then says the
# client is unavailable). encode/httpx#3547 would make the import lazy upstream.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-project/aggregator"
USER_AGENT = f"aggregator/{__version__} (+{PROJECT_URL})"

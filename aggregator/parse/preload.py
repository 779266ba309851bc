"""What the parser pool's fork server imports when it starts (`ParsePool` preloads it).

The parser, so every worker is forked with it loaded, and `die_with_parent`, so the fork
server dies with the process that started it instead of outliving a `kill -9` of it.
"""

from aggregator import parse  # noqa: F401  (loaded once, inherited by every worker)
from aggregator.parse.pool import die_with_parent

die_with_parent()

"""What start-up made, kept out of every later garbage collection.

Start-up makes a few hundred thousand objects that live as long as the process: modules,
classes, functions, the configuration. Python's cycle collector walks all of them at each
full collection (~12 ms here), and `once` makes one during its polls: ~20 ms of an all-304
cycle's 0.55 s of CPU. `gc.freeze()` moves every object alive into a generation that no
collection visits; what is made afterwards is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup(*, collect: bool) -> None:
    """Exclude every object alive now from later collections.

    `collect` first in a process that lives long (the daemon): cyclic garbage caught in the
    freeze would never be freed. `once` exits soon after, and skips that collection's cost.
    """
    if collect:
        gc.collect()
    gc.freeze()


def thaw() -> None:
    """Give the frozen objects back to the collector: a daemon stopped in a process that
    goes on (the tests run many) must not leave what became garbage since frozen for good."""
    gc.unfreeze()

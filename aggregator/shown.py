"""Text from outside (a server's error, a hub's reason) as a terminal or a log shows it.

Error text reaches the operator's terminal through `once`, `status` and the log. A control
character in it (ESC, CSI, BEL, a bare CR) would recolour, retitle or clear that terminal, or
overwrite a log line on screen; each is written out as a visible `\\u001b` escape instead,
which a JSON log line also reads back as the character it was.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; tab and newline stay (a traceback's lines, an aligned message).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def terminal_safe(text: str) -> str:
    """`text` with every control character but tab and newline written as an escape."""
    return _CONTROLS.sub(_escaped, text)


def one_line(text: str) -> str:
    """`text` as one line of a table: line breaks and tabs a space, other controls escaped."""
    return _CONTROLS_AND_BREAKS.sub(
        lambda m: " " if m.group() in "\t\n\r\u2028\u2029" else _escaped(m), text
    )

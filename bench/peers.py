"""The peers' own virtual environment: `reader` is benchmarked, never depended on.

`bench/.peers/` is created on first use with the package index as its only source, so a
fresh clone needs nothing installed by hand. `reader` vendors a feedparser that still
imports `sgmllib`, hence sgmllib3k beside it.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"
PYTHON = PEERS / "bin" / "python"
REQUIREMENTS = ("reader>=3.12", "sgmllib3k>=1.0")


def peer_python() -> Path:
    """The interpreter that has `reader`, installing it the first time."""
    if not (PEERS / ".installed").exists():
        print("installing reader into bench/.peers (once) ...", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(PEERS)
        subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
        (PEERS / ".installed").touch()
    return PYTHON


def reader_version() -> str:
    out = subprocess.run(
        [str(peer_python()), "-c", "import reader; print(reader.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()

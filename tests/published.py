"""What a publish left in output/, as a reader of any encoding would get it."""

from __future__ import annotations

import gzip
from pathlib import Path

from aggregator.output import GZIP_SUFFIX


def published_bytes(output: Path) -> dict[str, bytes]:
    """Every file under `output` (dotfiles included) by relative path, a gzipped sibling
    decompressed: its content is published as much as the file's."""
    files = {}
    for path in sorted(output.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(GZIP_SUFFIX):
                data = gzip.decompress(data)
            files[str(path.relative_to(output))] = data
    return files

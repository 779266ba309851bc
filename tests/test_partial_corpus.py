"""The partial parse over feedparser's own test corpus: each of its ~2,200 documents and each
mutation of it (an item added at the top, one edited, one removed, the items reordered,
the header edited) parses partly as it does whole, or is parsed whole (`tests.partialcheck`).

The corpus is read in place from the feedparser source tree named by `FEEDPARSER`: `make
test` fetches the installed version's source distribution from the package index (it
carries the corpus) into `.venv/feedparser-corpus/` and points `FEEDPARSER` there; a
checkout of feedparser does as well. Skipped without one (nothing of it is ever copied into
this repository). A document's
HTTP headers are the `Header:` lines of its leading comment, as feedparser's own tests
serve them; others are served as application/xml.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.partialcheck import check_document

ROOT = Path(os.environ.get("FEEDPARSER", "/nonexistent"))
FOLDERS = ("wellformed", "illformed", "encoding", "entities")
DOCUMENTS = sorted(p for folder in FOLDERS for p in (ROOT / "tests" / folder).rglob("*.xml"))
_HEADER = re.compile(rb"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.MULTILINE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DOCUMENTS,
        reason=f"no feedparser corpus at FEEDPARSER={ROOT}: `make test` fetches it from the "
        "package index, or name a feedparser source tree (see the module)",
    ),
]


def _headers(body: bytes) -> dict[str, str]:
    comment = body[: body.find(b"-->")] if b"-->" in body[:2048] else b""
    headers = {"content-type": "application/xml"}
    for name, value in _HEADER.findall(comment):
        headers[name.decode("ascii").lower()] = value.decode("latin-1")
    return headers


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / "tests"))


@pytest.mark.parametrize("path", DOCUMENTS, ids=_id)
def test_corpus_document_and_its_mutations_parse_partly_as_they_do_whole(path: Path):
    body = path.read_bytes()
    check_document(body, _headers(body))


def test_the_corpus_is_mostly_read_in_part():
    """Not vacuous: most well-formed RSS and Atom documents of the corpus are cut."""
    wellformed = [p for p in DOCUMENTS if _id(p).startswith(("wellformed/rss", "wellformed/atom"))]
    taken = [
        p
        for p in wellformed
        if "unchanged" in check_document(p.read_bytes(), _headers(p.read_bytes()))
    ]
    assert len(taken) >= len(wellformed) // 2, (len(taken), len(wellformed))

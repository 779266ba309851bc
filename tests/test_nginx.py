"""contrib/nginx.conf in front of output/: a real nginx serves what a publish wrote.

Shows: every output is served with the media type readers expect (UTF-8), an ETag and
Last-Modified; a conditional request gets 304; a reader asking for gzip gets the
precompressed sibling (`gzip_static`), which decompresses to the very file; hidden files
are not served; a publish that changed nothing leaves every ETag as it was. Also the
siblings themselves: written with each file, same mtime, repaired after a publish killed
between the two writes. Needs Debian's nginx (`make test` installs it when it can).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aggregator.output import gzipped, publish_files
from aggregator.server.files import _load_version, media_type_of
from tests.conftest import ROOT, run_cli
from tests.feedfactory import rss2
from tests.feedserver import FeedServer
from tests.test_daemon import _free_port, _items

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
MIME_TYPES = Path("/etc/nginx/mime.types")
MEDIA_TYPES = {
    "atom.xml": "application/atom+xml; charset=utf-8",
    "rss.xml": "application/rss+xml; charset=utf-8",
    "feed.json": "application/feed+json; charset=utf-8",
    "sources.opml": "text/x-opml; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}


def _main_config(server_block: str, workdir: Path) -> str:
    """contrib/nginx.conf's server block inside a minimal nginx.conf of our own: in the
    foreground, one process (it reads the test's files as the test's user), every path
    under `workdir`."""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        "daemon off;\nmaster_process off;\n"
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"    include {MIME_TYPES};\n    default_type application/octet-stream;\n"
        f"    access_log off;\n{temp}\n{server_block}\n}}\n"
    )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx serving `tmp_path/output` with contrib/nginx.conf: (base URL, output dir)."""
    if NGINX is None or not MIME_TYPES.exists():
        pytest.skip("no nginx here (Debian's nginx package; `make test` installs it as root)")
    output = tmp_path / "output"
    output.mkdir()
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    port = _free_port()
    block = (ROOT / "contrib" / "nginx.conf").read_text(encoding="utf-8")
    block = block.replace("listen 80;", f"listen 127.0.0.1:{port};")
    block = block.replace("listen [::]:80;", "")
    block = block.replace("root /srv/aggregator/output;", f"root {output};")
    config = workdir / "nginx.conf"
    config.write_text(_main_config(block, workdir), encoding="utf-8")
    process = subprocess.Popen(
        [NGINX, "-c", str(config), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # it logs to workdir/error.log
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = (workdir / "error.log").read_text(errors="replace")
                    pytest.fail(f"nginx did not start: {error}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", output
    finally:
        process.terminate()
        process.wait(timeout=10)


def _publish(feed_server: FeedServer, output: Path) -> None:
    config = output.parent / "feeds.toml"
    config.write_text(
        f'[publish]\nmax_age = "3650d"\noutput_dir = "{output}"\n'
        f'[[feeds]]\nname = "a"\nurl = "{feed_server.url("/a.xml")}"\n',
        encoding="utf-8",
    )
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_nginx_serves_the_outputs_with_types_etags_304_and_precompressed_gzip(
    nginx: tuple[str, Path], feed_server: FeedServer
) -> None:
    base, output = nginx
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 30)))
    _publish(feed_server, output)
    etags = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        for name, media_type in MEDIA_TYPES.items():
            plain = client.get(f"/{name}", headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200, name
            assert plain.headers["content-type"] == media_type, name
            assert plain.content == (output / name).read_bytes(), name
            assert plain.headers["last-modified"], name
            etag = plain.headers["etag"]
            etags[name] = etag

            packed = client.get(f"/{name}", headers={"Accept-Encoding": "gzip"})
            assert packed.headers["content-encoding"] == "gzip", name
            assert packed.headers["vary"] == "Accept-Encoding", name
            # httpx decodes it; the bytes on the wire are the sibling's own.
            assert packed.content == (output / name).read_bytes(), name
            assert packed.headers["last-modified"] == plain.headers["last-modified"], name

            # Each encoding is its own representation, with its own ETag and its own 304.
            for encoding, tag in (("identity", etag), ("gzip", packed.headers["etag"])):
                again = client.get(
                    f"/{name}", headers={"Accept-Encoding": encoding, "If-None-Match": tag}
                )
                assert again.status_code == 304, (name, encoding)
        assert client.get("/").headers["content-type"] == MEDIA_TYPES["index.html"]
        assert client.get("/.published.json").status_code == 404

        _publish(feed_server, output)  # nothing changed
        for name, etag in etags.items():
            again = client.get(f"/{name}", headers={"Accept-Encoding": "identity"})
            assert again.headers["etag"] == etag, name


def test_every_output_has_a_gzipped_sibling_with_its_mtime(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    feed_server.add("/a.xml", rss2("A", "https://a.example.org/", _items("a", 3)))
    output = tmp_path / "output"
    _publish(feed_server, output)
    for name in MEDIA_TYPES:
        file, sibling = output / name, output / f"{name}.gz"
        assert gzip.decompress(sibling.read_bytes()) == file.read_bytes(), name
        assert sibling.stat().st_mtime_ns == file.stat().st_mtime_ns, name
        assert sibling.read_bytes() == gzipped(file.read_bytes()), "deterministic bytes"


def test_an_unchanged_file_keeps_its_sibling_and_a_stale_sibling_is_repaired(
    tmp_path: Path,
) -> None:
    assert publish_files(tmp_path, {"atom.xml": b"<feed>one</feed>"}) == {"atom.xml": True}
    sibling = tmp_path / "atom.xml.gz"
    before = sibling.stat()
    assert publish_files(tmp_path, {"atom.xml": b"<feed>one</feed>"}) == {"atom.xml": False}
    after = sibling.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # A publish killed after writing the file and before its sibling: the sibling is the
    # old file's (older mtime). The next publish, finding the file unchanged, repairs it.
    (tmp_path / "atom.xml").write_bytes(b"<feed>two</feed>")
    os.utime(sibling, ns=(1, 1))
    assert publish_files(tmp_path, {"atom.xml": b"<feed>two</feed>"}) == {"atom.xml": False}
    assert gzip.decompress(sibling.read_bytes()) == b"<feed>two</feed>"
    assert sibling.stat().st_mtime_ns == (tmp_path / "atom.xml").stat().st_mtime_ns


def test_the_shipped_config_names_every_output_type() -> None:
    """A new output kind needs its media type in contrib/nginx.conf too."""
    text = (ROOT / "contrib" / "nginx.conf").read_text(encoding="utf-8")
    for media_type in {t.split(";")[0] for t in MEDIA_TYPES.values()} - {"text/html"}:
        assert re.search(rf"default_type {re.escape(media_type)};", text), media_type


def test_the_built_in_server_sends_the_sibling_of_this_very_version(tmp_path: Path) -> None:
    """The built-in server compresses nothing a publish already compressed; a sibling of
    another version (a publish between its two writes) is not sent for this one."""
    body = b"<feed>" + b"x" * 4000 + b"</feed>"
    publish_files(tmp_path, {"atom.xml": body})
    sibling = tmp_path / "atom.xml.gz"
    marked = gzip.compress(body, compresslevel=1, mtime=0)  # other bytes, same content
    assert marked != sibling.read_bytes()
    mtime = sibling.stat().st_mtime_ns
    sibling.write_bytes(marked)
    os.utime(sibling, ns=(mtime, mtime))
    version = _load_version(tmp_path / "atom.xml", "atom.xml")
    assert version is not None and version.gzipped == marked

    os.utime(sibling, ns=(mtime - 1_000_000_000, mtime - 1_000_000_000))
    version = _load_version(tmp_path / "atom.xml", "atom.xml")
    assert version is not None and version.gzipped != marked
    assert version.gzipped is not None and gzip.decompress(version.gzipped) == body
    assert media_type_of("atom.xml.gz") == "application/gzip"

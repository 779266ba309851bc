"""The Starlette app: the published files with ETag/304/gzip, `/healthz`, `/metrics`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from aggregator.render import PAGE_FILE
from aggregator.server.files import FileVersion, PublishedFiles

# A body is written in slices of this size, each once the previous one has drained below the
# transport's high-water mark (64 KiB): what a reader that stops reading holds in memory.
SEND_CHUNK_BYTES = 64 * 1024

# None when healthy, else the reason; awaited, so that asking a database server does not
# stall the other requests.
HealthCheck = Callable[[], Awaitable[str | None]]


class ChunkedBody(Response):
    """A response whose body goes out in `SEND_CHUNK_BYTES` memoryview slices.

    uvicorn awaits the transport's drain before each message, so a slow reader holds one
    slice beyond the high-water mark; one `Response(body)` would be buffered whole, a copy per
    connection (500 readers of a 4 MB file took 1 GB).
    """

    def __init__(self, body: bytes, headers: dict[str, str], media_type: str) -> None:
        # Content-Length given, so that Starlette neither renders nor measures a body.
        super().__init__(
            None, headers={**headers, "Content-Length": str(len(body))}, media_type=media_type
        )
        self._payload = memoryview(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        size = len(self._payload)
        for start in range(0, size, SEND_CHUNK_BYTES):
            end = start + SEND_CHUNK_BYTES
            await send(
                {
                    "type": "http.response.body",
                    "body": self._payload[start:end],
                    "more_body": end < size,
                }
            )
            # send() yields only when the transport is full: without this, hundreds of
            # responses each fill their socket's kernel buffer (MBs) before /healthz runs.
            await asyncio.sleep(0)
        if size == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether Accept-Encoding allows gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return False
    return False


def _not_modified(request: Request, version: FileVersion, etag: str) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or etag in tags or version.etag in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            return version.mtime <= int(parsedate_to_datetime(if_modified_since).timestamp())
        except (TypeError, ValueError, IndexError):
            return False
    return False


def _link(links: Callable[[str], str | None] | None, name: str) -> dict[str, str]:
    """The `Link` header of the file `name`, if it has one."""
    link = links(name) if links is not None else None
    return {"Link": link} if link else {}


async def _not_published(files: PublishedFiles, name: str) -> Response:
    """The answer for a name with no file: a hint at the root (nothing published yet), a
    redirect from a channel's name to its directory (`/news` → `/news/`, where its page's
    relative links resolve; relative, so that it holds behind a proxy's path prefix too),
    else 404."""
    if name == PAGE_FILE:
        return PlainTextResponse("Feeds: /atom.xml (Atom 1.0), /rss.xml (RSS 2.0)\n")
    last = name.rpartition("/")[2]
    if "." not in last and await files.get(f"{name}/{PAGE_FILE}"):
        return RedirectResponse(f"{last}/", status_code=301)
    return PlainTextResponse("not found\n", status_code=404)


def create_app(
    output_dir: Path,
    *,
    files: PublishedFiles | None = None,
    health: HealthCheck | None = None,
    metrics: Callable[[], bytes] | None = None,
    links: Callable[[str], str | None] | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The app; pass `files` to share (and later re-root) the daemon's view of output_dir.

    `links(name)`: the `Link` header of a published file, if any (a feed's WebSub hubs and
    self); `routes`: the daemon's own endpoints (the hub's `/websub`, the subscriber's
    callbacks), matched before the published files.
    """
    files = files or PublishedFiles(output_dir)

    async def serve_file(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name == "" or name.endswith("/"):  # a channel's directory: its page
            name += PAGE_FILE
        version = await files.get(name)
        if version is None:
            return await _not_published(files, name)
        wants_gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        body = version.body
        etag = version.etag
        headers = {
            "Last-Modified": version.last_modified,
            "Cache-Control": "public, max-age=60",
            "Vary": "Accept-Encoding",
            **_link(links, name),
        }
        if wants_gzip and version.gzipped is not None:
            body = version.gzipped
            etag = version.etag[:-1] + '-gzip"'
            headers["Content-Encoding"] = "gzip"
        headers["ETag"] = etag
        if _not_modified(request, version, etag):
            headers.pop("Content-Encoding", None)
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=version.media_type)
        return ChunkedBody(body, headers, version.media_type)

    async def healthz(request: Request) -> Response:
        problem = await health() if health is not None else None
        if problem is None and not files.root.is_dir():
            problem = f"output directory {files.root} is missing"
        body = {"status": "ok"} if problem is None else {"status": "unavailable", "reason": problem}
        return Response(
            json.dumps(body) + "\n",
            status_code=200 if problem is None else 503,
            media_type="application/json",
        )

    async def metrics_endpoint(request: Request) -> Response:
        body = metrics() if metrics is not None else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *routes,
            Route("/", serve_file, methods=["GET", "HEAD"]),
            Route("/{name:path}", serve_file, methods=["GET", "HEAD"]),
        ]
    )

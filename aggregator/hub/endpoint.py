"""The `/websub` endpoint: a bounded form read, handed to `Subscriptions`, answered in
plain text (WebSub §5.1: a 4xx or 5xx with a description of the error, or 202)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aggregator.hub.subscribe import Reply

MAX_BODY_BYTES = 16 * 1024  # two URLs of 2,048 characters, escaped, and a secret
MAX_FIELDS = 32
FORM = "application/x-www-form-urlencoded"

Handle = Callable[[Sequence[tuple[str, str]]], Awaitable[Reply]]


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


async def _form(request: Request) -> list[tuple[str, str]] | Response:
    """The request's form fields, or the answer refusing it."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM:
        return _text(415, f"expected a {FORM} body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _text(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _text(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return parse_qsl(
            body.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return _text(400, "the form cannot be read (not URL-encoded UTF-8, or too many fields)")


def websub_route(handle: Handle, path: str = "/websub") -> Route:
    """The route answering subscription requests at `path`."""

    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return _text(
                405, f"POST a WebSub subscription request ({FORM})", headers={"Allow": "POST"}
            )
        form = await _form(request)
        if isinstance(form, Response):
            return form
        reply = await handle(form)
        return _text(reply.status, reply.text)

    return Route(path, endpoint, methods=["GET", "HEAD", "POST"])

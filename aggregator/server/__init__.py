"""Serve `output/` to feed readers (Starlette): cheap to poll, never a byte outside it.

Files are held in memory keyed by (mtime, size), so a conditional request costs one
`stat` and never reads the file or the store. The ETag is a hash of the bytes, so it
changes only when they do (publish rewrites a file only when its bytes change). Reading,
hashing and gzip of a new version run in a thread, once per version however many requests
ask for it meanwhile, so a 100 MB file does not stall the loop. Bodies are sent in
`SEND_CHUNK_BYTES` slices of the cached bytes, each after the previous one drained, so a slow
reader holds about one chunk, never a copy of the file. `/healthz` and `/metrics` are for
the operator.

Clients are bounded (`BoundedH11Protocol`): a connection must deliver a complete request
within `request_timeout` of connecting (or of its first byte after a response), however it
drips it; an idle keep-alive connection is closed after `KEEP_ALIVE_SECONDS`; a request
arriving while `max_connections` are open is answered 503, and a connection accepted while
twice that are open is closed at once, so a flood cannot take every file descriptor. A
response the client stops reading is aborted: the connection is dropped when no byte of its
response leaves (is acknowledged by the client) for `request_timeout` while bytes wait to go.
"""

from aggregator.server.app import create_app
from aggregator.server.connections import (
    EmbeddedServer,
    embedded_server,
    listen_socket,
    raise_open_file_limit,
    serve_until_signalled,
)
from aggregator.server.files import PublishedFiles, media_type_of

__all__ = [
    "EmbeddedServer",
    "PublishedFiles",
    "create_app",
    "embedded_server",
    "listen_socket",
    "media_type_of",
    "raise_open_file_limit",
    "serve_until_signalled",
]

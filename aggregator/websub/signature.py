"""`X-Hub-Signature` on a content distribution (WebSub §7.1). Pure.

The header is `method=hexdigest`, an HMAC of the body under the subscription's secret.
sha256, sha384 and sha512 are accepted; sha1 only where the operator allows it (old hubs;
the spec still lists it). Compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re

STRONG = ("sha256", "sha384", "sha512")
_HEX = re.compile(r"[0-9a-fA-F]{40,128}")


def sign(method: str, secret: str, body: bytes) -> str:
    """The header value a hub would send: `method=hexdigest`."""
    return f"{method}={hmac.new(secret.encode(), body, getattr(hashlib, method)).hexdigest()}"


def signature_problem(
    header: str | None, secret: str, bodies: tuple[bytes, ...], *, allow_sha1: bool = False
) -> str | None:
    """Why the signature does not authenticate any of `bodies` (the body as received, and
    decoded when it came compressed); None when it does."""
    if not header:
        return "no X-Hub-Signature"
    method, _, digest = header.strip().partition("=")
    method = method.strip().lower()
    allowed = (*STRONG, "sha1") if allow_sha1 else STRONG
    if method not in allowed:
        shown = method[:16] or "none"
        return f"signature method {shown!r} not accepted (sha256, sha384, sha512)"
    if not _HEX.fullmatch(digest.strip()):
        return "malformed X-Hub-Signature"
    given = digest.strip().lower().encode()
    for body in bodies:
        expected = hmac.new(secret.encode(), body, getattr(hashlib, method)).hexdigest()
        if hmac.compare_digest(expected.encode(), given):
            return None
    return "wrong X-Hub-Signature"

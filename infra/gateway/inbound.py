"""What the gateway reads from an incoming request: its body (bounded), its JSON, its path's
shape, where it came from, and the public address the UI should call."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from infra.gateway.refusals import Refused

MAX_BODY_BYTES = 32 << 20


async def read_body(request: Request) -> bytes:
    """The whole body; Refused(413) past ``MAX_BODY_BYTES``."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise Refused(413, "request body too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, "request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(body: bytes) -> Any:
    """The body as JSON, or None when empty or not JSON (the server answers that)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def refuse_cross_site(request: Request) -> None:
    """A browser's write must come from the gateway's own pages (on top of the cookie's
    SameSite=Strict): an ``Origin`` of another host is refused."""
    if request.method in ("GET", "HEAD", "OPTIONS") or "authorization" in request.headers:
        return
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise Refused(403, f"cross-site request from {origin}")


def public_api(request: Request) -> str:
    """The API address the UI is told to use: this gateway's ``/api``."""
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}/api"


def dot_segments(path: str) -> bool:
    """``.`` or ``..`` segments: a client or upstream might resolve them to another route
    than the one classified, so they are refused."""
    return any(segment in (".", "..") for segment in path.split("/"))

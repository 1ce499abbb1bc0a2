"""Prefect's WebSockets through the gateway: the event and log streams (reads), events
sent in (a flow run's reports), worker channels (the platform's).

A caller authenticates with its header or session cookie, or, speaking Prefect's
``prefect`` subprotocol, with its first message ``{"type": "auth", "token":
"name:secret"}`` (what Prefect's clients send, with PREFECT_API_AUTH_STRING). Refused
before the handshake: an HTTP 401 or 403; after it: close code 1008 with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from infra.gateway import routes
from infra.gateway.refusals import Refused, denial, report
from infra.gateway.session import split_token
from mlops.governance.identities import PLATFORM

if TYPE_CHECKING:
    from infra.gateway.app import Gateway


async def serve_socket(gateway: Gateway, websocket: WebSocket) -> None:
    """Authenticate, decide, then relay to the same path upstream."""
    path = websocket.url.path[len("/api"):]
    route = routes.classify_socket(path)
    offered = [p.strip() for h in websocket.headers.getlist("sec-websocket-protocol")
               for p in h.split(",")]
    speaks_prefect, principal = "prefect" in offered, None
    try:
        principal = gateway.identify(websocket)
        if principal is None and not speaks_prefect:
            raise Refused(401, "no credentials")
        if principal is not None:
            gateway.decide(principal, route.action, PLATFORM)
    except Refused as refused:
        report(principal, websocket, refused)
        return await websocket.send_denial_response(denial(refused))
    await websocket.accept(subprotocol="prefect" if speaks_prefect else None)
    if speaks_prefect:
        try:
            first = await _first_message(websocket)
            if first.get("type") != "auth":
                raise Refused(401, "expected an auth message first")
            if principal is None:
                credentials = split_token(first.get("token"))
                principal = gateway.access.authenticate(*credentials) if credentials else None
                if principal is None:
                    raise Refused(401, "invalid credentials")
                gateway.decide(principal, route.action, PLATFORM)
        except Refused as refused:
            report(principal, websocket, refused)
            return await websocket.close(1008, refused.reason[:120])
    await gateway.upstream.relay(websocket, websocket.url.path, websocket.url.query,
                                 speaks_prefect)


async def _first_message(websocket: WebSocket) -> dict[str, Any]:
    """The caller's first message, which the ``prefect`` subprotocol makes its auth."""
    try:
        message = await websocket.receive_json()
    except (WebSocketDisconnect, ValueError, KeyError):
        raise Refused(401, "expected an auth message first") from None
    return message if isinstance(message, dict) else {}

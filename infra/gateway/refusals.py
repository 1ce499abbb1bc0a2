"""Every refused request goes through ``on_refused``: one log line, then each hook.

A hook (the audit trail, for one) is any callable taking the same arguments; it is added
with ``add_refusal_hook`` (and taken out with ``remove_refusal_hook``) and must not raise
(an exception is logged and ignored, so that a failing hook never turns a refusal into a
500). Nothing secret is passed: the principal, the method and path (no query, no headers,
no body), the client's address, the team when known, the status and the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from mlops.governance.identities import Principal

log = logging.getLogger("infra.gateway.refused")


class Refused(Exception):
    """A request the gateway answers itself: 401 (no or bad credentials), 403 (not
    allowed; ``action`` names the rule, ``team`` the team it was decided in), 413 (too
    large), 503 (the audit trail cannot record the action, so it was not done)."""

    def __init__(self, status: int, reason: str, action: str | None = None,
                 team: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.action, self.team = status, reason, action, team


@dataclass(frozen=True)
class RefusedRequest:
    """What was refused: enough to audit, nothing secret."""

    method: str
    path: str
    client: str | None
    team: str | None = None  # the team the request was decided in, when known


RefusalHook = Callable[[Principal | None, RefusedRequest, int, str], None]
_HOOKS: list[RefusalHook] = []


def add_refusal_hook(hook: RefusalHook) -> None:
    _HOOKS.append(hook)


def remove_refusal_hook(hook: RefusalHook) -> None:
    """Take a hook out (an app that stops: its audit log is closed)."""
    if hook in _HOOKS:
        _HOOKS.remove(hook)


def on_refused(principal: Principal | None, request: RefusedRequest, status: int,
               reason: str) -> None:
    """Report a refusal: 401 (no or bad credentials) or 403 (not allowed)."""
    log.warning("refused %s", json.dumps({
        "status": status, "principal": principal.name if principal else None,
        "method": request.method, "path": request.path, "client": request.client,
        "team": request.team, "reason": reason}, sort_keys=True))
    for hook in _HOOKS:
        try:
            hook(principal, request, status, reason)
        except Exception:  # a hook never changes the answer
            log.exception("refusal hook %r failed", hook)


def report(principal: Principal | None, connection: HTTPConnection, refused: Refused) -> None:
    """``on_refused`` for a refusal of this connection (no principal on a 401)."""
    method = connection.scope.get("method", "WEBSOCKET")
    on_refused(principal if refused.status != 401 else None,
               RefusedRequest(method, connection.url.path,
                              connection.client.host if connection.client else None,
                              refused.team),
               refused.status, refused.reason)


def denial(refused: Refused) -> Response:
    """The answer to a refusal: JSON with ``detail`` (what Prefect's UI shows) and the
    rule; a 401 names the scheme to authenticate with."""
    headers = {"WWW-Authenticate": 'Bearer realm="mlops"'} if refused.status == 401 else None
    detail = f"refused: {refused.reason}" if refused.status == 403 else refused.reason
    body = {"detail": detail, **({"rule": refused.action} if refused.action else {})}
    return JSONResponse(body, refused.status, headers)


def refuse(principal: Principal | None, connection: HTTPConnection, refused: Refused) -> Response:
    report(principal, connection, refused)
    return denial(refused)

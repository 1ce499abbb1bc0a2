"""The gateway in front of Prefect: who is calling, may they, and then the server.

Every request under ``/api`` is authenticated (session cookie, or Basic or Bearer
``name:secret``), classified (``routes``), checked for a new run's team, queue and
priority (``trigger``), decided (``mlops.governance.policy``) and only then forwarded
(``proxy``) with the server's own credential. Without credentials: 401 on the API, the
login page for the UI. Refused: 403 naming the rule, reported through ``on_refused``.
``GET /api/health`` and ``/api/ready`` stay open, as on Prefect's server (probes).

The audit trail (``audit``): every 401 and 403 is recorded by a refusal hook added while
the app runs; a run the gateway lets through is recorded before it is forwarded, and not
forwarded (503) when the trail cannot record it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from infra.gateway import routes
from infra.gateway.access import Access
from infra.gateway.access_log import AccessLog
from infra.gateway.approvals import approval_action, name_approver
from infra.gateway.audit import GatewayAudit
from infra.gateway.inbound import (
    dot_segments,
    json_body,
    public_api,
    read_body,
    refuse_cross_site,
)
from infra.gateway.ownership import Ownership
from infra.gateway.proxy import Upstream
from infra.gateway.refusals import (
    Refused,
    add_refusal_hook,
    refuse,
    remove_refusal_hook,
    report,
)
from infra.gateway.session import (
    COOKIE,
    Sessions,
    header_credentials,
    login_form,
    login_page,
    login_url,
    safe_next,
)
from infra.gateway.sockets import serve_socket
from infra.gateway.teams_route import teams_file_route
from infra.gateway.trigger import check_trigger, requeued_from
from mlops.governance.audit.log import AuditLog
from mlops.governance.identities import PLATFORM, Principal
from mlops.governance.policy import Action, Decision

log = logging.getLogger("infra.gateway")
OPEN_PATHS = ("/health", "/ready")  # under /api, GET only
_DEPLOYMENT_CHANGES = (Action.DEPLOYMENT_WRITE, Action.DEPLOYMENT_DELETE,
                       Action.DEPLOYMENT_PAUSE, Action.DEPLOYMENT_RESUME)


@dataclass(frozen=True)
class GatewayConfig:
    teams_file: Path
    upstream: str  # the Prefect server's origin, e.g. http://127.0.0.1:4201
    upstream_auth: str  # its PREFECT_SERVER_API_AUTH_STRING
    session_key: str
    environ: Mapping[str, str]  # where the teams file's env: credentials are
    audit: AuditLog  # the process's one audit log (refusals, triggers, teams-file changes)
    upstream_retries: int = 3  # of a call the server answered 503 (retry later)


class Gateway:
    """The gateway's state and its request handlers."""

    def __init__(self, config: GatewayConfig) -> None:
        self.access = Access(config.teams_file, config.environ)
        self.sessions = Sessions(config.session_key)
        self.upstream = Upstream(config.upstream, config.upstream_auth,
                                 config.upstream_retries)
        self.ownership = Ownership(self.upstream.get_json)
        self.audit = GatewayAudit(config.audit)

    def identify(self, connection: HTTPConnection) -> Principal | None:
        """The caller, from its header or session cookie; Refused(401) for bad ones."""
        header = connection.headers.get("authorization")
        if header:
            credentials = header_credentials(header)
            principal = self.access.authenticate(*credentials) if credentials else None
            if principal is None:
                raise Refused(401, "invalid credentials")
            return principal
        name = self.sessions.read(connection.cookies.get(COOKIE))
        return self.access.principal(name) if name else None

    def caller(self, connection: HTTPConnection) -> Principal:
        """The caller, who must have identified itself: Refused(401) otherwise."""
        principal = self.identify(connection)
        if principal is None:
            raise Refused(401, "no credentials")
        return principal

    def decide(self, principal: Principal, action: Action, team: str) -> Decision:
        decision = self.access.state.policy.decide(principal, action, team)
        if not decision.allowed:
            raise Refused(403, decision.reason, str(action), team)
        return decision

    async def api(self, request: Request) -> Response:
        path = request.url.path[len("/api"):]
        if dot_segments(request.url.path):
            return refuse(None, request, Refused(400, "dot segments in the path"))
        if request.method == "GET" and path in OPEN_PATHS:
            return await self.upstream.forward(request, b"")
        principal = None
        try:
            principal = self.caller(request)
            refuse_cross_site(request)
            body = await read_body(request)
            body = await self.authorize(principal, request, path, body)
        except Refused as refused:
            return refuse(principal, request, refused)
        return await self.upstream.forward(request, body)

    async def authorize(self, principal: Principal, request: Request, path: str,
                        body: bytes) -> bytes:
        """Decide a call; the body to forward (a new run's team filled in)."""
        data = json_body(body)
        route = routes.classify(request.method, path, request.query_params, data)
        if route.action in (Action.READ, Action.READ_SECRETS):
            self.decide(principal, route.action, PLATFORM)
            return body
        if route.trigger:
            return await self._authorize_trigger(principal, route, data, body)
        if route.target.kind == "run":
            return await self._authorize_run(principal, route, path, data, body)
        team = await self.ownership.team(route.target, self.access.state.owners)
        if team is not None:  # else the object does not exist, and the server says 404
            self.decide(principal, route.action, team)
        if route.action in _DEPLOYMENT_CHANGES:
            self.ownership.forget(route.target.key if route.target.kind == "deployment"
                                  else None)
        return body

    async def _authorize_run(self, principal: Principal, route: routes.Route, path: str,
                             data: Any, body: bytes) -> bytes:
        """A call on a run: decided in the run's team, once its state is known."""
        run = await self.ownership.run(route.target.key)
        if run is None:
            return body  # the server answers 404
        team = await self.ownership.team_of_run(run, self.access.state.owners)
        action = approval_action(run, path, route.action)
        if team == PLATFORM and action != Action.RUN_DELETE:
            action = Action.RUN_REPORT  # a run outside deployments: its reporter's states
        self.decide(principal, action, team)
        return name_approver(data, principal) if action == Action.RUN_APPROVE else body

    async def _authorize_trigger(self, principal: Principal, route: routes.Route, data: Any,
                                 body: bytes) -> bytes:
        owners = self.access.state.owners
        deployment = await self.ownership.deployment(route.target.key, owners)
        if deployment is None:
            return body
        items = data if route.bulk and isinstance(data, list) else [data or {}]
        checks = []
        for item in items:
            original_id = requeued_from(item) if isinstance(item, dict) else None
            original = await self.ownership.run(original_id) if original_id else None
            if original_id and original is None:
                raise Refused(403, f"no run {original_id} to requeue", str(Action.RUN_REQUEUE),
                              deployment.team)
            check = check_trigger(item if isinstance(item, dict) else {}, deployment, owners,
                                  original)
            if check.refusal:
                raise Refused(403, check.refusal, str(check.actions[0]), check.team)
            for action in check.actions:
                self.decide(principal, action, check.team)
            checks.append(check)
        # Every run allowed: each recorded before any is created (Refused(503) if not).
        for check in checks:
            await self.audit.run_triggered(principal, check.team, deployment, check.body)
        checked = [check.body for check in checks]
        if checked == items:
            return body
        return json.dumps(checked if route.bulk else checked[0]).encode()

    async def ui(self, request: Request) -> Response:
        """The UI's pages and assets (reads); the login page for a browser without a
        session."""
        try:
            principal = self.identify(request)
            if principal is None and request.method == "GET" and "text/html" in \
                    request.headers.get("accept", ""):
                return RedirectResponse(login_url(request.url.path, request.url.query), 303)
            if principal is None:
                raise Refused(401, "no credentials")
            if request.method not in ("GET", "HEAD") or dot_segments(request.url.path):
                raise Refused(405, "the UI is read only; the API is under /api")
            if request.url.path.endswith("/ui-settings"):
                return await self.upstream.ui_settings(request, public_api(request))
            return await self.upstream.forward(request, await read_body(request))
        except Refused as refused:
            return refuse(None, request, refused)

    async def socket(self, websocket: WebSocket) -> None:
        await serve_socket(self, websocket)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(login_page(safe_next(request.query_params.get("next"))))
        name, password, target = login_form(await read_body(request))
        principal = self.access.authenticate(name, password) if name and password else None
        if principal is None:
            report(None, request, Refused(401, "login failed"))
            return HTMLResponse(login_page(safe_next(target), "Wrong name or password."), 401)
        response = RedirectResponse(safe_next(target), 303)
        response.set_cookie(COOKIE, self.sessions.issue(principal.name),
                            max_age=self.sessions.max_age_s, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def health(self, request: Request) -> Response:
        upstream = await self.upstream.healthy()
        return JSONResponse({"gateway": "ok", "prefect": upstream},
                            200 if upstream == 200 else 503)

    async def whoami(self, request: Request) -> Response:
        try:
            principal = self.caller(request)
        except Refused as refused:
            return refuse(None, request, refused)
        return JSONResponse({"name": principal.name, "kind": principal.kind,
                             "roles": {team: sorted(roles)
                                       for team, roles in principal.roles.items()}})


def create_app(config: GatewayConfig) -> Starlette:
    gateway = Gateway(config)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        add_refusal_hook(gateway.audit.refused)  # every 401 and 403 into the audit trail
        try:
            yield
        finally:
            remove_refusal_hook(gateway.audit.refused)
            gateway.audit.close()  # the refusals still queued are recorded first
            await gateway.upstream.close()

    methods = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[
        Route("/login", gateway.login, methods=["GET", "POST"]),
        Route("/logout", gateway.logout, methods=["GET", "POST"]),
        Route("/gateway/health", gateway.health),
        Route("/gateway/whoami", gateway.whoami),
        Route("/gateway/teams", teams_file_route(gateway), methods=["GET", "PUT"]),
        Route("/api/{path:path}", gateway.api, methods=methods),
        WebSocketRoute("/api/{path:path}", gateway.socket),
        Route("/{path:path}", gateway.ui, methods=methods),
    ], middleware=[Middleware(AccessLog)], lifespan=lifespan,
        exception_handlers={aiohttp.ClientError: _unreachable})
    app.state.gateway = gateway
    return app


async def _unreachable(request: Request, exc: Exception) -> Response:
    log.error("the Prefect server did not answer: %r", exc)
    return JSONResponse({"detail": "the Prefect server behind the gateway did not answer"},
                        502)

"""``/gateway/teams``: the teams file, read (GET) or replaced (PUT) by an admin.

The file holds who may do what, so reading it (it has credential hashes and references)
and changing it are admin-only. A new file is checked as ``infra.provision`` and the
gateway do (every problem listed, 422), recorded in the audit trail (``teams.changed``:
who, the old and new file's sha256; 503 and nothing written when the trail cannot record
it) and written atomically; the gateway and the fair-share controller pick it up by
themselves; new teams' queues need ``make provision``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from infra.gateway.inbound import read_body, refuse_cross_site
from infra.gateway.refusals import Refused, refuse
from mlops.atomic_files import write_atomic
from mlops.fairshare.teams import TeamsConfigError, parse_teams
from mlops.governance.identities import PLATFORM, GovernanceError, parse_governance
from mlops.governance.policy import Action

if TYPE_CHECKING:
    from infra.gateway.app import Gateway


def teams_file_route(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """The handler of ``/gateway/teams`` for one gateway."""

    async def handle(request: Request) -> Response:
        principal = None
        try:
            principal = gateway.caller(request)
            refuse_cross_site(request)
            action = Action.READ_SECRETS if request.method == "GET" else Action.TEAMS_WRITE
            gateway.decide(principal, action, PLATFORM)
            path = gateway.access.path
            if request.method == "GET":
                return Response(path.read_text(), media_type="application/yaml")
            body = await read_body(request)
            invalid = _invalid(path, body)
            if invalid is not None:
                return invalid
            old = path.read_bytes() if path.exists() else None
            await gateway.audit.teams_changed(principal, str(path), old, body)
            write_atomic(path, lambda tmp: tmp.write_bytes(body))
            return JSONResponse({"written": str(path), "teams": _team_names(body, path),
                                 "note": "new teams' queues need `make provision`"})
        except Refused as refused:
            return refuse(principal, request, refused)

    return handle


def _invalid(path: Path, body: bytes) -> Response | None:
    """422 listing every problem of a new file; None when it is valid."""
    try:
        raw = yaml.safe_load(body.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        return JSONResponse({"detail": f"not YAML: {exc}"}, 422)
    problems: list[str] = []
    try:
        parse_teams(raw, str(path))
    except TeamsConfigError as exc:
        problems += exc.problems
    try:
        parse_governance(raw, str(path))
    except GovernanceError as exc:
        problems += exc.problems
    if problems:
        return JSONResponse({"detail": "invalid teams file", "problems": problems}, 422)
    return None


def _team_names(body: bytes, path: Path) -> list[str]:
    return [team.name for team in parse_teams(yaml.safe_load(body.decode()), str(path)).teams]

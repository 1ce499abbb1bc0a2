"""What the gateway appends to the audit trail (``mlops.governance.audit``), through the
one ``AuditLog`` its process opened at start-up:

- ``request.refused`` for every 401 and 403 (the refusal hook): who (or ``anonymous``),
  the team when known, method and path, status, reason and client address. Never the
  headers, the query or the body: they may carry credentials or a dataset's values. The
  refusal stands whatever the store does: a record that cannot be written is logged as an
  error (an audit gap someone must look at), and the caller still gets its 401 or 403.
  Refusals are written in order by one thread of their own, so that a store that hangs
  (PostgreSQL unreachable: a connect timeout per append) never stalls the gateway's event
  loop; at most ``MAX_PENDING`` wait, beyond that each is logged as a gap;
- ``run.triggered`` for each run it lets through, before the call is forwarded: who, the
  team, the deployment and the sha256 of the run's parameters (never the values);
- ``teams.changed`` for a teams file written through ``PUT /gateway/teams``, before the
  write: who, and the sha256 of the old and the new file.

Those two fail closed: when the store cannot record, ``Refused(503)`` says so and the run
is not created, the file not written.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from infra.gateway.ownership import DeploymentInfo
from infra.gateway.refusals import Refused, RefusedRequest
from infra.gateway.trigger import requeued_from
from mlops.governance.audit.log import AuditLog
from mlops.governance.audit.records import Action, AuditUnavailable
from mlops.governance.identities import PLATFORM, Principal

log = logging.getLogger("infra.gateway.audit")
AUDITED_REFUSALS = (401, 403)  # 400, 405, 413 are malformed requests, not decisions
MAX_PENDING = 10_000  # refusals waiting for the store (a flood while it hangs)


def parameters_hash(parameters: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (keys sorted at every level, no whitespace, UTF-8) of
    a run's parameters, as the records' own details are encoded: an auditor recomputes it
    from the run's parameters without the trail ever holding them."""
    return hashlib.sha256(orjson.dumps(dict(parameters), option=orjson.OPT_SORT_KEYS)).hexdigest()


def run_parameters(body: Mapping[str, Any], deployment: DeploymentInfo) -> dict[str, Any]:
    """The parameters the server creates the run with: the deployment's, overlaid key by key
    with the caller's (as Prefect merges them), before templates are filled in."""
    given = body.get("parameters")
    return {**deployment.parameters, **(given if isinstance(given, dict) else {})}


def _team(team: str | None) -> str | None:
    return None if team in (None, PLATFORM) else team  # the platform is no team to filter on


class GatewayAudit:
    """The gateway's records, through one audit log."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.log = audit_log
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="audit-refusals")
        self._pending = threading.BoundedSemaphore(MAX_PENDING)

    def refused(self, principal: Principal | None, request: RefusedRequest, status: int,
                reason: str) -> None:
        """The refusal hook: queue a 401 or 403's record; never raises (the answer stays)."""
        if status not in AUDITED_REFUSALS:
            return
        record = (principal.name if principal else "anonymous", _team(request.team),
                  f"{request.method} {request.path}",
                  {"status": status, "reason": reason, "client": request.client})
        if not self._pending.acquire(blocking=False):
            log.error("AUDIT GAP: a %d refusal of %s was not recorded: %d refusals already "
                      "wait for %s", status, record[2], MAX_PENDING, self.log.name)
            return
        self._writer.submit(self._record_refusal, *record)

    def _record_refusal(self, actor: str, team: str | None, subject: str,
                        details: dict[str, Any]) -> None:
        try:
            self.log.append(Action.REQUEST_REFUSED, actor, team, subject, details)
        except (AuditUnavailable, ValueError) as exc:
            log.error("AUDIT GAP: a %d refusal of %s was not recorded in %s: %s",
                      details["status"], subject, self.log.name, exc)
        finally:
            self._pending.release()

    def flush(self) -> None:
        """Wait until every refusal queued so far is recorded (or logged as a gap)."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        """Record what is queued, then stop the writer (the app is stopping)."""
        self._writer.shutdown(wait=True)

    async def run_triggered(self, principal: Principal, team: str,
                            deployment: DeploymentInfo, body: Mapping[str, Any]) -> None:
        """Record a run about to be created; Refused(503) when the store cannot."""
        details = {"deployment_id": deployment.id, "deployment": deployment.name,
                   "work_queue": body.get("work_queue_name") or deployment.work_queue_name,
                   "parameters_sha256": parameters_hash(run_parameters(body, deployment)),
                   "requeued_from": requeued_from(dict(body))}
        subject = f"deployment {deployment.name or deployment.id}"
        await self._append(Action.RUN_TRIGGERED, principal, team, subject, details,
                           "this run's trigger, so the run was not started")

    async def teams_changed(self, principal: Principal, path: str, old: bytes | None,
                            new: bytes) -> None:
        """Record a teams file about to be replaced; Refused(503) when the store cannot."""
        details = {"old_sha256": hashlib.sha256(old).hexdigest() if old is not None else None,
                   "new_sha256": hashlib.sha256(new).hexdigest(), "via": "PUT /gateway/teams"}
        await self._append(Action.TEAMS_CHANGED, principal, PLATFORM, path, details,
                           "this teams-file change, so the file was not written")

    async def _append(self, action: Action, principal: Principal, team: str, subject: str,
                      details: dict[str, Any], what: str) -> None:
        # In a thread: an append waits for the store (fsync, or PostgreSQL), and the event
        # loop keeps serving other callers meanwhile.
        try:
            await run_in_threadpool(self.log.append, action, principal.name, _team(team),
                                    subject, details)
        except AuditUnavailable as exc:
            log.error("%s refused with 503: the audit trail (%s) cannot record: %s", action,
                      self.log.name, exc)
            raise Refused(503, f"the audit trail cannot record {what}: {exc}") from None

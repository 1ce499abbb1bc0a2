"""The fair-share controller's records in the audit trail, each appended before the change
it records is made: ``queue.limit_changed`` (queue, old, new), ``run.preempted`` (run,
team, why) and ``budget.held`` (team, GPU hours used, budget), under the controller's
service account.

Failing closed: a change whose record the store cannot take is not made this tick (the
error names the store); the next tick decides again and tries again. Runs already going
are not touched by the audit trail's failure: only the controller's own changes wait.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from infra.credentials import account
from mlops.governance.audit.log import AuditLog
from mlops.governance.audit.records import Action, AuditUnavailable
from mlops.governance.identities import GovernanceError, Role, load_governance

log = logging.getLogger(__name__)
DEFAULT_ACTOR = "fairshare-controller"


def controller_actor(teams_file: str | Path) -> str:
    """The teams file's controller service account, else ``fairshare-controller``."""
    try:
        return account(load_governance(teams_file), Role.CONTROLLER) or DEFAULT_ACTOR
    except GovernanceError:
        return DEFAULT_ACTOR


class ControllerAudit:
    """One controller's audit log and actor, and the teams whose budget hold is recorded
    (so a hold is recorded when it starts, not every tick it lasts; a restarted controller
    records the holds still in force once more)."""

    def __init__(self, audit_log: AuditLog, actor: str = DEFAULT_ACTOR) -> None:
        self.log, self.actor = audit_log, actor
        self.held: set[str] = set()

    async def record(self, action: Action, team: str | None, subject: str,
                     details: dict[str, Any]) -> str | None:
        """Append one record; None when stored, else the reason it was not (logged)."""
        try:  # in a thread: the store may wait (fsync, PostgreSQL) and the loop serves gauges
            await asyncio.to_thread(self.log.append, action, self.actor, team, subject,
                                    details)
        except AuditUnavailable as exc:
            log.error("%s %s not recorded, so not applied this tick: %s", action, subject, exc)
            return f"{action} {subject}: the audit trail cannot record it ({exc})"
        return None

    async def budget_holds(self, used: dict[str, float], budgets: dict[str, float | None],
                           over: set[str], mode: str) -> str | None:
        """Record each team newly over its budget; the reason when one cannot be (then the
        metered pool's decision waits for the next tick)."""
        self.held &= over  # a team back within its budget: its next hold is recorded again
        for team in sorted(over - self.held):
            failed = await self.record(Action.BUDGET_HELD, team, f"team {team}", {
                "used_gpu_hours": round(used.get(team, 0.0), 6), "budget_gpu_hours":
                budgets.get(team), "over_budget": mode})
            if failed:
                return failed
            self.held.add(team)
        return None

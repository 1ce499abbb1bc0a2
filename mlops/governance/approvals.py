"""Approvals: a team may require that ``champion`` moves only once one of its approvers says
so (``approval`` in the teams file).

The pipeline registers the better version as ``challenger`` and waits for an answer: the
approver's word (approve or reject, with a comment), or nothing until the team's timeout.
The answer's approver is the authenticated caller the gateway names; this module decides
whether that identity may answer for the team, and what the pipeline then does.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from mlops.governance.identities import Governance, Role


class ApprovalRefused(PermissionError):
    """An answer from someone who may not approve for the team."""


class ApprovalAnswer(BaseModel):
    """What an approver answers; ``approver`` is set by the gateway to the caller."""

    approve: bool = Field(description="Approve: the challenger becomes champion. Reject: the "
                          "champion stays.")
    comment: str = Field("", max_length=2000, description="Why: kept in the audit trail.")
    approver: str = Field("", description="Filled in by the platform with who answered.")


def needs_approval(governance: Governance | None, team: str) -> bool:
    return governance is not None and governance.team(team).approval.required


def approval_timeout_s(governance: Governance | None, team: str) -> float:
    return governance.team(team).approval.timeout_s if governance else 0.0


def check_approver(governance: Governance | None, team: str, answer: ApprovalAnswer) -> None:
    """Only an identity holding the approver (or admin) role in the team may answer."""
    identity = governance.identities.get(answer.approver) if governance else None
    roles = identity.principal.roles_in(team) if identity else frozenset()
    if not roles & {Role.APPROVER, Role.ADMIN}:
        who = answer.approver or "an unnamed caller"
        raise ApprovalRefused(f"{who} may not approve for team {team}: the approver role of "
                              "the team is needed")

"""Answers to a run waiting for an approver (``flows/approval.py`` pauses it with the key
``approval-<n>`` and a form): only the team's approvers and admins may resume it, and the
answer's ``approver`` is the caller the gateway authenticated, whatever the form said. The
answer cannot be written another way: the run's input routes are then the admin's."""

from __future__ import annotations

import json
from typing import Any

from infra.gateway.ownership import RunInfo
from mlops.governance.identities import Principal
from mlops.governance.policy import Action

APPROVAL_KEY = "approval-"


def awaits_approval(run: RunInfo) -> bool:
    return run.state_type == "PAUSED" and (run.pause_key or "").startswith(APPROVAL_KEY)


def approval_action(run: RunInfo, path: str, action: Action) -> Action:
    """What a call on a run needs once its state is known: answering an approval is
    ``run.approve``; writing a waiting run's input directly is the admin's."""
    if action != Action.RUN_RESUME or not awaits_approval(run):
        return action
    return Action.RUN_APPROVE if path.rstrip("/").endswith("/resume") else Action.RUN_EXECUTE


def name_approver(body: Any, principal: Principal) -> bytes:
    """The resume body with the answer's ``approver`` set to the caller."""
    data = body if isinstance(body, dict) else {}
    run_input = data.get("run_input") if isinstance(data.get("run_input"), dict) else {}
    return json.dumps({**data, "run_input": {**run_input, "approver": principal.name}}).encode()

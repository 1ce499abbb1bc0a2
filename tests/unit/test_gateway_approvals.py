"""Answers to a run waiting for an approver: who may give them, and who is named in them."""

from __future__ import annotations

import json

from infra.gateway.approvals import approval_action, awaits_approval, name_approver
from infra.gateway.ownership import RunInfo
from mlops.governance.identities import Principal
from mlops.governance.policy import Action


def _run(state: str | None, key: str | None) -> RunInfo:
    return RunInfo(id="r", deployment_id="d", work_queue_name="alpha", parameters={},
                   tags=(), state_type=state, pause_key=key)


def test_a_run_paused_for_approval_is_answered_by_an_approver_only() -> None:
    waiting = _run("PAUSED", "approval-1")
    assert awaits_approval(waiting)
    assert approval_action(waiting, "/flow_runs/r/resume", Action.RUN_RESUME) == \
        Action.RUN_APPROVE
    assert approval_action(waiting, "/flow_runs/r/input", Action.RUN_RESUME) == \
        Action.RUN_EXECUTE
    assert approval_action(waiting, "/flow_runs/r/set_state", Action.RUN_CANCEL) == \
        Action.RUN_CANCEL
    for other in (_run("PAUSED", "step-2"), _run("RUNNING", "approval-1"), _run(None, None)):
        assert not awaits_approval(other)
        assert approval_action(other, "/flow_runs/r/resume", Action.RUN_RESUME) == \
            Action.RUN_RESUME


def test_the_answer_names_the_caller_whatever_it_said() -> None:
    ada = Principal("ada", "person", {})
    body = {"run_input": {"approve": True, "approver": "vera"}}
    assert json.loads(name_approver(body, ada)) == {"run_input": {"approve": True,
                                                                  "approver": "ada"}}
    assert json.loads(name_approver(None, ada)) == {"run_input": {"approver": "ada"}}

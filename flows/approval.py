"""Waiting for an approver inside a pipeline run: the run pauses with a typed form in the
Prefect UI (approve or reject, with a comment) until an approver of the team answers or the
team's approval timeout passes.

The gateway lets only the team's approvers resume the run and writes who answered into the
form's ``approver``; ``approve_stage`` checks that identity again before champion moves.
"""

from __future__ import annotations

import itertools
import logging
import threading

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, State

from mlops.config import Settings
from mlops.governance.approvals import (
    ApprovalAnswer,
    ApprovalRefused,
    approval_timeout_s,
    check_approver,
)
from mlops.governance.locations import platform_governance
from mlops.pipeline.stages import PipelineParams, awaits_approval
from mlops.pipeline.summary import PipelineSummary
from mlops.registry import RegistrationResult
from tasks.approval import answer_approval

POLL_S = 2
PAUSE_MARGIN_S = 120  # Prefect's own pause outlives the window: the window closes it


class ApprovalForm(ApprovalAnswer, RunInput):
    """The form the Prefect UI shows on a run waiting for approval."""


def await_approval(params: PipelineParams, registered: RegistrationResult,
                   settings: Settings) -> RegistrationResult:
    """The approve slot of the stage chain: pause for an answer when one is needed. An
    answer from someone who may not approve is logged and the run waits again; when the
    team's timeout passes, the run answers itself "no answer" (an expired Prefect pause
    would fail the run instead of ending it NotPromoted)."""
    if not awaits_approval(params, registered, settings):
        return registered
    governance = platform_governance(settings)
    form = ApprovalForm.with_initial_data(description=_question(registered), approve=False)
    window = threading.Timer(approval_timeout_s(governance, params.team), _close,
                             args=(flow_run.id,))
    window.start()
    answer: ApprovalAnswer | None = None
    try:
        for attempt in itertools.count():
            given = pause_flow_run(wait_for_input=form, poll_interval=POLL_S,
                                   timeout=int(window.interval) + PAUSE_MARGIN_S,
                                   key=f"approval-{attempt}")
            answer = ApprovalAnswer(**given.model_dump(include={"approve", "comment",
                                                                "approver"}))
            if not answer.approver and window.finished.is_set():
                answer = None  # the window closed: no answer in time
                break
            try:
                check_approver(governance, params.team, answer)
                break
            except ApprovalRefused as refused:
                get_run_logger().warning("%s; waiting for an approver of team %s", refused,
                                         params.team)
                answer = None
    finally:
        window.cancel()
    return answer_approval(params, registered, answer, settings)


def _close(run_id: str) -> None:
    """Resume the run with the answer that means none came in time."""
    try:
        resume_flow_run(run_id, run_input={"approve": False, "comment": "", "approver": ""})
    except Exception as exc:  # answered meanwhile: nothing to close
        logging.getLogger(__name__).info("approval window of %s closed: %s", run_id, exc)


def _question(registered: RegistrationResult) -> str:
    previous = f"v{registered.previous_champion}" if registered.previous_champion else "none"
    return (f"**{registered.name} v{registered.version}** beats the champion ({previous}) on "
            f"{registered.primary_metric} ({registered.metric_value:.4f}). Approve to make it "
            f"champion; reject to keep {previous}.")


def outcome(summary: PipelineSummary) -> PipelineSummary | State:
    """The summary, or a named Completed state when the new version was not approved."""
    if not summary.held_back:
        return summary
    champion = f"v{summary.champion_version}" if summary.champion_version else "unset"
    return Completed(name="NotPromoted", data=summary,
                     message=f"{summary.model_name} v{summary.model_version} beat the champion "
                             f"but was not approved; champion stays {champion}")

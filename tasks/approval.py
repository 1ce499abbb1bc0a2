"""The approve stage as a Prefect task: an approver's answer moves champion, or not."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.governance.approvals import ApprovalAnswer
from mlops.pipeline.stages import PipelineParams, approve_stage
from tasks.retries import IO_RETRIES

if TYPE_CHECKING:
    from mlops.registry import RegistrationResult


@task(name="answer-approval", cache_policy=NONE, **IO_RETRIES)
def answer_approval(params: PipelineParams, registered: RegistrationResult,
                    answer: ApprovalAnswer | None, settings: Settings) -> RegistrationResult:
    """Apply an approver's answer (None: no answer in time) and record it."""
    result = approve_stage(params, registered, answer, settings)
    outcome = ("approved by " + answer.approver if result.champion
               else "rejected by " + answer.approver if answer else "not answered in time")
    get_run_logger().info("%s v%s %s; champion is v%s", result.name, result.version, outcome,
                          result.version if result.champion else result.previous_champion)
    return result

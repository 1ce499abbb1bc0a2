"""The fair-share controller's retry of runs that lost their machine.

Three ends mean the machine, not the run, failed: a run that the platform's automations
(``infra.automations``) marked Crashed never reported its own end (its worker and its
process died together: a spot node taken back, an evicted pod; or it died while Pending);
a run that Prefect aborted on a termination signal or on the system exit its engine makes
when its worker dies under it (the worker was killed alone); a run whose training got
SIGTERM (a spot node's notice) saved a checkpoint and failed with ``TrainingInterrupted``.
The controller requeues such a run once, as it requeues a preempted one: a copy with the same
deployment, parameters and queue, tagged ``requeued-from:<id>``, so that its training
resumes from its last checkpoint on another worker (in the bucket on production). A copy
that is marked Crashed again is left so: twice points at the run, not at the machine. A
pipeline stage started by a distributed parent is left to that parent, which runs a crashed
stage again itself (``flows.distributed_pipeline``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from infra.automations import UNSTARTED_REASON, ZOMBIE_MESSAGE
from infra.fairshare_audit import ControllerAudit
from infra.fairshare_tick import queue_owners
from infra.prefect_api import PAGE, REQUEUED_TAG, read_all
from mlops.fairshare.teams import TeamsConfig
from mlops.governance.audit.records import Action

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun, StateType

CRASH_RETRY_TAG = "crash-retry"  # on the copy: it is not retried again
INTERRUPTED = "training preempted (SIGTERM)"  # mlops.training.preemption's message
# Prefect's messages for a run whose process was stopped from outside (prefect.states);
# "an interrupt signal" (Ctrl-C, a person) is left out on purpose.
ABORTED = ("Execution was aborted by a termination signal.",
           "Execution was aborted by Python system exit call.")
LOOKBACK = timedelta(hours=6)  # crashes older than this were a controller outage ago


async def requeue_crashed(client: PrefectClient, config: TeamsConfig,
                          audit: ControllerAudit | None = None,
                          now: datetime | None = None) -> list[str]:
    """Requeue each run of a team queue that lost its machine and has no copy yet; one line
    per copy made. A requeue the audit trail cannot record is not made (and named)."""
    from prefect.states import Scheduled

    owners, changes = queue_owners(config), []
    for run in await _lost(client, list(owners), (now or datetime.now(UTC)) - LOOKBACK):
        if await _has_copy(client, run):
            continue
        team = owners[run.work_queue_name][0]
        if audit is not None:
            failed = await audit.record(Action.RUN_REQUEUED, team, str(run.id), {
                "queue": run.work_queue_name, "reason": run.state.message[:500]})
            if failed:
                return [*changes, f"not requeued: {failed}"]
        copy = await client.create_flow_run_from_deployment(
            run.deployment_id, parameters=run.parameters, work_queue_name=run.work_queue_name,
            state=Scheduled(scheduled_time=run.expected_start_time or run.start_time),
            tags=[*(t for t in run.tags if not t.startswith(REQUEUED_TAG)), CRASH_RETRY_TAG,
                  f"{REQUEUED_TAG}{run.id}"],
            idempotency_key=f"crashed:{run.id}")
        changes.append(f"requeue run {run.name} ({run.id}) of {team}, which lost its machine, "
                       f"as {copy.id}")
    return changes


async def _lost(client: PrefectClient, queues: list[str], since: datetime) -> list[FlowRun]:
    """Runs of these queues that ended since ``since`` and lost their machine (see
    ``_machine_lost``), and are neither a copy nor a distributed parent's stage."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterEndTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterWorkQueueName,
    )
    from prefect.client.schemas.objects import StateType

    ended = await read_all(lambda offset: client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.CRASHED, StateType.FAILED])),
            end_time=FlowRunFilterEndTime(after_=since),
            work_queue_name=FlowRunFilterWorkQueueName(any_=queues)),
        limit=PAGE, offset=offset))
    return [run for run in ended
            if run.state is not None and _machine_lost(run.state.type, run.state.message or "")
            and run.deployment_id is not None and run.parent_task_run_id is None
            and CRASH_RETRY_TAG not in run.tags]


def _machine_lost(state: StateType, message: str) -> bool:
    from prefect.client.schemas.objects import StateType

    if state == StateType.CRASHED:
        return message in (ZOMBIE_MESSAGE, *ABORTED) or message.endswith(UNSTARTED_REASON)
    return INTERRUPTED in message


async def _has_copy(client: PrefectClient, run: FlowRun) -> bool:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    return bool(await client.read_flow_runs(flow_run_filter=FlowRunFilter(
        tags=FlowRunFilterTags(all_=[f"{REQUEUED_TAG}{run.id}"])), limit=1))

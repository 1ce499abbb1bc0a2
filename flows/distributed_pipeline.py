"""The training pipeline across infrastructure: each stage runs as its own deployment.

Training runs on the `gpu` pool, validation + features, export, registration and service
deployment on the `cpu` pool, each on the team's queue for the run's priority (queue name
= team name for normal runs, `<team>-high` / `<team>-low` otherwise; the
`default` team's queue is each pool's `default` queue), so the team's quotas apply per
stage. Stages hand over through the artifact store (mlops.pipeline.handover), never through memory.
A stage that does not complete fails this run with the stage's own message.

Deadlock: this parent holds a `cpu` slot on its queue for its whole run while each cpu
stage needs another slot on the team's cpu queue. With the default team's cpu quota of 2
that leaves exactly one slot for the stages, which run one at a time. Two parents running
at once on a quota-2 queue would each hold a slot and wait forever for their children, so
each team's parent deployment has `concurrency_limit: 1` (ENQUEUE): a second trigger of
that team waits in line, and other teams' parents are not held back. A team's cpu quota
must be at least 2 for its stages to run at all.
"""

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import State

from flows.approval import await_approval, outcome
from flows.stage_flows import stage_flow_name
from flows.worker_bound import end_with_worker
from infra.prefect_api import follow_requeues, require_queue
from mlops.config import Settings
from mlops.fairshare.teams import queue_name
from mlops.pipeline.handover import (
    HandoverRef,
    StageFailed,
    handover_root,
    read_result,
    write_result,
)
from mlops.pipeline.stages import PipelineParams, Stage, build_summary
from mlops.pipeline.summary import PipelineSummary
from tasks.report import report

DEPLOYMENT = "default"  # every stage flow has one deployment, named like the team default
# The stages run as deployments, in order (validate's flow runs the features stage too).
DEPLOYED = (Stage.VALIDATE, Stage.TRAIN, Stage.EXPORT, Stage.REGISTER)
CRASH_RETRIES = 1


def run_stage(stage: Stage, params: PipelineParams, handover: HandoverRef) -> None:
    """Run one stage deployment on the team's queue and wait; raise if it did not complete.
    A stage that crashed (its process or machine died: the zombie detection marks it so)
    runs again, up to CRASH_RETRIES times: every stage is safe to repeat (results are
    handed over atomically, training resumes from its checkpoint, registration is
    idempotent by this pipeline run)."""
    queue = queue_name(params.team, params.priority)
    deployment = f"{stage_flow_name(stage)}/{DEPLOYMENT}"
    require_queue(deployment, queue)
    for attempt in range(CRASH_RETRIES + 1):
        child = run_deployment(deployment, timeout=None, poll_interval=2,
                               parameters={"params": params.model_dump(mode="json"),
                                           "handover": handover.model_dump(mode="json")},
                               work_queue_name=queue)
        child = follow_requeues(child)  # preempted by the fair-share controller: its copy
        state = child.state
        if state is None or not state.is_crashed() or attempt == CRASH_RETRIES:
            break
        get_run_logger().warning("stage %s (flow run %s) crashed: %s; running it again",
                                 stage_flow_name(stage), child.name, state.message)
    if state is None or not state.is_completed():
        name = state.name if state else "no state"
        message = state.message if state and state.message else "no message"
        raise StageFailed(f"stage {stage_flow_name(stage)} (flow run {child.name}) ended "
                          f"{name}: {message}")


@flow(name="training-pipeline-distributed", validate_parameters=True)
def training_pipeline_distributed(params: PipelineParams) -> PipelineSummary | State:
    """Take a dataset to a served model, each stage on its own pool and the team's queue;
    this run itself waits for an approver when the team's champion moves on approval."""
    end_with_worker()
    handover, settings = HandoverRef(run_id=str(flow_run.id)), Settings()
    root = handover_root(settings)  # the bucket on production: stages run on any worker
    for stage in DEPLOYED:
        run_stage(stage, params, handover)
    registered = await_approval(params, read_result(root, handover, Stage.REGISTER), settings)
    write_result(root, handover, Stage.REGISTER, registered)
    if params.deploy:
        run_stage(Stage.DEPLOY, params, handover)
    results = [read_result(root, handover, stage) for stage in Stage
               if stage is not Stage.DEPLOY]
    service = read_result(root, handover, Stage.DEPLOY) if params.deploy else None
    return outcome(report(build_summary(params, *results, service)))

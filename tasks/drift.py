"""The drift check as Prefect tasks: measure (retried on transient I/O errors, with the
report as artifacts), then announce drift as an event the team's automation acts on."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from mlops.config import Settings
from mlops.data import storage
from mlops.monitoring.check import DriftCheck, DriftCheckParams, check_drift
from mlops.monitoring.policy import DRIFT_EVENT, RETRAINING_ROLE, DriftPolicy, model_resource
from tasks.retries import IO_RETRIES


@task(name="measure-drift", cache_policy=NONE, **IO_RETRIES)
def measure(params: DriftCheckParams, policy: DriftPolicy, settings: Settings) -> DriftCheck:
    """The window's drift, with its verdict and Evidently's report as artifacts."""
    check = check_drift(params, policy, settings)
    get_run_logger().info("%s v%s: %s", check.model, check.version, check.result.reason)
    create_markdown_artifact(drift_markdown(check), key="drift-check",
                             description=f"Drift of {check.model}")
    if check.report:
        link = check.report if storage.is_remote(check.report) else f"file://{check.report}"
        create_link_artifact(link, link_text="Evidently drift report", key="drift-report",
                             description=f"Evidently report of {check.model}")
    return check


@task(name="announce-drift", cache_policy=NONE)
def announce(check: DriftCheck, policy: DriftPolicy) -> str | None:
    """Emit the drift event, naming the team's retraining deployment; the event's id, or
    None when there was no drift."""
    if not check.result.drifted:
        return None
    logger = get_run_logger()
    related = []
    if policy.retrain:
        deployment = _deployment_id(policy.retrain)
        if deployment is None:
            logger.warning("team %s retrains with %s, which is not deployed: nothing will "
                           "retrain %s", check.team, policy.retrain, check.model)
        else:
            related.append({"prefect.resource.id": f"prefect.deployment.{deployment}",
                            "prefect.resource.role": RETRAINING_ROLE})
    result = check.result
    event = emit_event(
        DRIFT_EVENT,
        resource={"prefect.resource.id": model_resource(check.model),
                  "prefect.resource.name": check.model, "mlops.team": check.team,
                  "mlops.model.version": check.version},
        related=related,
        payload={"reason": result.reason, "drifted_features": result.drifted_features(),
                 "drifted_share": result.drifted_share,
                 "prediction_drifted": bool(result.prediction and result.prediction.drifted),
                 "window_start": check.window_start.isoformat(),
                 "window_end": check.window_end.isoformat(), "report": check.report})
    logger.warning("drift of %s v%s: event %s%s", check.model, check.version,
                   DRIFT_EVENT, f" (retraining: {policy.retrain})" if related else "")
    return str(event.id) if event else None


def _deployment_id(name: str) -> str | None:
    async def read() -> str | None:
        async with get_client() as client:
            try:
                return str((await client.read_deployment_by_name(name)).id)
            except ObjectNotFound:
                return None

    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(read())


def drift_markdown(check: DriftCheck) -> str:
    result = check.result
    lines = [f"# Drift of `{check.model}` v{check.version}", "",
             f"**{result.reason}**" if result.drifted else result.reason, "",
             f"Window {check.window_start:%Y-%m-%d %H:%M} to {check.window_end:%Y-%m-%d %H:%M}"
             f" UTC: {result.current_rows} sampled rows against {result.reference_rows} "
             "reference rows.", ""]
    columns = [*result.features, *([result.prediction] if result.prediction else [])]
    if columns:
        lines += ["| column | test | score | threshold | drifted |", "|---|---|---|---|---|"]
        lines += [f"| {c.column} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
                  f"{'yes' if c.drifted else 'no'} |" for c in columns]
    if check.report:
        lines += ["", f"Evidently report: `{check.report}`"]
    return "\n".join(lines) + "\n"

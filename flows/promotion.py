"""The promotion of a challenger on trial (a canary or a shadow in the team's service): the
live numbers decide; a promotion goes through the team's approval when it requires one,
then the service serves the new champion alone; a rollback ends the trial."""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from flows.approval import await_approval
from flows.worker_bound import end_with_worker
from mlops.config import DatasetSpec, Settings
from mlops.monitoring.promotion import Decision, PromotionThresholds, TrialService
from mlops.pipeline.stages import PipelineParams, awaits_approval
from mlops.registry import CHALLENGER, RegistrationResult, model_name
from tasks.promotion import end_trial, judge, move_champion, observe, score_labels


class PromotionParams(BaseModel):
    """A promotion check, as the Prefect UI's form and a schedule give it."""

    spec: DatasetSpec = Field(description="The dataset whose model is on trial.")
    team: str = "default"
    thresholds: PromotionThresholds = Field(default_factory=PromotionThresholds)
    labels: str | None = Field(None, description="Labelled rows, once outcomes are known "
                               "(parquet with the spec's features and label; a file, folder "
                               "or s3:// prefix in the team's data): the primary metric of "
                               "both versions on them counts too.")


class PromotionResult(BaseModel):
    model: str
    champion: str  # the version champion names after the run
    challenger: str
    decision: Decision
    served: str | None = None  # the version the service serves after a promotion


@flow(name="promote-challenger", validate_parameters=True)
def promote_challenger(params: PromotionParams) -> PromotionResult:
    """Judge the trial; promote (after approval, where the team needs one), roll back, or
    leave it running when there is not enough traffic yet."""
    end_with_worker()
    settings = Settings()
    model = model_name(params.team, params.spec.name)
    service = TrialService.local(settings, model)
    live = observe(service)
    labelled = (score_labels(params.labels, params.spec, params.team, live, settings)
                if params.labels else None)
    decision = judge(live, model, params.thresholds, labelled)
    champion, challenger = live.champion.version, live.challenger.version
    result = PromotionResult(model=model, champion=champion, challenger=challenger,
                             decision=decision)
    if decision.action == "wait":
        return result
    if decision.action == "rollback":
        end_trial(service, promoted=False)
        return result
    registered = RegistrationResult(
        name=model, version=challenger, run_id="", model_uri=f"models:/{model}/{challenger}",
        sha256="", aliases=[CHALLENGER], champion=False, previous_champion=champion,
        wins=True, primary_metric="live trial (errors, p99, agreement)",
        metric_value=live.agreement if live.agreement is not None else 0.0)
    pipeline = PipelineParams(spec=params.spec, team=params.team)
    if awaits_approval(pipeline, registered, settings):
        registered = await_approval(pipeline, registered, settings)
    else:
        registered = move_champion(registered, params.team, settings)
    if not registered.champion:  # the approver said no, or nobody answered in time
        end_trial(service, promoted=False)
        return result.model_copy(update={"decision": Decision(
            action="rollback", reasons=[*decision.reasons, "not approved"])})
    served = end_trial(service, promoted=True)
    return result.model_copy(update={"champion": challenger, "served": served})

"""The promotion of a challenger on trial as Prefect tasks: judge the live numbers (with the
decision as an artifact), move champion, end the trial."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.config import DatasetSpec, Settings
from mlops.data import storage
from mlops.governance.locations import check_location, location_policy, platform_governance
from mlops.monitoring.promotion import (
    Decision,
    LabelledScore,
    LiveStats,
    PromotionThresholds,
    TrialService,
    decide,
    labelled_score,
)
from mlops.pipeline import audit_events
from mlops.registry import RegistrationResult, model_name, promote_champion
from mlops.registry.client import fetch_verified
from mlops.serving.predictor import OnnxPredictor
from tasks.retries import IO_RETRIES

PROMOTER = "promotion-flow"  # who moved champion, in the audit trail, without an approver


@task(name="observe-trial", cache_policy=NONE, **IO_RETRIES)
def observe(service: TrialService) -> LiveStats:
    return service.observe()


@task(name="score-labelled-rows", cache_policy=NONE, **IO_RETRIES)
def score_labels(labels: str, spec: DatasetSpec, team: str, live: LiveStats,
                 settings: Settings) -> LabelledScore:
    """Both versions' primary metric on the labelled rows (the team's data only)."""
    source = check_location(labels, location_policy(settings, platform_governance(settings),
                                                    team))
    storage.use_object_store(settings)
    model = model_name(team, spec.name)
    predictors = []
    for version in (live.champion.version, live.challenger.version):
        uri = f"models:/{model}/{version}"
        data, fetched = fetch_verified(settings.tracking, uri, settings.mlflow_auth(team))
        predictors.append(OnnxPredictor.from_bytes(data, uri, fetched.sha256, model, version))
    with storage.object_store(settings, f"reading the labelled rows {source}"):
        frame = storage.read_parquet(source)
    return labelled_score(frame, spec, *predictors)


@task(name="judge-trial", cache_policy=NONE)
def judge(live: LiveStats, model: str, thresholds: PromotionThresholds,
          labelled: LabelledScore | None = None) -> Decision:
    """What the trial's numbers decide, as an artifact too."""
    decision = decide(live, thresholds, labelled)
    get_run_logger().info("%s v%s vs champion v%s: %s (%s)", model, live.challenger.version,
                          live.champion.version, decision.action, "; ".join(decision.reasons))
    create_markdown_artifact(trial_markdown(model, live, decision, labelled),
                             key="promotion", description=f"Trial of {model}")
    return decision


@task(name="move-champion", cache_policy=NONE, **IO_RETRIES)
def move_champion(registered: RegistrationResult, team: str,
                  settings: Settings) -> RegistrationResult:
    """Champion to the challenger (a team without approvals), recorded in the audit trail."""
    previous = promote_champion(settings.tracking, registered.name, registered.version,
                                settings.mlflow_auth(team))
    audit_events.champion_moved(settings, team, registered, previous, PROMOTER)
    return registered.model_copy(update={"champion": True, "previous_champion": previous})


@task(name="end-trial", cache_policy=NONE, **IO_RETRIES)
def end_trial(service: TrialService, promoted: bool) -> str | None:
    """The service on the champion alone; the version it serves after a promotion."""
    served = service.serve_champion() if promoted else None
    service.end_trial()
    return served


def trial_markdown(model: str, live: LiveStats, decision: Decision,
                   labelled: LabelledScore | None = None) -> str:
    rows = [("champion", live.champion), ("challenger", live.challenger)]
    lines = [f"# Trial of `{model}`: **{decision.action}**", "",
             *[f"- {reason}" for reason in decision.reasons], "",
             "| variant | version | requests | errors | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {s.version} | {s.requests} | {s.errors} | "
              f"{s.p99_s * 1000:.2f} |" if s.p99_s is not None else
              f"| {name} | {s.version} | {s.requests} | {s.errors} | n/a |" for name, s in rows]
    if live.agreement is not None:
        lines += ["", f"Shadow: {live.agreement:.1%} of "
                      f"{live.shadow_agree + live.shadow_disagree} rows agree."]
    if labelled is not None:
        lines += ["", f"Labelled rows: {labelled.rows}; {labelled.metric} champion "
                      f"{labelled.champion:.4f}, challenger {labelled.challenger:.4f}."]
    return "\n".join(lines) + "\n"

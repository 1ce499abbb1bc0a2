"""The promotion of a challenger on trial as Prefect tasks: judge the live numbers (with the
decision as an artifact), move champion, end the trial."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from mlops.config import Settings
from mlops.monitoring.promotion import (
    Decision,
    LiveStats,
    PromotionThresholds,
    TrialService,
    decide,
)
from mlops.pipeline import audit_events
from mlops.registry import RegistrationResult, promote_champion
from tasks.retries import IO_RETRIES

PROMOTER = "promotion-flow"  # who moved champion, in the audit trail, without an approver


@task(name="judge-trial", cache_policy=NONE, **IO_RETRIES)
def judge(service: TrialService, model: str, thresholds: PromotionThresholds
          ) -> tuple[LiveStats, Decision]:
    """The trial's live numbers and what they decide."""
    live = service.observe()
    decision = decide(live, thresholds)
    get_run_logger().info("%s v%s vs champion v%s: %s (%s)", model, live.challenger.version,
                          live.champion.version, decision.action, "; ".join(decision.reasons))
    create_markdown_artifact(trial_markdown(model, live, decision), key="promotion",
                             description=f"Trial of {model}")
    return live, decision


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


def trial_markdown(model: str, live: LiveStats, decision: Decision) -> str:
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
    return "\n".join(lines) + "\n"

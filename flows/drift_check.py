"""The drift check (the cpu pool, on a schedule): a served model's recent requests against
its training set; drift past the team's thresholds emits the event that retrains it."""

from prefect import flow

from flows.worker_bound import end_with_worker
from mlops.config import Settings
from mlops.monitoring.check import DriftCheck, DriftCheckParams
from mlops.monitoring.policy import drift_policy
from tasks.drift import announce, measure


@flow(name="drift-check", validate_parameters=True)
def drift_check(params: DriftCheckParams) -> DriftCheck:
    """Measure the last window's drift; announce it when the team's policy says drift."""
    end_with_worker()
    settings = Settings()
    policy = drift_policy(settings.teams_file, params.team)
    check = measure(params, policy, settings)
    announce(check, policy)
    return check

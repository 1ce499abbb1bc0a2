"""The anomaly check (the cpu pool, on a schedule): recent utilisation from Prometheus, its
anomalies as events on the runs, pools and services they concern."""

from prefect import flow

from flows.worker_bound import end_with_worker
from mlops.config import Settings
from mlops.monitoring.watch import AnomalyCheckParams
from tasks.anomalies import detect, emit


@flow(name="anomaly-check", validate_parameters=True)
def anomaly_check(params: AnomalyCheckParams | None = None) -> int:
    """Look at the last window; emit what is new. Returns the number of events."""
    end_with_worker()
    events = detect(params or AnomalyCheckParams(), Settings())
    emit(events)
    return len(events)

"""One look at utilisation: recent series from Prometheus in, anomalies as events out.

What is read (``QUERIES``): each pool's utilisation and queued runs (the recording rules of
``infra/prometheus/rules``), each running training run's samples/s, memory, memory limit and
last epoch time (``mlops.training.telemetry``), and each inference instance's p99 latency.
``mlops.monitoring.anomaly`` finds the episodes; each new one (detected since the last look)
becomes an event named ``mlops.anomaly.<kind>`` on the resource it concerns:

- a training run: ``prefect.flow-run.<id>``, so the Prefect UI shows it on the run and an
  automation can act on the run itself;
- a pool: ``mlops.pool.<name>``; an inference instance: ``mlops.service.<host:port>``.

A run stalled for longer than the grace period past its normal epoch gap also gets
``mlops.anomaly.run-stalled.grace-exceeded`` at every look, on which the platform's
automation cancels it (``infra.automations``), so its slot returns to the pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from mlops.monitoring.anomaly import (
    DEFAULT_THRESHOLDS,
    RUN_STALLED,
    Anomaly,
    Observations,
    Series,
    Thresholds,
    detect_all,
)
from mlops.monitoring.prometheus import Prometheus

EVENT_PREFIX = "mlops.anomaly."
GRACE_EXCEEDED = f"{EVENT_PREFIX}{RUN_STALLED}.grace-exceeded"
INFERENCE_ROUTES = r"/v2/models/.+/infer|/v1/predict.*"
QUERIES = {
    "utilisation": "pool:mlops_utilisation:ratio",
    "queued": "pool:mlops_queued:sum",
    "samples_per_s": "mlops_training_samples_per_second",
    "memory": "mlops_training_memory_bytes",
    "memory_limit": "mlops_training_memory_limit_bytes",
    "progress": "mlops_training_progress_timestamp_seconds",
    "p99": "histogram_quantile(0.99, sum by (instance, le) (rate("
           f'mlops_request_duration_seconds_bucket{{route=~"{INFERENCE_ROUTES}"}}[1m])))',
}


class AnomalyCheckParams(BaseModel):
    """One look: the window read from Prometheus, what counts as new, the stall grace."""

    window_s: float = Field(default=7200.0, ge=300, le=7 * 86400,
                            description="Seconds of history read (the baselines need an hour).")
    interval_s: float = Field(default=120.0, gt=0, le=86400, description="Anomalies detected "
                              "in the last interval_s are new (the schedule's interval).")
    step_s: float | None = Field(default=None, gt=0, description="Seconds between samples; "
                                 "default: the platform's scrape interval.")
    grace_s: float = Field(default=600.0, ge=0, description="A run stalled this long past its "
                           "normal epoch gap is cancelled by the platform's automation.")
    thresholds: Thresholds = Field(default_factory=Thresholds,
                                   description="The detectors' thresholds.")


@dataclass(frozen=True)
class AnomalyEvent:
    """What to emit: Prefect's event name, resource (its labels) and payload."""

    event: str
    resource: dict[str, str]
    payload: dict[str, object] = field(default_factory=dict)


def observe(prometheus: Prometheus, start: float, end: float, step: float) -> Observations:
    """Every series the detectors read, on one time grid."""
    return Observations(**{name: prometheus.series(expr, start, end, step)
                           for name, expr in QUERIES.items()})


def resource_of(anomaly: Anomaly, labels: dict[str, str]) -> dict[str, str]:
    """The Prefect resource an anomaly concerns, with what a person needs to find it."""
    kind, _, name = anomaly.resource.partition("/")
    ids = {"run": f"prefect.flow-run.{name}", "pool": f"mlops.pool.{name}",
           "service": f"mlops.service.{name}"}
    extra = {f"mlops.{key}": value for key, value in labels.items()
             if key in ("team", "pool", "model")}
    return {"prefect.resource.id": ids.get(kind, f"mlops.{kind}.{name}"),
            "prefect.resource.name": anomaly.resource, **extra}


def events_for(observations: Observations, end: float, since: float, grace_s: float,
               thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[AnomalyEvent]:
    """The events of one look at [.., end]: each anomaly detected after ``since``, and a
    grace-exceeded event for each run still stalled ``grace_s`` past its normal gap."""
    anomalies = detect_all(observations, thresholds)
    labels = _labels_by_resource(observations)
    events = [AnomalyEvent(f"{EVENT_PREFIX}{a.kind}", resource_of(a, labels.get(a.resource, {})),
                           _payload(a)) for a in anomalies if a.detected_at > since]
    for anomaly in anomalies:
        if anomaly.kind == RUN_STALLED:
            stalled_for = _stalled_for(observations.progress, anomaly, end)
            if stalled_for is not None and stalled_for > anomaly.baseline + grace_s:
                events.append(AnomalyEvent(
                    GRACE_EXCEEDED, resource_of(anomaly, labels.get(anomaly.resource, {})),
                    {**_payload(anomaly), "stalled_for_s": round(stalled_for, 1),
                     "grace_s": grace_s}))
    return events


def _payload(anomaly: Anomaly) -> dict[str, object]:
    return {"kind": anomaly.kind, "message": anomaly.message, "onset": anomaly.onset,
            "detected_at": anomaly.detected_at, "value": _finite(anomaly.value),
            "baseline": _finite(anomaly.baseline)}


def _stalled_for(progress: Sequence[Series], anomaly: Anomaly, end: float) -> float | None:
    """How long the run has gone without an epoch at ``end``, if it still reports (a run
    that ended has no fresh samples) and is still in this stall (no epoch since)."""
    run = anomaly.resource.partition("/")[2]
    for series in progress:
        if series.labels.get("run") != run:
            continue
        valid = ~np.isnan(series.values)
        if not valid.any():
            return None
        last_time, last_epoch = series.times[valid][-1], series.values[valid][-1]
        fresh = end - last_time <= 3 * _step(series)
        if fresh and last_epoch <= anomaly.detected_at:
            return end - last_epoch
    return None


def _step(series: Series) -> float:
    return float(np.median(np.diff(series.times))) if len(series.times) > 1 else 15.0


def _labels_by_resource(observations: Observations) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for series in (*observations.progress, *observations.samples_per_s, *observations.memory):
        found.setdefault(f"run/{series.labels.get('run', '?')}", series.labels)
    return found


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None

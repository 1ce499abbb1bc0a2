"""Anomaly detection on utilisation as Prefect tasks: look at Prometheus' recent series
(retried on transient I/O errors), then emit each finding as an event the platform's
automations act on (``infra.automations``: notify; cancel a run stalled past its grace)."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from mlops.config import Settings
from mlops.monitoring.prometheus import Prometheus
from mlops.monitoring.watch import AnomalyCheckParams, AnomalyEvent, events_for, observe
from tasks.retries import IO_RETRIES


@task(name="detect-anomalies", cache_policy=NONE, **IO_RETRIES)
def detect(params: AnomalyCheckParams, settings: Settings) -> list[AnomalyEvent]:
    """The events of one look at the last ``window_s`` of Prometheus' series."""
    end = time.time()
    step = params.step_s or settings.scrape_interval_s
    observations = observe(Prometheus(settings.prometheus), end - params.window_s, end, step)
    events = events_for(observations, end, end - params.interval_s, params.grace_s,
                        params.thresholds)
    get_run_logger().info("%d anomaly event(s) from %s", len(events), settings.prometheus)
    return events


@task(name="emit-anomaly-events", cache_policy=NONE)
def emit(events: list[AnomalyEvent]) -> list[str]:
    """Emit each event; their ids. A table of them is the run's artifact."""
    logger, ids = get_run_logger(), []
    for found in events:
        event = emit_event(found.event, resource=found.resource, payload=found.payload)
        logger.warning("%s on %s: %s", found.event, found.resource["prefect.resource.id"],
                       found.payload.get("message"))
        ids.append(str(event.id) if event else "")
    rows = [{"event": e.event, "resource": e.resource["prefect.resource.name"],
             "message": e.payload.get("message")} for e in events]
    create_markdown_artifact(_table(rows), key="anomalies",
                             description="Anomalies found on the platform's utilisation")
    return ids


def _table(rows: list[dict]) -> str:
    if not rows:
        return "No anomaly.\n"
    lines = ["| Event | Resource | What |", "| --- | --- | --- |"]
    lines += [f"| {r['event']} | {r['resource']} | {r['message']} |" for r in rows]
    return "\n".join(lines) + "\n"

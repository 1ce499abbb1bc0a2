"""One look at utilisation: series become anomalies, anomalies become events on the runs,
pools and services they concern, and a stall past its grace asks for the run's cancel."""

from __future__ import annotations

import numpy as np

from mlops.monitoring.anomaly import RUN_STALLED, Observations, Series
from mlops.monitoring.watch import GRACE_EXCEEDED, events_for

STEP, START = 15.0, 1_700_000_000.0
RUN = "0b4c6a3e-7f0e-4e4a-9a53-1f0c2d3e4f5a"
LABELS = {"run": RUN, "team": "vision", "pool": "gpu", "model": "vision.panel"}


def progress(epochs_until: float, samples: int, epoch_s: float = 60.0) -> Series:
    """A run finishing an epoch every ``epoch_s`` until ``epochs_until``, then none."""
    times = START + STEP * np.arange(samples)
    last = np.minimum(times, START + epochs_until)
    return Series(LABELS, times, START + np.floor((last - START) / epoch_s) * epoch_s)


def test_a_stalled_run_is_an_event_on_its_flow_run_and_past_grace_asks_for_a_cancel() -> None:
    series = progress(epochs_until=1800, samples=200)  # stalls at 30 min, seen for 20 min more
    end = float(series.times[-1])
    events = events_for(Observations(progress=[series]), end, since=end - 3600, grace_s=300)
    names = [event.event for event in events]
    assert names == [f"mlops.anomaly.{RUN_STALLED}", GRACE_EXCEEDED], names
    resource = events[0].resource
    assert resource["prefect.resource.id"] == f"prefect.flow-run.{RUN}"
    assert resource["mlops.team"] == "vision" and resource["mlops.model"] == "vision.panel"
    assert "no epoch finished" in str(events[0].payload["message"])
    assert events[1].payload["stalled_for_s"] > 300 + events[1].payload["baseline"]


def test_only_new_anomalies_are_events_and_the_grace_is_honoured() -> None:
    series = progress(epochs_until=1800, samples=200)
    end = float(series.times[-1])
    later = events_for(Observations(progress=[series]), end, since=end - 60, grace_s=300)
    assert [event.event for event in later] == [GRACE_EXCEEDED]  # detected before: not new
    patient = events_for(Observations(progress=[series]), end, since=end - 60, grace_s=7200)
    assert patient == []


def test_a_run_that_ended_is_neither_stalled_nor_cancelled() -> None:
    series = progress(epochs_until=1800, samples=200)
    ended = Series(LABELS, series.times, np.where(series.times > START + 1850, np.nan,
                                                  series.values))
    end = float(series.times[-1])
    assert events_for(Observations(progress=[ended]), end, end - 3600, grace_s=0) == []


def test_idle_gpus_with_work_queued_is_an_event_on_the_pool() -> None:
    times = START + STEP * np.arange(120)
    idle = Series({"pool": "gpu"}, times, np.where(times > START + 900, 0.5, 1.0))
    queued = Series({"pool": "gpu"}, times, np.full(len(times), 3.0))
    end = float(times[-1])
    events = events_for(Observations(utilisation=[idle], queued=[queued]), end, end - 3600, 0)
    assert [(e.event, e.resource["prefect.resource.id"]) for e in events] == [
        ("mlops.anomaly.idle-gpus-with-work-queued", "mlops.pool.gpu")]


def test_a_webhook_that_is_not_a_url_is_refused_naming_the_setting(monkeypatch) -> None:
    import pydantic

    from mlops.config import Settings

    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", "hooks.example/anomalies")
    try:
        Settings()
    except pydantic.ValidationError as exc:
        assert "alert_webhook_url" in str(exc)
    else:
        raise AssertionError("a webhook without a scheme was accepted")
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", "https://hooks.example/anomalies")
    assert Settings().alert_webhook_url == "https://hooks.example/anomalies"

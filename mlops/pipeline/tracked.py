"""Training as the platform runs it: watched by MLflow and by Prometheus while it trains.

Around ``mlops.training.train.train_model``: the MLflow run it is tracked in (system metrics
and per-epoch histories, ``mlops.registry.tracking``; registration continues that run) and
the run's series for Prometheus (``mlops.training.telemetry``), both updated after each
epoch. Nothing here changes what is trained.
"""

from __future__ import annotations

from mlops.config import DatasetSpec, ModelSettings, Settings
from mlops.registry.client import model_name
from mlops.registry.tracking import EpochMetrics, training_run
from mlops.training.loop import LoopState
from mlops.training.telemetry import EpochSample, RunLabels, TextfileExporter, gpu_utilisation
from mlops.training.train import TrainResult, run_key, train_model


def train_watched(training_path: str, spec: DatasetSpec, model: ModelSettings,
                  settings: Settings, out_dir: str, labels: RunLabels) -> TrainResult:
    """``train_model`` with its MLflow run and its Prometheus series; the result names the
    MLflow run (``mlflow_run_id``) for registration to continue."""
    exporter = TextfileExporter(settings.textfile_dir, labels)
    key = f"{labels.run}:{run_key(training_path, spec, model)}"
    tags = {"mlops.team": labels.team, "mlops.pool": labels.pool, "mlops.flow_run": labels.run}
    with training_run(settings.tracking, settings.artifacts_dir, labels.model, key, tags,
                      settings.mlflow_auth(labels.team),
                      settings.system_metrics_interval_s) as tracked:
        def after_epoch(state: LoopState) -> None:
            last = state.history[-1]
            rate = last["samples"] / max(last["seconds"], 1e-9)
            tracked.log_epoch(EpochMetrics(state.epoch, last["train_loss"], last["val_loss"],
                                           rate))
            exporter.epoch_end(EpochSample(state.epoch, rate, last["train_loss"],
                                           last["val_loss"], gpu_utilisation()))

        try:
            result = train_model(training_path, spec, model, out_dir, on_epoch_end=after_epoch,
                                 grace_s=settings.training_grace_s)
        finally:
            exporter.close()
    return result.model_copy(update={"mlflow_run_id": tracked.run_id})


def run_labels(spec: DatasetSpec, team: str, run: str, pool: str) -> RunLabels:
    """A training's labels: its flow run (``local`` outside Prefect), team, pool, model."""
    return RunLabels(run=run or "local", team=team, pool=pool or "local",
                     model=model_name(team, spec.name))

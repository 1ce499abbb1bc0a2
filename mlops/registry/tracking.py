"""The MLflow run a training is tracked in while it trains: system metrics and epoch histories.

MLflow's own system-metrics monitor samples CPU, memory, disk and network (and GPU
utilisation and memory through nvidia-ml-py when a GPU is present) into the run as
``system/*`` series; each epoch adds ``train_loss``, ``val_loss`` and ``samples_per_second``
at step = epoch, so the MLflow UI draws their histories. Registration continues this same
run (``register_model(training_run_id=...)``), so the model version, its lineage and how it
trained are one run. A training that resumes after preemption continues the run its
pipeline run started (found by tag), so the histories carry on from the last epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlops.config import MlflowAuth
from mlops.registry.client import acting_as, mlflow_client, refusal
from mlops.registry.registration import experiment_for

log = logging.getLogger(__name__)
TRAINING_TAG = "training.key"


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float
    samples_per_second: float


class TrainingRun:
    """Logs one epoch's metrics into the active MLflow run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_epoch(self, epoch: EpochMetrics) -> None:
        import mlflow

        mlflow.log_metrics({"train_loss": epoch.train_loss, "val_loss": epoch.val_loss,
                            "samples_per_second": epoch.samples_per_second}, step=epoch.epoch)


@contextmanager
def training_run(tracking_uri: str, artifacts_dir: Path, name: str, key: str,
                 tags: dict[str, str], auth: MlflowAuth | None = None,
                 sampling_interval_s: float = 5.0) -> Iterator[TrainingRun]:
    """An MLflow run in model ``name``'s experiment with system-metrics logging on, for the
    training identified by ``key`` (its pipeline run and data): an earlier attempt's run
    is continued. Acts as ``auth`` on a tracking server."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with acting_as(auth):
        try:
            client = mlflow_client(tracking_uri)
            experiment_id = experiment_for(client, name, artifacts_dir)
            earlier = client.search_runs([experiment_id],
                                         filter_string=f"tags.`{TRAINING_TAG}` = '{key}'",
                                         max_results=1)
        except MlflowException as exc:
            refused = refusal(exc, name, auth, "track a training run")
            if refused is None:
                raise
            raise refused from None
        run_id = earlier[0].info.run_id if earlier else None
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                              log_system_metrics=False) as run, \
                system_metrics(run.info.run_id, sampling_interval_s, bool(run_id)):
            mlflow.set_tags({TRAINING_TAG: key, **tags})
            log.info("training tracked in MLflow run %s%s", run.info.run_id,
                     " (continued)" if run_id else "")
            yield TrainingRun(run.info.run_id)


@contextmanager
def system_metrics(run_id: str, sampling_interval_s: float, resume: bool) -> Iterator[None]:
    """MLflow's system-metrics monitor on the run, plus a closing sample: its thread logs
    only after a whole interval, so a training shorter than one would otherwise log none."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_interval_s,
                                   resume_logging=resume)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

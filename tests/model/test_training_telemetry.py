"""What a training run shows while it trains: MLflow's system metrics and the per-epoch
histories in its MLflow run (which registration continues), and its series for Prometheus
in the node exporter's textfile folder, gone when the run ends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.synthetic import generate_panel, synthetic_spec
from mlops.config import ModelSettings, Settings
from mlops.pipeline.tracked import run_labels, train_watched
from mlops.training.telemetry import (
    METRIC_NAMES,
    PROGRESS,
    EpochSample,
    RunLabels,
    TextfileExporter,
    render,
)

MODEL = ModelSettings(epochs=6, patience=100, batch_size=64, hidden=[32, 16], device="cpu",
                      seed=3)


def test_the_exporter_writes_parseable_series_per_epoch_and_removes_them_at_the_end(
        tmp_path: Path) -> None:
    exporter = TextfileExporter(tmp_path, RunLabels('r"1', "vision", "gpu", "vision.panel"),
                                memory_limit_bytes=8 << 30)
    exporter.epoch_end(EpochSample(3, 1234.5, 0.5, 0.75), now=1_700_000_000.0)
    files = list(tmp_path.glob("*.prom"))
    assert files == [exporter.path]
    families = {f.name: f for f in text_string_to_metric_families(files[0].read_text())}
    assert set(families) == set(METRIC_NAMES) - {"mlops_training_gpu_utilization_ratio"}
    losses = {s.labels["split"]: s.value for s in families["mlops_training_loss"].samples}
    assert losses == {"train": 0.5, "validation": 0.75}
    (progress,) = families[PROGRESS].samples
    assert progress.value == 1_700_000_000.0
    assert progress.labels == {"run": 'r"1', "team": "vision", "pool": "gpu",
                               "model": "vision.panel"}
    assert families["mlops_training_memory_bytes"].samples[0].value > 1e6
    exporter.close()
    assert not list(tmp_path.iterdir())


def test_a_gpu_reading_is_exported_only_when_there_is_one() -> None:
    labels = RunLabels("r", "t", "gpu", "m")
    with_gpu = render(labels, EpochSample(1, 1.0, 1.0, 1.0, 0.9), 1, 2, 3.0)
    assert 'mlops_training_gpu_utilization_ratio{run="r"' in with_gpu
    assert "gpu_utilization" not in render(labels, EpochSample(1, 1.0, 1.0, 1.0), 1, 2, 3.0)


# Sampled during training, and (a run shorter than one interval) the closing sample alone.
@pytest.fixture(params=["0.5", "600"])
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Settings:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MLOPS_SYSTEM_METRICS_INTERVAL_S", request.param)
    return Settings()


def test_a_training_run_logs_system_metrics_and_epoch_histories_to_mlflow(
        tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "panel.parquet"
    generate_panel(n_entities=1500, n_periods=10, seed=5).to_parquet(path, index=False)
    spec = synthetic_spec(str(path), name="telemetry")
    labels = run_labels(spec, "vision", "flow-run-1", "gpu")
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # what the node exporter would export, while training runs
        while not stop.is_set():
            seen.extend(p.read_text() for p in settings.textfile_dir.glob("*.prom"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = train_watched(str(path), spec, MODEL, settings, str(tmp_path / "out"), labels)
    finally:
        stop.set()
        watcher.join()
    assert result.mlflow_run_id
    client = MlflowClient(settings.tracking)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlops.flow_run"] == "flow-run-1"
    assert run.data.tags["mlops.team"] == "vision"
    for key in ("train_loss", "val_loss", "samples_per_second"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(1, result.epochs_run + 1)), key
    system = {key for key in run.data.metrics if key.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/disk_usage_percentage", "system/network_receive_megabytes"} <= system
    assert any('model="vision.telemetry"' in text and 'run="flow-run-1"' in text
               for text in seen), "no series were exported while training"
    assert not list(settings.textfile_dir.glob("*.prom")), "the run's series outlived it"
